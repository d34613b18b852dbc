import Foundation
import LockTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 12, "Metadata kept as POSIX says", through a real mount and real
/// tools: folder times that follow their entries, a change time apart from
/// the mtime, access times that are kept, setgid and sticky folders, and
/// FIFOs and UNIX sockets that live on the device that made them.
///
/// Times are compared in whole seconds (`stat -c %Y/%Z/%X`) with 1.1 s
/// between before and after, so a change that happened shows.
@Suite(.enabled(if: fuseAvailable, "needs /dev/fuse and fusermount3"), .serialized)
struct PosixMetadataTests {
    /// Runs `script` in `dir` (umask 022, UTC); it must exit 0. Returns its output, trimmed.
    @discardableResult
    func run(_ script: String, in dir: String) async throws -> String {
        let r = try await sh("set -e; umask 022; export TZ=UTC LC_ALL=C; cd '\(dir)'; \(script)")
        guard r.status == 0 else { throw TestFailure("\(script): exit \(r.status): \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// mtime and ctime (seconds) of `path` under `dir`.
    func times(_ path: String, in dir: String) async throws -> (m: Int, c: Int) {
        let parts = try await run("stat -c '%Y %Z' '\(path)'", in: dir).split(separator: " ").compactMap { Int($0) }
        guard parts.count == 2 else { throw TestFailure("stat \(path): \(parts)") }
        return (parts[0], parts[1])
    }

    @Test func folderTimesFollowTheirEntries() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let m = try await vault.mount(0)
        try await run("mkdir d e && touch d/keep", in: m)
        // (what, script, the folders whose entries it changes)
        let steps: [(String, String, [String])] = [
            ("touch a new file", "touch d/a", ["d"]),
            ("ln -s", "ln -s a d/l", ["d"]),
            ("mv within the folder", "mv d/a d/b", ["d"]),
            ("mv out of d into e", "mv d/b e/b", ["d", "e"]),
            ("mv back into d", "mv e/b d/b", ["d", "e"]),
            ("mkdir", "mkdir d/sub", ["d"]),
            ("rm", "rm d/l", ["d"]),
            ("rmdir", "rmdir d/sub", ["d"]),
        ]
        for (what, script, folders) in steps {
            var before: [String: (m: Int, c: Int)] = [:]
            for f in folders { before[f] = try await times(f, in: m) }
            try await Task.sleep(for: .milliseconds(1100))
            try await run(script, in: m)
            for f in folders {
                let after = try await times(f, in: m)
                #expect(after.m > before[f]!.m, "\(what): mtime of \(f) stayed \(after.m)")
                #expect(after.c > before[f]!.c, "\(what): ctime of \(f) stayed \(after.c)")
            }
        }
    }

    @Test func chmodMovesTheChangeTimeNotTheMtime() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let m = try await vault.mount(0)
        try await run("echo x > f && mkdir d", in: m)
        for path in ["f", "d"] {
            let before = try await times(path, in: m)
            try await Task.sleep(for: .milliseconds(1100))
            try await run("chmod 700 '\(path)'", in: m)
            let after = try await times(path, in: m)
            #expect(after.m == before.m, "chmod \(path) moved its mtime")
            #expect(after.c > before.c, "chmod \(path) left its ctime at \(after.c)")
        }
    }

    @Test func accessTimesAreKept() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let m = try await vault.mount(0)
        let want = try await run("date -d '2002-03-04 05:06:07' +%s", in: m)
        try await run("echo x > f && touch -a -d '2002-03-04 05:06:07' f", in: m)
        #expect(try await run("stat -c %X f", in: m) == want)
        #expect(try await run("stat -c %Y f", in: m) != want, "touch -a moved the mtime")
        // cp -a from a plain folder keeps both times.
        let src = vault.dir.appendingPathComponent("cp-src").path
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        try await run("echo y > s && touch -m -d '2003-01-01 00:00:00' s && touch -a -d '2004-01-01 00:00:00' s", in: src)
        // (Read before cp: reading s moves its own atime on a relatime disk.)
        let times = try await run("stat -c '%X %Y' s", in: src)
        try await run("cp -a '\(src)/s' copied", in: m)
        #expect(try await run("stat -c '%X %Y' copied", in: m) == times)
        // Reading does not change it (as with noatime), and it survives a remount.
        try await run("cat f > /dev/null", in: m)
        try await vault.unmount(0)
        try await vault.mount(0)
        #expect(try await run("stat -c %X f", in: m) == want)
    }

