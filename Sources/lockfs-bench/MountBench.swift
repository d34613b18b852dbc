import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The `mount` phase of `make bench`: one workload set, in the same run,
/// against a real lockfs mount (release `lockfs-server serve` on loopback,
/// `lockfs init`, `lockfs mount`, all as processes) and against a plain
/// directory under /tmp (and gocryptfs when it is on PATH), driven with the
/// shell tools a user would use: dd, tar, ls -lR, find + cat, a Python stat
/// loop, a Python small-file loop, rm -rf.
///
/// "Until on the server" figures include `lockfs sync MOUNTPOINT`. The cold
/// read is a second device (`lockfs login`, its own empty cache) mounted
/// after the kernel page cache was dropped (`echo 3 > /proc/sys/vm/drop_caches`).
///
/// Every workload runs on the plain directory first, then on the mount.
/// `LOCKFS_BENCH_MOUNT_SCALE=N` divides the 1 GiB file, the 10,000 small files
/// and the source tree (its first 1/N entries) by N, for a quick look.
/// `LOCKFS_BENCH_MOUNT_TAR=FILE.tar` uses another tarball than linux-source.
enum MountBench {
    static let scale = max(1, Int(ProcessInfo.processInfo.environment["LOCKFS_BENCH_MOUNT_SCALE"] ?? "") ?? 1)
    static let bigFileMiB = 1024 / scale
    static let smallFiles = 10_000 / scale
    static let warmRounds = 3
    static let statPasses = 3

    static func run() async throws {
        let cleanup = Cleanup()
        let signals = stopOnSignals(cleanup)
        defer {
            for (number, source) in signals { source.cancel(); signal(number, SIG_DFL) }
        }
        do {
            try await MountRun(cleanup: cleanup).run()
        } catch {
            cleanup.run()
            throw error
        }
        cleanup.run()
    }

    static func stopOnSignals(_ cleanup: Cleanup) -> [(Int32, any DispatchSourceSignal)] {
        [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                cleanup.run()
                exit(128 + number)
            }
            source.resume()
            return (number, source)
        }
    }
}

/// What to undo at the end, whatever happened: mounts, the server, directories.
final class Cleanup: @unchecked Sendable {
    private let lock = NSLock()
    private var mounts: [String] = []
    private var servers: [BenchServer] = []
    private var directories: [String] = []

    func mount(_ path: String) { lock.withLock { mounts.append(path) } }
    func unmounted(_ path: String) { lock.withLock { mounts.removeAll { $0 == path } } }
    func server(_ s: BenchServer) { lock.withLock { servers.append(s) } }
    func directory(_ path: String) { lock.withLock { directories.append(path) } }

    func run() {
        let (m, s, d) = lock.withLock { () -> ([String], [BenchServer], [String]) in
            defer { mounts = []; servers = []; directories = [] }
            return (mounts, servers, directories)
        }
        for path in m.reversed() { _ = try? Shell.run("/usr/bin/fusermount3", ["-u", "-z", path]) }
        for server in s { server.stop(grace: .seconds(5)) }
        // A lazily unmounted FUSE process may still hold its home for a moment.
        for path in d.reversed() {
            for _ in 0..<50 {
                if (try? FileManager.default.removeItem(atPath: path)) != nil || !FileManager.default.fileExists(atPath: path) { break }
                usleep(100_000)
            }
        }
    }
}

/// Processes: run, wait, time; a non-zero status is an error with stderr's tail.
enum Shell {
    struct Output { var seconds: Double; var stdout: String }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String], capture: Bool = false,
                    environment: [String: String]? = nil) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("lockfs-bench-stderr-\(UUID().uuidString)")
        let outURL = FileManager.default.temporaryDirectory.appendingPathComponent("lockfs-bench-stdout-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: errURL); try? FileManager.default.removeItem(at: outURL) }
        p.standardError = try FileHandle(forWritingTo: errURL)
        p.standardOutput = capture ? try FileHandle(forWritingTo: outURL) : FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        let start = ContinuousClock.now
        try p.run()
        p.waitUntilExit()
        let seconds = Bench.seconds(ContinuousClock.now - start)
        guard p.terminationStatus == 0 else {
            let err = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
            throw BenchFailure("\(executable) \(arguments.joined(separator: " ")): exit \(p.terminationStatus): \(err.suffix(1500))")
        }
        let out = capture ? ((try? String(contentsOf: outURL, encoding: .utf8)) ?? "") : ""
        return Output(seconds: seconds, stdout: out)
    }

    /// `sh -c SCRIPT` (for redirections and pipes), timed.
    @discardableResult
    static func sh(_ script: String, capture: Bool = false) throws -> Output {
        try run("/bin/sh", ["-c", script], capture: capture)
    }

    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }
}

