import ArgumentParser
import Foundation
import LockClient
import LockFS

#if canImport(Glibc)
import Glibc
#endif

/// `lockfs mount MOUNTPOINT`: the vault as a FUSE file system.
struct Mount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount the vault (returns once the mount is live; -f stays in the foreground).",
        discussion: """
            Every file is visible; contents are fetched and decrypted when read and kept \
            in an LRU cache. Files written here are chunked, encrypted and queued on close, \
            and uploaded in the background. Unmount with `lockfs umount MOUNTPOINT`; \
            queued uploads stay queued for the next mount.
            """)
    @OptionGroup var home: HomeOptions
    @Argument(help: "An existing, empty directory.") var mountpoint: String
    @Flag(name: [.short, .long], help: "Stay in the foreground (for systemd).") var foreground = false
    @Option(name: .customLong("cache-size"), help: ArgumentHelp("The cache's size limit, e.g. 10G (default 10G).", valueName: "SIZE"))
    var cacheSize: String?
    @Option(name: .customLong("fetch-timeout"), help: ArgumentHelp(
        "Seconds a read waits for content that is not local before failing with EIO (default 20).", valueName: "SECONDS"))
    var fetchTimeout: Double?
    @Option(name: .customLong("initial-sync-timeout"), help: ArgumentHelp(
        "Seconds mount waits for the server's journal to be applied before it returns (default 60; 0: do not wait).",
        valueName: "SECONDS"))
    var initialSyncTimeout: Double?
    @Option(name: .short, help: ArgumentHelp("FUSE mount options, comma-separated (allow_other, ro, …).", valueName: "OPTIONS"))
    var options: [String] = []
    @Option(name: .customLong("ready-fd"), help: .hidden) var readyFD: Int32?

    func validate() throws {
        if let cacheSize, parseSize(cacheSize) == nil { throw ValidationError("--cache-size must be a size such as 512M or 10G") }
        if let initialSyncTimeout, !(initialSyncTimeout >= 0) { throw ValidationError("--initial-sync-timeout must be 0 or more seconds") }
    }

    /// 60 s unless --initial-sync-timeout says otherwise.
    var initialSyncLimit: Duration { .milliseconds(Int((initialSyncTimeout ?? 60) * 1000)) }

    func run() async throws {
        let path = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw CLIError.usage("\(mountpoint) is not a directory; create it first (mkdir -p \(mountpoint))")
        }
        if foreground {
            try await serve(path)
        } else {
            try daemonize(path)
        }
    }

    /// Mounts and serves in this process until unmounted or signalled.
    func serve(_ path: String) async throws {
        let opened: OpenEngine
        do {
            opened = try OpenEngine(home, cacheLimit: cacheSize.flatMap(parseSize),
                                    fetchTimeout: fetchTimeout.map { .milliseconds(Int($0 * 1000)) })
        } catch {
            ready("error: \(ExitCodes.failure(for: error)?.message ?? "\(error)")")
            throw error
        }
        let engine = opened.engine
        await catchUp(opened)
        engine.start()
        let fs = LockFileSystem(engine: engine)
        let fuseOptions = options.flatMap { $0.split(separator: ",").map(String.init) }.filter { !$0.isEmpty }
        let fd = readyFD
        let outcome: Result<Int32, any Error> = await withCheckedContinuation { c in
            let thread = Thread {
                do {
                    let r = try fs.run(mountpoint: path, options: fuseOptions) {
                        Mount.signalReady(fd, "ok")
                        if fd == nil { FileHandle.standardError.write(Data("lockfs: mounted \(path)\n".utf8)) }
                    }
                    c.resume(returning: .success(r))
                } catch {
                    Mount.signalReady(fd, "error: \(ExitCodes.failure(for: error)?.message ?? "\(error)")")
                    c.resume(returning: .failure(error))
                }
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        await engine.stop()
        let queued = engine.status().queuedOperations
        if queued > 0 { printWarning("\(queued) change(s) still queued; the next mount or `lockfs sync` sends them") }
        if case .failure(let error) = outcome { throw error }
        if case .success(let r) = outcome, r < 0 { throw LockError.io(errno: -r, "the FUSE session ended") }
    }

    /// Before the mount goes live: applies the journal up to the server's
    /// latest entry (docs/design.md, "The first pull of a mount"), within
    /// --initial-sync-timeout, reporting progress and the outcome to the
    /// waiting `lockfs mount` (or, in the foreground, on stderr).
    func catchUp(_ opened: OpenEngine) async {
        let limit = initialSyncLimit
        guard limit > .zero else { return }
        // One quick retry: a server that refuses connections means offline, at once.
        let probe = RetryingRemote(wrapping: opened.connection.http, policy: RetryPolicy(attempts: 2))
        let fd = readyFD
        let bar = fd == nil ? ProgressLine() : nil
        let outcome = await opened.engine.catchUp(within: limit, through: probe) { applied, total in
            guard total > 0 else { return }
            if let fd {
                Mount.report(fd, "progress \(applied) \(total)")
            } else {
                bar?.show("syncing", done: applied, total: total, bytes: false, note: "journal entries")
            }
        }
        bar?.end()
        let seconds = initialSyncTimeout.map { $0 == $0.rounded() ? String(Int($0)) : String($0) } ?? "60"
        let note: String
        switch outcome {
        case .current:
            return
        case .offline(let error):
            let why = error == .offline ? "the server cannot be reached" : (ExitCodes.failure(for: error)?.message ?? "\(error)")
            note = "offline: \(why); mounted this device's copy of the vault, changes sync once the server answers"
        case .partial(let applied, let total?):
            note = "the first sync took longer than \(seconds) s: mounted with \(applied) of \(total) new journal entries applied; the rest arrive in the background"
        case .partial(_, nil):
            note = "the server did not answer within \(seconds) s: mounted this device's copy of the vault; it syncs in the background once the server answers"
        case .alarm(let why):
            note = "security check failed: \(why). Mounted this device's copy of the vault; nothing more is synced (see `lockfs status`)"
        }
        FileHandle.standardError.write(Data("lockfs: \(note)\n".utf8))
        if let fd { Mount.report(fd, "note \(note)") }
    }

    func ready(_ message: String) { Mount.signalReady(readyFD, message) }

    /// A line to the waiting `lockfs mount` before the final "ok" or "error: …".
    static func report(_ fd: Int32, _ line: String) {
        let text = line + "\n"
        _ = text.withCString { write(fd, $0, strlen($0)) }
    }

    static func signalReady(_ fd: Int32?, _ message: String) {
        guard let fd else { return }
        let line = message + "\n"
        _ = line.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }

    /// Starts `lockfs mount -f` in a new session and returns once it reports the mount live.
    func daemonize(_ path: String) throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw LockError.io(errno: errno, "pipe") }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        let clientHome = home.clientHome
        try clientHome.createDirectories()
        let log = clientHome.dataDirectory.appendingPathComponent("mount.log").path
        var args = ["lockfs", "mount", path, "--foreground", "--ready-fd", String(fds[1]), "--home", clientHome.dataDirectory.path]
        if clientHome.configDirectory != clientHome.dataDirectory {
            // XDG layout: pass the environment through instead of --home.
            args.removeLast(2)
        }
        if let cacheSize { args += ["--cache-size", cacheSize] }
        if let fetchTimeout { args += ["--fetch-timeout", String(fetchTimeout)] }
        if let initialSyncTimeout { args += ["--initial-sync-timeout", String(initialSyncTimeout)] }
        for o in options { args += ["-o", o] }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // The served process must hold nothing of ours but the ready pipe: a
        // caller waiting for our exit may watch an inherited descriptor.
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let fd = Int32(entry), fd > 2, fd != fds[1] { posix_spawn_file_actions_addclose(&actions, fd) }
        }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(0x80)) // POSIX_SPAWN_SETSID: survive the shell
        var pid: pid_t = 0
        let cargs = args.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        let rc = posix_spawn(&pid, "/proc/self/exe", &actions, &attr, cargs, environ)
        close(fds[1])
        guard rc == 0 else { close(fds[0]); throw LockError.io(errno: rc, "start the mount process") }
        // Lines until "ok" or "error: …": "progress APPLIED TOTAL" while the first sync runs
        // (a bar on a terminal), "note TEXT" for what the user must know (stderr).
        let bar = ProgressLine()
        var text = ""
        var line = [UInt8]()
        var byte: UInt8 = 0
        while read(fds[0], &byte, 1) == 1 {
            if byte != 10 { line.append(byte); continue }
            let received = String(decoding: line, as: UTF8.self)
            line = []
            if received.hasPrefix("progress ") {
                let n = received.split(separator: " ").dropFirst().compactMap { Int($0) }
                if n.count == 2 { bar.show("syncing", done: n[0], total: n[1], bytes: false, note: "journal entries") }
            } else if received.hasPrefix("note ") {
                bar.end()
                FileHandle.standardError.write(Data("lockfs: \(received.dropFirst("note ".count))\n".utf8))
            } else {
                text = received
                break
            }
        }
        bar.end()
        close(fds[0])
        guard text == "ok" else {
            var status: Int32 = 0
            waitpid(pid, &status, WNOHANG)
            throw CLIError.usage(text.isEmpty ? "the mount process ended early; see \(log)" : String(text.dropFirst("error: ".count)))
        }
        print("mounted \(path) (process \(pid); log \(log))")
    }
}

/// `lockfs umount MOUNTPOINT`.
struct Umount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unmount; queued uploads stay queued for the next mount.")
    @OptionGroup var home: HomeOptions
    @Argument(help: "The mount point.") var mountpoint: String

    func run() async throws {
        let path = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
        p.arguments = ["-u", path]
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw CLIError.usage("could not unmount \(path) (is it a lockfs mount? is a file open there?)") }
        // Wait for the mount process to let go of the home.
        let deadline = ContinuousClock.now + .seconds(30)
        while OpenEngine.isBusy(home.clientHome) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        print("unmounted \(path)")
    }
}