    @Test func setgidAndStickyFoldersKeepTheirBits() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let m = try await vault.mount(0)
        try await run("mkdir d && chmod g+s,+t d", in: m)
        #expect(try await run("stat -c %a d", in: m) == "3755")
        // A folder made in a setgid folder is setgid too (BSD group semantics, as on ext4); a file is not.
        try await run("mkdir d/sub && touch d/file", in: m)
        #expect(try await run("stat -c %a d/sub", in: m) == "2755")
        #expect(try await run("stat -c %a d/file", in: m) == "644")
        try await vault.unmount(0)
        try await vault.mount(0)
        #expect(try await run("stat -c %a d d/sub", in: m) == "3755\n2755")
    }

    @Test func fifosAndSocketsLiveOnTheDeviceThatMadeThem() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let a = try await vault.mount(0), b = try await vault.mount(1)
        try await run("mkdir -p .git/fsmonitor && mkfifo ff && stat -c %F ff", in: a)
        #expect(try await run("stat -c %F ff", in: a) == "fifo")
        // A FIFO works as a FIFO: a writer and a reader meet in it.
        #expect(try await run("(echo through-the-fifo > ff &) ; cat ff", in: a) == "through-the-fifo")
        // A UNIX socket, bound and connected to (as git's fsmonitor daemon does in .git).
        let python = """
            import socket, os
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind('.git/fsmonitor/sock'); s.listen(1)
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect('.git/fsmonitor/sock')
            conn, _ = s.accept(); c.sendall(b'hello'); print(conn.recv(5).decode())
            """
        #expect(try await run("python3 -c \"\(python)\"", in: a) == "hello")
        #expect(try await run("stat -c %F .git/fsmonitor/sock", in: a) == "socket")
        #expect(try await run("ls .git/fsmonitor", in: a) == "sock")
        // Renamed within the mount, chmod-ed, listed.
        try await run("mv ff .git/ff2 && chmod 600 .git/ff2", in: a)
        #expect(try await run("stat -c '%F %a' .git/ff2", in: a) == "fifo 600")
        // Never synced: after device 0's changes reach device 1, only the folders are there.
        try await run("echo marker > marker", in: a)
        #expect(try await vault.lockfs(["sync", a, "--timeout", "60"]).status == 0)
        #expect(await eventually(within: .seconds(10)) { readText(b + "/marker") == "marker\n" })
        #expect(try await run("find . | sort", in: b) == ".\n./.git\n./.git/fsmonitor\n./marker")
        // rmdir of a folder that holds one is refused (not empty); rm -rf removes it all.
        let r = try await sh("cd '\(a)' && rmdir .git/fsmonitor")
        #expect(r.status != 0 && r.stderr.contains("not empty"), "rmdir: \(r.stderr)")
        try await run("rm -rf .git", in: a)
        #expect(try await run("ls -A", in: a) == "marker")
        #expect(try await vault.lockfs(["sync", a, "--timeout", "60"]).status == 0)
        #expect(await eventually(within: .seconds(10)) { !FileManager.default.fileExists(atPath: b + "/.git") })
        // Device nodes and hard links stay refused.
        for refused in ["mknod dev c 1 3", "touch h && ln h h2"] {
            let r = try await sh("cd '\(a)' && \(refused)")
            #expect(r.status != 0 && r.stderr.contains("not permitted"), "\(refused): \(r.stderr)")
        }
    }

    @Test func aFifoSurvivesARemount() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let m = try await vault.mount(0)
        try await run("mkdir d && mkfifo d/ff", in: m)
        try await vault.unmount(0)
        try await vault.mount(0)
        #expect(try await run("stat -c %F d/ff && ls d", in: m) == "fifo\nff")
        try await run("rm d/ff && rmdir d", in: m)
    }
}