/// One run of the mount phase.
final class MountRun {
    typealias M = MountBench
    let cleanup: Cleanup
    let scratch: String
    let lockfs: String
    let password = "mount bench password"
    let user = "mount-bench"
    var server: BenchServer!
    var figures: [(workload: String, unit: String, plain: Double, mount: Double, gocryptfs: Double?, lowerIsBetter: Bool)] = []
    /// gocryptfs's mountpoint when it is installed (another encrypted FUSE file system: the
    /// cost of FUSE itself on this machine, beside lockfs's).
    var gocrypt: String?
    var canDropCaches = true

    init(cleanup: Cleanup) throws {
        self.cleanup = cleanup
        lockfs = try BenchServer.binary().deletingLastPathComponent().appendingPathComponent("lockfs").path
        guard FileManager.default.isExecutableFile(atPath: lockfs) else {
            throw BenchFailure("no lockfs at \(lockfs); build it: swift build -c release --product lockfs")
        }
        scratch = "/tmp/lockfs-bench-mount-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        cleanup.directory(scratch)
    }

    var plain: String { scratch + "/plain" }
    var mnt: String { scratch + "/mnt" }
    var home: String { scratch + "/home" }
    var mnt2: String { scratch + "/mnt2" }
    var home2: String { scratch + "/home2" }
    var gocryptCipher: String { scratch + "/gocryptfs.cipher" }
    var source: String { scratch + "/big.src" }

    func q(_ s: String) -> String { Shell.quote(s) }

