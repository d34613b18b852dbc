import Foundation
import LockTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The `lockfs` debug binary beside lockfs-server.
let lockfsBinary = ServerProcess.binary.deletingLastPathComponent().appendingPathComponent("lockfs")

/// Whether real mounts can run here.
let fuseAvailable = FileManager.default.fileExists(atPath: "/dev/fuse") && FileManager.default.fileExists(atPath: "/usr/bin/fusermount3")

/// A vault on a real server with devices mounted through the real `lockfs`
/// binary, each with its own --home. Unmounts everything when stopped.
final class MountedVault: @unchecked Sendable {
    /// The server the vault was made on (the first of `servers`).
    let server: ServerProcess
    /// Instances of one deployment (ScaleOutCluster); device i logs in to servers[i % count].
    let servers: [ServerProcess]
    let dir: URL
    let passwordFile: String
    private(set) var mounts: [(home: String, point: String)] = []

    /// A vault on `servers` (default: one new server of its own).
    init(servers given: [ServerProcess]? = nil) async throws {
        if let given { servers = given } else { servers = [try await ServerProcess.start()] }
        server = servers[0]
        dir = try makeTemporaryDirectory("mount")
        chmod(dir.path, 0o755)
        passwordFile = dir.appendingPathComponent("password").path
        try Data("mount test passphrase".utf8).write(to: URL(fileURLWithPath: passwordFile))
        let invite = try await server.admin(["user", "add", "max"]).output.split(separator: "\n").last.map(String.init) ?? ""
        let r = try await lockfs(["init", "--home", home(0), "--server", server.baseURL, "--user", "max", "--invite", invite,
                                  "--password-file", passwordFile, "--device-name", "d0"])
        guard r.status == 0 else { throw TestFailure("init failed: \(r.stderr)") }
    }

    func home(_ i: Int) -> String { dir.appendingPathComponent("home\(i)").path }
    func point(_ i: Int) -> String { dir.appendingPathComponent("mnt\(i)").path }

    func lockfs(_ args: [String], timeout: Duration = .seconds(120)) async throws -> ProcessResult {
        try await runProcess(lockfsBinary, args, environment: ["LOCKFS_HOME": nil], timeout: timeout)
    }

    /// Mounts device `i` (logging it in first if needed); returns its mount point.
    @discardableResult
    func mount(_ i: Int, extra: [String] = []) async throws -> String {
        if !FileManager.default.fileExists(atPath: home(i) + "/device.json") {
            let r = try await lockfs(["login", "--home", home(i), "--server", servers[i % servers.count].baseURL, "--user", "max",
                                      "--password-file", passwordFile, "--device-name", "d\(i)"])
            guard r.status == 0 else { throw TestFailure("login failed: \(r.stderr)") }
        }
        try FileManager.default.createDirectory(atPath: point(i), withIntermediateDirectories: true)
        let r = try await lockfs(["mount", "--home", home(i), point(i)] + extra)
        guard r.status == 0 else { throw TestFailure("mount failed: \(r.stderr) \(r.stdout)") }
        mounts.append((home(i), point(i)))
        return point(i)
    }

    func unmount(_ i: Int) async throws {
        let r = try await lockfs(["umount", "--home", home(i), point(i)])
        guard r.status == 0 else { throw TestFailure("umount failed: \(r.stderr)") }
        mounts.removeAll { $0.point == point(i) }
    }

    /// The pid of the process serving mount `i` (from the mount's log line).
    func servingPID(_ i: Int) throws -> pid_t {
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = Int32(entry),
                  let cmd = try? String(contentsOfFile: "/proc/\(entry)/cmdline", encoding: .utf8) else { continue }
            let args = cmd.split(separator: "\0").map(String.init)
            if args.contains("--foreground") && args.contains(point(i)) { return pid }
        }
        throw TestFailure("no process serves \(point(i))")
    }

    func stop() {
        for m in mounts {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
            p.arguments = ["-u", "-z", m.point]
            try? p.run()
            p.waitUntilExit()
        }
        mounts = []
        for s in servers { s.stop() }
    }
}

