import Foundation
import LockTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Whether rsync is installed (not yet among the Debian packages `make deps` installs).
let rsyncAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/rsync")
/// Whether vim is installed (the editor-save test then also runs the real editor).
let vimAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/vim")

/// Two devices of one vault mounted through the real binary, and a plain
/// directory beside them: a tool runs in the plain directory and in device
/// 0's mount, the results are compared byte for byte (content, kinds, modes,
/// sizes, mtimes, link targets), and after `lockfs sync MOUNTPOINT` on
/// device 0, device 1's mount must show the same.
final class ToolBench: @unchecked Sendable {
    let vault: MountedVault
    /// Device 0's and device 1's mount points.
    let a: String, b: String
    /// The plain directory every tool also runs in.
    let plain: String
    /// Inputs shared by both runs (source trees, tarballs, scripts), outside both.
    let scratch: String

    init() async throws {
        vault = try await MountedVault()
        do {
            a = try await vault.mount(0)
            b = try await vault.mount(1)
            plain = vault.dir.appendingPathComponent("plain").path
            scratch = vault.dir.appendingPathComponent("scratch").path
            try FileManager.default.createDirectory(atPath: plain, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        } catch {
            vault.stop()
            throw error
        }
    }

    /// Unmounts both devices and removes the plain and scratch directories
    /// (the homes stay, as in MountTests: a lazily unmounted process may still be closing them).
    func stop() {
        vault.stop()
        for dir in [plain, scratch] { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Environment for every script: a fixed HOME and no system git config,
    /// so that no setting of this machine changes what a tool does.
    var prelude: String {
        "export HOME='\(scratch)' GIT_CONFIG_NOSYSTEM=1 LC_ALL=C TZ=UTC S='\(scratch)'; "
    }

    /// Runs `script` in `dir`; it must exit 0.
    @discardableResult
    func run(_ script: String, in dir: String, _ what: String = "") async throws -> String {
        let r = try await sh("set -e; cd '\(dir)'; \(prelude)\(script)")
        guard r.status == 0 else {
            throw TestFailure("\(what.isEmpty ? script : what) failed in \(dir) (exit \(r.status)): \(r.stderr) \(r.stdout)")
        }
        return r.stdout
    }

    /// Runs `script` in the plain directory and in device 0's mount; both must exit 0 and print the same.
    @discardableResult
    func both(_ what: String, _ script: String) async throws -> String {
        let p = try await run(script, in: plain, what)
        let m = try await run(script, in: a, what)
        #expect(m == p, "\(what): the mount printed\n\(m)\nthe plain directory printed\n\(p)")
        return p
    }

    /// Which mtimes a comparison includes.
    enum Times {
        /// Every node's: for tools that restore them all (cp -a, rsync -a, tar x).
        case all
        /// Files' and links', not folders': a folder whose entries change
        /// after its time is set takes the time of the change, which is not
        /// the same instant in the plain directory and in the mount.
        case files
        /// None: for files a tool makes now (their mtimes are the time of the run).
        case none
    }

    /// Every node under `path` (relative to `dir`), one line each: path,
    /// kind, mode, size, link target, and the mtimes `times` asks for, in nanoseconds.
    func listing(_ dir: String, _ path: String, times: Times) async throws -> String {
        let folder = times == .all ? " %T@" : "", other = times == .none ? "" : " %T@"
        return try await run("find '\(path)' \\( -type d -printf '%p d %m\(folder)\\n' \\) -o -printf '%p %y %m %s %l\(other)\\n' | sort", in: dir)
    }

    /// How `path` under `dir` differs from `path` under `reference`: the
    /// listings, then every byte (`diff -r`, symbolic links compared as links); nil if not at all.
    func differences(_ dir: String, from reference: String, _ path: String, times: Times) async throws -> String? {
        let want = try await listing(reference, path, times: times)
        let got = try await listing(dir, path, times: times)
        if want != got { return "listings differ:\n" + lineDiff(want, got) }
        let d = try await sh("diff -r --no-dereference '\(reference)/\(path)' '\(dir)/\(path)'")
        if d.status != 0 { return "contents differ: \(d.stdout) \(d.stderr)" }
        return nil
    }

    /// Expects `paths` to be the same in device 0's mount as in the plain
    /// directory, with the mtimes `times` asks for. Then syncs device 0 and
    /// expects device 1 to show exactly what device 0 shows, every mtime included.
    func expectSame(_ paths: [String], times: Times, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        for p in paths {
            let d = try await differences(a, from: plain, p, times: times)
            #expect(d == nil, "\(p) on device 0: \(d ?? "")", sourceLocation: sourceLocation)
        }
        try await syncDevice0()
        for p in paths {
            var last: String?
            let same = await eventuallyAsync(within: .seconds(10)) {
                last = try? await self.differences(self.b, from: self.a, p, times: .all)
                return last == nil
            }
            #expect(same, "\(p) on device 1 after sync: \(last ?? "")", sourceLocation: sourceLocation)
        }
    }

    /// `lockfs sync MOUNTPOINT` on device 0: returns once its changes are on the server.
    func syncDevice0() async throws {
        let r = try await vault.lockfs(["sync", a, "--timeout", "60"])
        guard r.status == 0 else { throw TestFailure("lockfs sync failed: \(r.stderr)") }
    }
}

/// The lines of `a` and `b` that differ, each marked - (only in a) or + (only in b).
func lineDiff(_ a: String, _ b: String) -> String {
    let x = a.split(separator: "\n"), y = b.split(separator: "\n")
    let sx = Set(x), sy = Set(y)
    return (x.filter { !sy.contains($0) }.map { "- \($0)" } + y.filter { !sx.contains($0) }.map { "+ \($0)" }).joined(separator: "\n")
}

/// Polls an async `condition` until it holds or `limit` passes.
func eventuallyAsync(within limit: Duration, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return await condition()
}

/// Makes `$S/src`: files (empty, text, a 300 KB binary, names with spaces and
/// non-ASCII letters), nested folders, a symbolic link and a dangling one,
/// modes 600 to 755, and a distinct mtime with nanoseconds on every node
/// (folders last, so their own mtimes stay).
let makeSourceTree = """
    mkdir -p src/sub/deeper src/empty-dir
    printf 'hello\\n' > src/a.txt
    : > src/empty
    head -c 300000 /dev/urandom > src/sub/random.bin
    printf '#!/bin/sh\\necho hi\\n' > src/sub/run.sh; chmod 755 src/sub/run.sh
    printf secret > src/sub/deeper/private; chmod 600 src/sub/deeper/private
    printf x > 'src/name with spaces'; chmod 640 'src/name with spaces'
    printf y > 'src/ünïcødé.txt'
    ln -s sub/run.sh src/link
    ln -s no-such-target src/dangling
    chmod 750 src/sub/deeper; chmod 700 src/empty-dir
    i=0; find src -depth | while read -r p; do i=$((i + 1)); touch -h -d "@$((1000000000 + i * 86400)).$((100000000 + i * 7654321))" "$p"; done
    """

@Suite(.enabled(if: fuseAvailable, "needs /dev/fuse and fusermount3"), .serialized)
struct ToolTests {
    /// `cp -a` of a small tree: contents, modes, mtimes (files, folders, links) and link targets.
    @Test func cpArchive() async throws {
        let t = try await ToolBench()
        defer { t.stop() }
        try await t.run(makeSourceTree, in: t.scratch)
        try await t.both("cp -a", "cp -a \"$S/src\" copy")
        try await t.expectSame(["copy"], times: .all)
    }

    /// `rsync -a` of the same tree (temporary names, then rename and times).
    @Test(.enabled(if: rsyncAvailable, "rsync is not installed: apt-get install -y rsync"))
    func rsyncArchive() async throws {
        let t = try await ToolBench()
        defer { t.stop() }
        try await t.run(makeSourceTree, in: t.scratch)
        try await t.both("rsync -a", "rsync -a \"$S/src/\" synced/")
        try await t.expectSame(["synced"], times: .all)
        // A second run after a change copies only what changed, and in place.
        try await t.run("printf 'changed\\n' > src/a.txt; touch -d @1500000000 src/a.txt; rm src/empty", in: t.scratch)
        try await t.both("rsync -a --delete (again)", "rsync -a --delete \"$S/src/\" synced/")
        // The rename and the delete in synced/ move its mtime after rsync set it, to the time of each run.
        try await t.expectSame(["synced"], times: .files)
    }

    /// `tar x` of a few hundred small files and a 5 MB one, then `tar c` back out.
    @Test func tarExtractAndCreate() async throws {
        let t = try await ToolBench()
        defer { t.stop() }
        try await t.run("""
            mkdir -p t; for d in 0 1 2 3 4 5 6 7 8 9; do mkdir t/d$d; for f in $(seq 1 30); do \
            seq 1 $((d * 30 + f)) > t/d$d/f$f.txt; done; done
            head -c 5242880 /dev/urandom > t/big.bin; chmod 600 t/big.bin; ln -s d1/f1.txt t/link
            tar czf t.tgz t; rm -r t
            """, in: t.scratch)
        try await t.both("tar xzf", "tar xzf \"$S/t.tgz\"")
        try await t.expectSame(["t"], times: .all)
        let count = try await t.run("find t -type f | wc -l", in: t.a)
        #expect(count.trimmingCharacters(in: .whitespacesAndNewlines) == "301")
        // Back out: the same listing and the very same archive bytes.
        let list = "tar cf - --sort=name t | tar tvf - --full-time"
        let sum = "tar cf - --sort=name t | sha256sum"
        let wantList = try await t.run(list, in: t.plain), wantSum = try await t.run(sum, in: t.plain)
        for dir in [t.a, t.b] {
            let gotList = try await t.run(list, in: dir)
            #expect(gotList == wantList, "tar c listing in \(dir):\n\(lineDiff(wantList, gotList))")
            #expect(try await t.run(sum, in: dir) == wantSum, "tar c bytes in \(dir)")
        }
    }

    /// git: init, two commits, log, a clean status, a local clone (hard links
    /// are refused here, so git copies), fsck.
    @Test func git() async throws {
        let t = try await ToolBench()
        defer { t.stop() }
        let identity = """
            export GIT_AUTHOR_NAME=Tess GIT_AUTHOR_EMAIL=tess@example.com GIT_COMMITTER_NAME=Tess \
            GIT_COMMITTER_EMAIL=tess@example.com GIT_AUTHOR_DATE=2020-01-01T00:00:00Z GIT_COMMITTER_DATE=2020-01-01T00:00:00Z
            """
        try await t.both("git", """
            \(identity)
            git init -q -b main repo; cd repo
            printf 'one\\n' > a.txt; mkdir src; printf 'int main(void) { return 0; }\\n' > src/main.c
            git add -A; git commit -q -m first
            printf 'two\\n' >> a.txt; ln -s a.txt link; chmod +x src/main.c; git add -A
            git commit -q -m second
            git log --format='%H %s'
            echo "status: [$(git status --porcelain)]"
            git fsck --full --strict --no-progress
            cd ..; git clone -q repo clone
            git -C clone log --format='%H %s'
            echo "clone status: [$(git -C clone status --porcelain)]"
            git -C clone fsck --full --strict --no-progress
            """)
        try await t.expectSame(["repo/a.txt", "repo/src", "repo/link", "clone/a.txt", "clone/src", "clone/link"], times: .none)
        let want = try await t.run("git -C repo log --format=%H", in: t.plain)
        let onB = try await t.run("""
            git -C repo log --format=%H; git -C repo fsck --full --strict --no-progress
            git -C clone log --format=%H; git -C clone fsck --full --strict --no-progress
            echo "[$(git -C repo status --porcelain)$(git -C clone status --porcelain)]"
            """, in: t.b)
        #expect(onB == want + want + "[]\n")
    }

    /// SQLite through python3: 1,000 rows in ten transactions with the
    /// default rollback journal and in WAL mode; closed, reopened, counted;
    /// device 1 counts the same after sync.
    @Test func sqlite() async throws {
        let t = try await ToolBench()
        defer { t.stop() }
        try Data("""
            import hashlib, os, sqlite3, sys
            mode, write = sys.argv[1], sys.argv[2] == "write"
            path = f"{mode}.db"
            if write:
                con = sqlite3.connect(path, isolation_level=None)
                print(con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0])
                con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL)")
                for batch in range(10):
                    con.execute("BEGIN")
                    for i in range(100):
                        n = batch * 100 + i
                        con.execute("INSERT INTO t(name, v) VALUES (?, ?)", (f"row {n}", n * 1.5))
                    con.execute("COMMIT")
                con.close()
            con = sqlite3.connect(path)
            print(con.execute("PRAGMA journal_mode").fetchone()[0])
            print(*con.execute("SELECT count(*), sum(v) FROM t").fetchone())
            print(con.execute("PRAGMA integrity_check").fetchone()[0])
            print(hashlib.sha256("\\n".join(con.iterdump()).encode()).hexdigest())
            con.close()
            print(sorted(n for n in os.listdir(".") if n.startswith(mode)))
            """.utf8).write(to: URL(fileURLWithPath: t.scratch + "/db.py"))
        for mode in ["delete", "wal"] {
            let out = try await t.both("sqlite \(mode)", "python3 \"$S/db.py\" \(mode) write")
            #expect(out.contains("1000 749250.0\nok\n"), "\(mode): \(out)")
        }
        try await t.syncDevice0()
        for mode in ["delete", "wal"] {
            let want = try await t.run("python3 \"$S/db.py\" \(mode) read", in: t.plain)
            var got = ""
            let same = await eventuallyAsync(within: .seconds(10)) {
                got = (try? await t.run("python3 \"$S/db.py\" \(mode) read", in: t.b)) ?? ""
                return got == want
            }
            #expect(same, "\(mode) on device 1: \(got), expected \(want)")
        }
    }

    /// python3 `mmap` of files in the mount: read-only maps of new and
    /// synced files, and a shared writable map written back.
    @Test func mmapReads() async throws {
        let t = try await ToolBench()
        defer { t.stop() }
        try await t.run("head -c 3000000 /dev/urandom > data.bin", in: t.scratch)
        try Data("""
            import mmap, sys
            want = open(sys.argv[1], "rb").read()
            with open(sys.argv[2], "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                assert len(m) == len(want), (len(m), len(want))
                assert m[:] == want, "whole map"
                for off in (0, 4095, 4096, 1 << 20, len(want) - 10):
                    assert m[off:off + 10] == want[off:off + 10], off
            print("ok")
            """.utf8).write(to: URL(fileURLWithPath: t.scratch + "/map.py"))
        try Data("""
            import mmap, sys
            with open(sys.argv[1], "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
                m[10:15] = b"HELLO"
                m[-5:] = b"WORLD"
                m.flush()
            print("ok")
            """.utf8).write(to: URL(fileURLWithPath: t.scratch + "/mapwrite.py"))
        try await t.both("copy", "cp \"$S/data.bin\" data.bin; cp data.bin shared.bin; python3 \"$S/map.py\" \"$S/data.bin\" data.bin")
        try await t.both("mmap write", "python3 \"$S/mapwrite.py\" shared.bin; sha256sum shared.bin")
        try await t.expectSame(["data.bin"], times: .none)
        #expect(try await t.run("python3 \"$S/map.py\" \"$S/data.bin\" data.bin", in: t.b) == "ok\n")
        let want = try await t.run("sha256sum shared.bin", in: t.plain)
        #expect(await eventuallyAsync(within: .seconds(10)) { (try? await t.run("sha256sum shared.bin", in: t.b)) == want })
    }

    /// How editors save: vim (swap file, rename to a backup, write, delete the
    /// backup), write a temporary file and rename it over, and `sed -i`.
    @Test func editorSaves() async throws {
        let t = try await ToolBench()
        defer { t.stop() }
        try await t.both("files", """
            mkdir ed; cd ed; printf 'line one\\nline two\\n' > vim.txt; chmod 640 vim.txt
            printf 'old\\n' > real-vim.txt; printf 'a\\nb\\nc\\n' > sed.txt; chmod 604 sed.txt; printf 'first\\n' > doc.txt
            """)
        // vim's steps, by hand: swap file, original renamed to a backup, new file written, backup and swap removed.
        try await t.both("vim-style save", """
            cd ed; printf 'b0VIM swap' > .vim.txt.swp
            mv vim.txt vim.txt~; printf 'line one\\nline 2\\n' > vim.txt; chmod 640 vim.txt; rm vim.txt~ .vim.txt.swp
            cat vim.txt; ls -A | tr '\\n' ' '
            """)
        if vimAvailable {
            try await t.both("vim", "cd ed; vim -N -u NONE -i NONE -es -c '%s/old/new/' -c 'wq' real-vim.txt; cat real-vim.txt; ls -A | tr '\\n' ' '")
        }
        // Write a temporary file, fsync, rename over: a reader holding the old file keeps reading it.
        try await t.both("write-temp-then-rename", """
            cd ed; exec 3< doc.txt
            python3 -c 'import os; f = open("doc.txt.tmp", "w"); f.write("second\\n"); f.flush(); os.fsync(f.fileno()); f.close(); os.replace("doc.txt.tmp", "doc.txt")'
            cat doc.txt; cat <&3; ls -A | tr '\\n' ' '
            """)
        try await t.both("sed -i", "cd ed; sed -i 's/b/B/' sed.txt; sed -i.orig 's/c/C/' sed.txt; cat sed.txt sed.txt.orig; stat -c %a sed.txt; ls -A | tr '\\n' ' '")
        try await t.expectSame(["ed"], times: .none)
    }

    /// Sparse files: `truncate -s`, writes in the middle and past the end with
    /// `dd conv=notrunc`, shrinking. (Holes read as zeros; lockfs stores them
    /// as data, so `du` and SEEK_HOLE see no holes.)
    @Test func sparseFilesAndTruncate() async throws {
        let t = try await ToolBench()
        defer { t.stop() }
        try await t.both("sparse", """
            truncate -s 10M sparse; printf middle | dd of=sparse bs=1 seek=5000000 conv=notrunc status=none
            printf end | dd of=sparse bs=1 seek=10485757 conv=notrunc status=none
            cp sparse grown; printf tail | dd of=grown bs=1M seek=12 conv=notrunc status=none
            cp sparse shrunk; truncate -s 4999999 shrunk; truncate -s +100 shrunk
            printf abc > small; truncate -s 3M small; printf Z | dd of=small bs=1 seek=1 conv=notrunc status=none
            stat -c '%n %s' sparse grown shrunk small; sha256sum sparse grown shrunk small
            """)
        try await t.expectSame(["sparse", "grown", "shrunk", "small"], times: .none)
    }
}