    func run() async throws {
        Bench.note("mount: lockfs mount vs a plain directory in /tmp, same run, same disk; client, server and plain dir share this machine's cores")
        if let gocryptfs = Shell.which("gocryptfs") {
            let dir = scratch + "/gocryptfs"
            let passfile = scratch + "/gocryptfs.pass"
            try Data("mount bench password\n".utf8).write(to: URL(fileURLWithPath: passfile))
            for d in [dir, gocryptCipher] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
            try Shell.run(gocryptfs, ["-q", "-init", "-passfile", passfile, gocryptCipher])
            // system(3), not Foundation's Process: gocryptfs forks its daemon and exits, and
            // Process never saw that exit (its parent stayed a zombie, waitUntilExit hung).
            let status = system("\(q(gocryptfs)) -q -passfile \(q(passfile)) \(q(gocryptCipher)) \(q(dir)) > /dev/null 2>&1 < /dev/null")
            guard status == 0 else { throw BenchFailure("gocryptfs did not mount (status \(status))") }
            cleanup.mount(dir)
            gocrypt = dir
            Bench.note("mount: gocryptfs \(dir) (cipher dir \(gocryptCipher), same disk)")
        } else {
            Bench.note("mount: gocryptfs is not on PATH (apt-get install gocryptfs; `make bench` does); its column is skipped")
        }
        if M.scale > 1 { Bench.note("mount: LOCKFS_BENCH_MOUNT_SCALE=\(M.scale): sizes and counts divided by \(M.scale)") }
        let tar = try prepareTarball()

        server = try await BenchServer.start()
        cleanup.server(server)
        for d in [plain, mnt, mnt2] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        let passwordFile = scratch + "/password"
        try Data((password + "\n").utf8).write(to: URL(fileURLWithPath: passwordFile))
        try Shell.run(lockfs, ["init", "--home", home, "--server", server.baseURL, "--user", user,
                               "--password-file", passwordFile, "--device-name", "bench-1"])
        try Shell.run(lockfs, ["mount", "--home", home, mnt])
        cleanup.mount(mnt)
        Bench.note("mount: server \(server.baseURL), mount \(mnt), plain \(plain)")

        // Source data for the sequential write: random bytes, in the page cache.
        try Shell.sh("head -c \(M.bigFileMiB)M /dev/urandom > \(q(source))")
        let bigBytes = Double(M.bigFileMiB << 20)

        // 1. Sequential write: dd with conv=fsync (plain: data on disk; lockfs: committed locally), then until on the server.
        let plainWrite = try Shell.sh("dd if=\(q(source)) of=\(q(plain + "/big.bin")) bs=1M conv=fsync status=none").seconds
        let mountWrite = try Shell.sh("dd if=\(q(source)) of=\(q(mnt + "/big.bin")) bs=1M conv=fsync status=none").seconds
        let mountWriteSync = try sync()
        let gocryptWrite = try gocrypt.map { try Shell.sh("dd if=\(q(source)) of=\(q($0 + "/big.bin")) bs=1M conv=fsync status=none").seconds }
        record("seq_write", "mbps", plain: bigBytes / 1e6 / plainWrite, mount: bigBytes / 1e6 / mountWrite,
               gocryptfs: gocryptWrite.map { bigBytes / 1e6 / $0 }, lowerIsBetter: false)
        report("mount_seq_write_server_mbps", bigBytes / 1e6 / (mountWrite + mountWriteSync), "MB/s")
        report("mount_seq_write_sync_s", mountWriteSync, "s", digits: 2)
        try Shell.sh("cmp \(q(source)) \(q(mnt + "/big.bin"))")  // not timed: what was written reads back

        // 2. Warm sequential read: best of rounds (the kernel page cache and lockfs's chunk cache hold it).
        func bestRead(_ path: String) throws -> Double {
            var best = Double.infinity
            for _ in 0..<M.warmRounds { best = min(best, try Shell.sh("dd if=\(q(path)) of=/dev/null bs=1M status=none").seconds) }
            return bigBytes / 1e6 / best
        }
        record("seq_read_warm", "mbps", plain: try bestRead(plain + "/big.bin"), mount: try bestRead(mnt + "/big.bin"),
               gocryptfs: try gocrypt.map { try bestRead($0 + "/big.bin") }, lowerIsBetter: false)

        // 3. Cold sequential read: plain after dropping the page cache; lockfs on a second device with an empty cache.
        try Shell.run(lockfs, ["login", "--home", home2, "--server", server.baseURL, "--user", user,
                               "--password-file", passwordFile, "--device-name", "bench-2"])
        try Shell.run(lockfs, ["mount", "--home", home2, mnt2])
        cleanup.mount(mnt2)
        try waitForFile(mnt2 + "/big.bin", size: M.bigFileMiB << 20, timeout: 120)
        dropCaches()
        let plainCold = try Shell.sh("dd if=\(q(plain + "/big.bin")) of=/dev/null bs=1M status=none").seconds
        dropCaches()
        let mountCold = try Shell.sh("dd if=\(q(mnt2 + "/big.bin")) of=/dev/null bs=1M status=none").seconds
        let gocryptCold = try gocrypt.map { g -> Double in
            dropCaches()
            return try Shell.sh("dd if=\(q(g + "/big.bin")) of=/dev/null bs=1M status=none").seconds
        }
        record("seq_read_cold", "mbps", plain: bigBytes / 1e6 / plainCold, mount: bigBytes / 1e6 / mountCold,
               gocryptfs: gocryptCold.map { bigBytes / 1e6 / $0 }, lowerIsBetter: false)
        try unmount(home2, mnt2)   // the second device would otherwise pull (and compete with) everything below
        try Shell.sh("rm -f \(q(plain + "/big.bin")) \(q(mnt + "/big.bin")) \(q(source))\(gocrypt.map { " " + q($0 + "/big.bin") } ?? "")")

        // 4. Untar of a large source tree (a plain .tar: no xz in the timing).
        if let tar {
            let plainUntar = try untar(tar, into: plain + "/src")
            let mountUntar = try untar(tar, into: mnt + "/src")
            let untarSync = try sync()
            let gocryptUntar = try gocrypt.map { try untar(tar, into: $0 + "/src") }
            record("untar", "s", plain: plainUntar, mount: mountUntar, gocryptfs: gocryptUntar, lowerIsBetter: true)
            report("mount_untar_sync_s", untarSync, "s", digits: 2)
            let files = Double(try Shell.sh("find \(q(plain + "/src")) -type f | wc -l", capture: true).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            let bytes = Double(try Shell.sh("du -sb --apparent-size \(q(plain + "/src")) | cut -f1", capture: true).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            Bench.note("mount: source tree \(Int(files)) files, \(Int(bytes / 1e6)) MB")

            // 5. ls -lR (one pass; lockfs's attribute and entry timeouts are 1 s, so it is past them).
            sleep(2)
            record("ls_lR", "s", plain: try Shell.sh("ls -lR \(q(plain + "/src")) > /dev/null").seconds,
                   mount: try Shell.sh("ls -lR \(q(mnt + "/src")) > /dev/null").seconds,
                   gocryptfs: try gocrypt.map { try Shell.sh("ls -lR \(q($0 + "/src")) > /dev/null").seconds }, lowerIsBetter: true)

            // 6. Read every file (find + cat), warm: the files were just written on this device.
            let readAll = { (root: String) in try Shell.sh("find \(self.q(root)) -type f -print0 | xargs -0 cat > /dev/null").seconds }
            let plainRead = try readAll(plain + "/src"), mountRead = try readAll(mnt + "/src")
            record("read_all", "s", plain: plainRead, mount: mountRead, gocryptfs: try gocrypt.map { try readAll($0 + "/src") },
                   lowerIsBetter: true)
            report("plain_read_all_mbps", bytes / 1e6 / plainRead, "MB/s")
            report("mount_read_all_mbps", bytes / 1e6 / mountRead, "MB/s")

            // 7. Stat storm: lstat of every path, several passes (Python loop; the walk is not timed).
            record("stat_storm", "stats_per_s", plain: try statStorm(plain + "/src"), mount: try statStorm(mnt + "/src"),
                   gocryptfs: try gocrypt.map { try statStorm($0 + "/src") }, lowerIsBetter: false)
        } else {
            Bench.note("mount: no source tarball; untar, ls -lR, read-all and the stat storm are skipped")
        }

        // 8. 10,000 small files (1–4 KiB, create + write + close each).
        let plainSmall = try smallFiles(plain + "/small"), mountSmall = try smallFiles(mnt + "/small")
        let smallSync = try sync()
        record("small_create", "files_per_s", plain: Double(M.smallFiles) / plainSmall, mount: Double(M.smallFiles) / mountSmall,
               gocryptfs: try gocrypt.map { Double(M.smallFiles) / (try smallFiles($0 + "/small")) }, lowerIsBetter: false)
        report("mount_small_create_sync_s", smallSync, "s", digits: 2)

        // 9. rm -rf of everything (the tree and the small files).
        let rm = { (root: String) in try Shell.sh("cd \(self.q(root)) && rm -rf -- *").seconds }
        record("rm_rf", "s", plain: try rm(plain), mount: try rm(mnt), gocryptfs: try gocrypt.map { try rm($0) }, lowerIsBetter: true)
        report("mount_rm_rf_sync_s", try sync(), "s", digits: 2)

        try unmount(home, mnt)
        table()
    }

    // MARK: Workloads

    /// The tarball, decompressed once to a plain .tar in /tmp (kept for later runs).
    func prepareTarball() throws -> String? {
        var tar = ProcessInfo.processInfo.environment["LOCKFS_BENCH_MOUNT_TAR"]
        if tar == nil {
            let xz = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/src")) ?? [])
                .filter { $0.hasPrefix("linux-source-") && $0.hasSuffix(".tar.xz") }.sorted().last
            guard let xz else {
                Bench.note("mount: no /usr/src/linux-source-*.tar.xz (apt-get install linux-source; `make bench` does)")
                return nil
            }
            let out = "/tmp/lockfs-bench-" + String(xz.dropLast(3))
            if !FileManager.default.fileExists(atPath: out) {
                Bench.note("mount: decompressing /usr/src/\(xz) to \(out) (once; kept for later runs)")
                try Shell.sh("xz -dc \(q("/usr/src/" + xz)) > \(q(out + ".part")) && mv \(q(out + ".part")) \(q(out))")
            }
            tar = out
        }
        Bench.note("mount: source tree from \(tar!)")
        guard M.scale > 1 else { return tar }
        // Scaled: the first 1/N entries, extracted with --no-recursion.
        let list = scratch + "/tar-list"
        try Shell.sh("tar -tf \(q(tar!)) > \(q(list + ".all"))")
        let count = try String(contentsOfFile: list + ".all", encoding: .utf8).split(separator: "\n").count
        try Shell.sh("head -n \(max(1, count / M.scale)) \(q(list + ".all")) > \(q(list))")
        return tar
    }

    func untar(_ tar: String, into dir: String) throws -> Double {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let subset = M.scale > 1 ? " --no-recursion -T \(q(scratch + "/tar-list"))" : ""
        return try Shell.sh("tar -xf \(q(tar)) -C \(q(dir))\(subset)").seconds
    }

    func statStorm(_ root: String) throws -> Double {
        let script = """
            import os, sys, time
            root, passes = sys.argv[1], int(sys.argv[2])
            paths = []
            for d, ds, fs in os.walk(root):
                paths.extend(os.path.join(d, x) for x in ds + fs)
            t = time.perf_counter()
            for _ in range(passes):
                for p in paths:
                    os.lstat(p)
            print(len(paths) * passes, time.perf_counter() - t)
            """
        let out = try Shell.run(Shell.which("python3") ?? "/usr/bin/python3", ["-c", script, root, String(M.statPasses)], capture: true).stdout
        let parts = out.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Double($0) }
        guard parts.count == 2, parts[1] > 0 else { throw BenchFailure("stat storm: unexpected output \(out)") }
        return parts[0] / parts[1]
    }

    /// Seconds to create `smallFiles` files of 1–4 KiB (1,000 per folder).
    func smallFiles(_ root: String) throws -> Double {
        let script = """
            import os, random, sys, time
            root, n = sys.argv[1], int(sys.argv[2])
            rnd = random.Random(1)
            data = os.urandom(4096)
            os.mkdir(root)
            t = time.perf_counter()
            for i in range(n):
                d = os.path.join(root, "d%03d" % (i // 1000))
                if i % 1000 == 0:
                    os.mkdir(d)
                with open(os.path.join(d, "f%05d" % i), "wb") as f:
                    f.write(data[:rnd.randint(1024, 4096)])
            print(time.perf_counter() - t)
            """
        let out = try Shell.run(Shell.which("python3") ?? "/usr/bin/python3", ["-c", script, root, String(M.smallFiles)], capture: true).stdout
        guard let s = Double(out.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw BenchFailure("small files: unexpected output \(out)") }
        return s
    }

    // MARK: Mount plumbing

    /// `lockfs sync MOUNTPOINT`: seconds until every change made on the mount is on the server.
    func sync() throws -> Double {
        try Shell.run(lockfs, ["sync", mnt, "--timeout", "600"]).seconds
    }

    func unmount(_ home: String, _ mountpoint: String) throws {
        try Shell.run(lockfs, ["umount", "--home", home, mountpoint])
        cleanup.unmounted(mountpoint)
    }

    func waitForFile(_ path: String, size: Int, timeout: Double) throws {
        let deadline = ContinuousClock.now + .seconds(timeout)
        while ContinuousClock.now < deadline {
            var st = stat()
            if lstat(path, &st) == 0 && Int(st.st_size) == size { return }
            usleep(100_000)
        }
        throw BenchFailure("\(path) did not appear with \(size) bytes within \(Int(timeout)) s")
    }

    func dropCaches() {
        sync_all()
        if (try? "3\n".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)) == nil {
            if canDropCaches { Bench.note("mount: cannot write /proc/sys/vm/drop_caches (not root?); cold reads may hit the page cache") }
            canDropCaches = false
        }
    }