/// Polls `condition` until it holds or `limit` passes.
func eventually(within limit: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(25))
    }
    return condition()
}

func readText(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

/// Runs a shell command; returns its status and output.
@discardableResult
func sh(_ command: String, timeout: Duration = .seconds(120)) async throws -> ProcessResult {
    try await runProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", command], timeout: timeout)
}

@Suite(.enabled(if: fuseAvailable, "needs /dev/fuse and fusermount3"), .serialized)
struct MountTests {
    /// Ordinary file operations, each checked through the mount, as a table.
    @Test func posixBehaviour() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let m = try await vault.mount(0)
        typealias Case = (name: String, script: String, expect: String)
        let cases: [Case] = [
            ("create and read", "echo hello > f && cat f", "hello"),
            ("append with O_APPEND", "echo a > ap && echo b >> ap && cat ap | tr '\\n' ' '", "a b "),
            ("overwrite shorter", "echo longer-text > o && echo x > o && cat o", "x"),
            ("truncate smaller", "printf 0123456789 > t && truncate -s 4 t && cat t", "0123"),
            ("truncate larger is sparse zeros", "printf ab > s && truncate -s 6 s && od -An -c s | tr -s ' '", " a b \\0 \\0 \\0 \\0"),
            ("mkdir and list", "mkdir -p d/e && touch d/e/x && ls d/e", "x"),
            ("rmdir of a non-empty folder fails", "rmdir d 2>&1 | grep -c 'not empty'", "1"),
            ("rename over a file", "echo new > n1 && echo old > n2 && mv n1 n2 && cat n2 && ls n1 2>&1 | grep -c 'No such'", "new\n1"),
            ("rename a folder across folders", "mkdir -p r1/sub r2 && echo z > r1/sub/z && mv r1/sub r2/ && cat r2/sub/z", "z"),
            ("symlink and readlink", "ln -s d/e/x l && readlink l", "d/e/x"),
            ("chmod", "touch c && chmod 640 c && stat -c %a c", "640"),
            ("set mtime", "touch -d '2001-02-03 04:05:06 UTC' tm && TZ=UTC stat -c %y tm | cut -c1-19", "2001-02-03 04:05:06"),
            ("hard links are refused", "touch h && ln h h2 2>&1 | grep -c 'not permitted'", "1"),
            ("device nodes are refused", "mknod dn c 1 3 2>&1 | grep -c 'not permitted'", "1"),
            ("a fifo stays on this device", "mkfifo ff && stat -c %F ff", "fifo"),
            ("unlink", "touch u && rm u && ls u 2>&1 | grep -c 'No such'", "1"),
            ("unlink of an open file keeps it readable", "echo keep > k && exec 3<k && rm k && cat <&3", "keep"),
            ("large write and read back", "head -c 3000000 /dev/urandom > /tmp/lockfs-big-$$ && cp /tmp/lockfs-big-$$ big && cmp big /tmp/lockfs-big-$$ && echo same; rm -f /tmp/lockfs-big-$$", "same"),
            ("write in the middle", "printf aaaaaaaaaa > w && printf XY | dd of=w bs=1 seek=4 conv=notrunc 2>/dev/null && cat w", "aaaaXYaaaa"),
            ("statfs", "df -P . | tail -1 | awk '{print $1}'", "lockfs"),
            ("status xattr", "echo s > st && python3 -c \"import os; print(os.getxattr('st','user.lockfs.status').decode() in ('uploading','cached'))\"", "True"),
            ("user xattrs", "touch x && python3 -c \"import os; os.setxattr('x','user.k',b'v'); print(os.getxattr('x','user.k').decode(), sorted(os.listxattr('x')))\"", "v ['user.k', 'user.lockfs.status']"),
        ]
        for c in cases {
            let r = try await sh("cd '\(m)' && \(c.script)")
            let got = r.stdout.trimmingCharacters(in: .newlines)
            #expect(got == c.expect, "\(c.name): got \(got.debugDescription), stderr \(r.stderr)")
        }
    }

    @Test func changesAppearOnAnotherMountWithinTwoSeconds() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let a = try await vault.mount(0), b = try await vault.mount(1)
        try Data("first".utf8).write(to: URL(fileURLWithPath: a + "/shared.txt"))
        #expect(await eventually(within: .seconds(2)) { readText(b + "/shared.txt") == "first" })
        // An editor's save: write a temporary file, fsync, rename over.
        try await sh("cd '\(a)' && printf second > .shared.txt.swp && sync .shared.txt.swp && mv .shared.txt.swp shared.txt")
        #expect(await eventually(within: .seconds(2)) { readText(b + "/shared.txt") == "second" })
        try await sh("cd '\(b)' && mkdir -p deep/er && echo from-b > deep/er/file")
        #expect(await eventually(within: .seconds(2)) { readText(a + "/deep/er/file") == "from-b\n" })
        try await sh("rm -r '\(a)/deep'")
        #expect(await eventually(within: .seconds(2)) { !FileManager.default.fileExists(atPath: b + "/deep") })
    }

    @Test func concurrentEditsOnTwoMountsKeepBothVersions() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let a = try await vault.mount(0), b = try await vault.mount(1)
        try Data("base".utf8).write(to: URL(fileURLWithPath: a + "/doc.txt"))
        #expect(await eventually { readText(b + "/doc.txt") == "base" })
        // Both edit while the server is away, then it comes back.
        vault.server.kill9()
        try Data("edit on a".utf8).write(to: URL(fileURLWithPath: a + "/doc.txt"))
        try Data("edit on b".utf8).write(to: URL(fileURLWithPath: b + "/doc.txt"))
        try await vault.server.restart()
        // The devices knew the old port: remount both on the new one.
        for i in [0, 1] {
            try await vault.unmount(i)
            let file = vault.home(i) + "/device.json"
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as! [String: Any]
            json["server"] = vault.server.baseURL
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: file))
            try await vault.mount(i)
        }
        func texts(_ m: String) -> Set<String> {
            Set(((try? FileManager.default.contentsOfDirectory(atPath: m)) ?? []).filter { $0.hasPrefix("doc") }.compactMap { readText(m + "/" + $0) })
        }
        #expect(await eventually(within: .seconds(10)) { texts(a) == ["edit on a", "edit on b"] && texts(b) == texts(a) })
        let names = try FileManager.default.contentsOfDirectory(atPath: a).filter { $0.hasPrefix("doc") }
        #expect(names.count == 2 && names.contains { $0.contains("(conflict from ") })
    }

    @Test func theServerNeverSeesNamesOrContents() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let m = try await vault.mount(0)
        let marker = "MARKER-7d1f0c2e-\(UInt32.random(in: 0...UInt32.max))"
        try await sh("cd '\(m)' && mkdir '\(marker)-dir' && printf '\(marker) %.0s' $(seq 1 20000) > '\(marker)-dir/\(marker).txt' && echo small-\(marker) > '\(marker)-small'")
        try await vault.unmount(0)
        let r = try await vault.lockfs(["sync", "--home", vault.home(0), "--timeout", "60"])
        #expect(r.status == 0, "\(r.stderr)")
        let grep = try await sh("grep -r -a -l '\(marker)' '\(vault.server.dataDirectory.path)' | wc -l")
        #expect(grep.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        // And the bytes really are there (sanity: the scan reads what the server stores).
        let size = try await sh("du -sb '\(vault.server.dataDirectory.path)' | cut -f1")
        #expect((Int(size.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 100_000)
    }

    @Test func aKilledMountLosesNothingThatWasClosed() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let m = try await vault.mount(0)
        let made = try await sh("cd '\(m)' && for i in $(seq 1 20); do echo content-$i > f$i; done && head -c 5000000 /dev/urandom > big && md5sum < big")
        let sum = made.stdout.split(separator: " ").first.map(String.init) ?? "?"
        // Kill the serving process in the middle of another write (a slow writer
        // holding a file open): what was closed before is durable.
        let (writer, _, _) = try spawnProcess(URL(fileURLWithPath: "/bin/sh"),
                                              ["-c", "exec 3>'\(m)/in-flight'; while true; do head -c 65536 /dev/urandom >&3; sleep 0.01; done"])
        defer { if writer.isRunning { kill(writer.processIdentifier, SIGKILL) } }
        #expect(await eventually(within: .seconds(10)) {
            ((try? FileManager.default.attributesOfItem(atPath: m + "/in-flight")[.size] as? Int) ?? 0) > 1_000_000
        })
        kill(try vault.servingPID(0), SIGKILL)
        try await sh("fusermount3 -u -z '\(m)'")
        vault.forget(0)
        #expect(await eventually(within: .seconds(10)) { (try? vault.servingPID(0)) == nil })
        kill(writer.processIdentifier, SIGKILL)
        let again = try await vault.mount(0)
        for i in 1...20 { #expect(readText(again + "/f\(i)") == "content-\(i)\n") }
        // The file still open for writing is there as its last flush left it: each
        // `head` closing its copy of the descriptor flushed 64 KiB more, so whole
        // pieces, all readable.
        let probe = try await sh("stat -c %s '\(again)/in-flight'; cat '\(again)/in-flight' | wc -c")
        let sizes = probe.stdout.split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        #expect(sizes.count == 2 && sizes[0] == sizes[1] && sizes[0] % 65536 == 0, "\(probe.stdout) \(probe.stderr)")
        let b = try await vault.mount(1)
        #expect(await eventually(within: .seconds(15)) { readText(b + "/f20") == "content-20\n" })
        let other = try await sh("md5sum < '\(b)/big'")
        #expect(other.stdout.split(separator: " ").first.map(String.init) == sum)
    }

    @Test func pinUnpinStatusAndSyncThroughTheMount() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let a = try await vault.mount(0)
        try await sh("cd '\(a)' && mkdir -p album && for i in 1 2 3; do head -c 2000000 /dev/urandom > album/p$i; done")
        let synced = try await vault.lockfs(["sync", a, "--timeout", "60"])
        #expect(synced.status == 0, "\(synced.stderr)")
        // A second device with a small cache sees everything, holds nothing yet.
        let b = try await vault.mount(1, extra: ["--cache-size", "3M"])
        #expect(await eventually(within: .seconds(5)) { FileManager.default.fileExists(atPath: b + "/album/p3") })
        let before = try await vault.lockfs(["status", b + "/album/p1"])
        #expect(before.stdout.contains("online\t"), "\(before.stdout) \(before.stderr)")
        let pin = try await vault.lockfs(["pin", b + "/album"])
        #expect(pin.status == 0, "\(pin.stderr)")
        let json = try await vault.lockfs(["status", "--json", b + "/album/p1", b + "/album"])
        let report = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        let paths = report?["paths"] as? [String: String]
        #expect(paths?[b + "/album/p1"] == "pinned" && paths?[b + "/album"] == "pinned", "\(json.stdout)")
        let engine = report?["engine"] as? [String: Any]
        #expect((engine?["pinnedBytes"] as? Int) == 6_000_000)
        // Both devices at the same entry show the same head fingerprint (the fork check users can make).
        let mine = try JSONSerialization.jsonObject(with: Data(try await vault.lockfs(["status", "--json", a]).stdout.utf8)) as? [String: Any]
        let aEngine = mine?["engine"] as? [String: Any]
        #expect((engine?["head"] as? String)?.count == 19 && engine?["cursor"] as? Int == aEngine?["cursor"] as? Int)
        #expect(engine?["head"] as? String == aEngine?["head"] as? String, "\(String(describing: engine)) \(String(describing: aEngine))")
        // Pinned data stays although it is twice the cache's limit; new files in the folder are pinned too.
        #expect((engine?["cacheSize"] as? Int ?? 0) >= 6_000_000)
        try await sh("cd '\(a)' && head -c 1000000 /dev/urandom > album/p4")
        var p4 = ""
        #expect(await eventually(within: .seconds(10)) {
            p4 = (try? xattr(b + "/album/p4", "user.lockfs.status")) ?? ""
            return p4 == "pinned"
        }, "p4 is \(p4)")
        // Unpin: the cache shrinks back to its limit.
        let unpin = try await vault.lockfs(["unpin", b + "/album"])
        #expect(unpin.status == 0, "\(unpin.stderr)")
        let after = try await vault.lockfs(["status", "--json", b + "/album"])
        let cache = ((try JSONSerialization.jsonObject(with: Data(after.stdout.utf8)) as? [String: Any])?["engine"] as? [String: Any])?["cacheSize"] as? Int
        #expect((cache ?? .max) <= 3 << 20, "\(after.stdout)")
        // Paths outside a mount are refused with a clear message.
        let outside = try await vault.lockfs(["pin", "/tmp"])
        #expect(outside.status == 64 && outside.stderr.contains("not inside a lockfs mount"), "\(outside.stderr)")
    }

    @Test func offlineTheMountReadsCachedDataQueuesWritesAndFailsUnfetchedReads() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let a = try await vault.mount(0)
        try await sh("cd '\(a)' && echo cached > cached.txt && head -c 100000 /dev/urandom > never-read")
        #expect(try await vault.lockfs(["sync", a, "--timeout", "60"]).status == 0)
        let b = try await vault.mount(1, extra: ["--fetch-timeout", "3"])
        #expect(await eventually { readText(b + "/cached.txt") == "cached\n" })
        // The server hangs (SIGSTOP): connections open, nothing answers.
        kill(vault.server.pid, SIGSTOP)
        // Cached: reads. Written: works and queues. Never fetched: EIO after --fetch-timeout.
        #expect(readText(b + "/cached.txt") == "cached\n")
        try Data("offline write".utf8).write(to: URL(fileURLWithPath: b + "/offline.txt"))
        #expect(readText(b + "/offline.txt") == "offline write")
        let failed = try await sh("cat '\(b)/never-read' > /dev/null; echo $?", timeout: .seconds(120))
        #expect(failed.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "\(failed.stderr)")
        #expect(failed.stderr.contains("Input/output error"), "\(failed.stderr)")
        let status = try await vault.lockfs(["status", b + "/offline.txt"])
        #expect(status.stdout.contains("uploading\t"), "\(status.stdout)")
        // The server comes back: the queue drains and the other device sees the write.
        kill(vault.server.pid, SIGCONT)
        let synced = try await vault.lockfs(["sync", b, "--timeout", "150"], timeout: .seconds(180))
        #expect(synced.status == 0, "\(synced.stderr)")
        #expect(await eventually(within: .seconds(30)) { readText(a + "/offline.txt") == "offline write" })
    }

    /// mount.lockfs as mount(8) calls it for an fstab line: its options are
    /// sorted into lockfs's own, FUSE's, and mount's (ignored).
    @Test func theMountHelperTakesFstabOptions() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let helper = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("mount-helpers/mount.lockfs").path
        let point = vault.point(0)
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let bin = lockfsBinary.deletingLastPathComponent().path
        let r = try await sh("PATH='\(bin)':$PATH '\(helper)' '\(vault.home(0))' '\(point)' -o rw,noauto,_netdev,x-systemd.automount,cache_size=5M,noatime")
        #expect(r.status == 0, "\(r.stderr) \(r.stdout)")
        vault.adopt(0)
        let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
        #expect(mounts.contains("\(point) fuse.lockfs"), "not mounted")
        try Data("via fstab".utf8).write(to: URL(fileURLWithPath: point + "/f"))
        let status = try await vault.lockfs(["status", "--json", point])
        let engine = (try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])?["engine"] as? [String: Any]
        #expect(engine?["cacheLimit"] as? Int == 5 << 20, "\(status.stdout)")
    }
}

/// An extended attribute's value as text (python's os.getxattr: no C shim in tests).
func xattr(_ path: String, _ name: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = ["-c", "import os,sys; sys.stdout.buffer.write(os.getxattr(sys.argv[1], sys.argv[2]))", path, name]
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw TestFailure("no \(name) on \(path)") }
    return String(decoding: data, as: UTF8.self)
}

extension MountedVault {
    /// Records a mount made another way (to unmount it at the end).
    func adopt(_ i: Int) { mounts.append((home(i), point(i))) }

    /// Forgets a mount that was torn down by hand.
    func forget(_ i: Int) { mounts.removeAll { $0.point == point(i) } }
}