    func sync_all() { Glibc.sync() }

    // MARK: Output

    func record(_ workload: String, _ unit: String, plain: Double, mount: Double, gocryptfs: Double? = nil, lowerIsBetter: Bool) {
        figures.append((workload, unit, plain, mount, gocryptfs, lowerIsBetter))
        let u = unit == "mbps" ? "MB/s" : unit == "s" ? "s" : unit.replacingOccurrences(of: "_per_", with: "/")
        let digits = unit == "s" ? 2 : 0
        report("plain_\(workload)_\(unit)", plain, u, digits: digits)
        report("mount_\(workload)_\(unit)", mount, u, digits: digits)
        if let gocryptfs { report("gocryptfs_\(workload)_\(unit)", gocryptfs, u, digits: digits) }
    }

    func report(_ name: String, _ value: Double, _ unit: String, digits: Int = 0) {
        Bench.report(name, value, unit: unit, digits: digits)
    }

    /// The ratio table: lockfs / plain of each figure, and how many times slower lockfs is.
    func table() {
        func fmt(_ v: Double) -> String {
            v >= 100 ? String(Int(v.rounded())) : String(format: v >= 10 ? "%.1f" : "%.2f", v)
        }
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        Bench.note("")
        Bench.note("mount: lockfs (and gocryptfs) vs plain directory (same run; \"slower\" = time / plain time)")
        Bench.note(pad("workload", 16) + pad("unit", 13) + pad("plain", 10) + pad("lockfs", 10) + pad("gocryptfs", 11)
                   + pad("lockfs slower", 15) + "gocryptfs slower")
        for f in figures {
            let slower = { (v: Double) in fmt(f.lowerIsBetter ? v / f.plain : f.plain / v) + "×" }
            let u = f.unit == "mbps" ? "MB/s" : f.unit.replacingOccurrences(of: "_per_", with: "/")
            Bench.note(pad(f.workload, 16) + pad(u, 13) + pad(fmt(f.plain), 10) + pad(fmt(f.mount), 10)
                       + pad(f.gocryptfs.map(fmt) ?? "-", 11) + pad(slower(f.mount), 15) + (f.gocryptfs.map(slower) ?? "-"))
        }
        Bench.note("targets: seq_read_warm ≥ 1000 MB/s; untar ≤ 4× slower; ls_lR ≤ 2× slower")
    }
}
