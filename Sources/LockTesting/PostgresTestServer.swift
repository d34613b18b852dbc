import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL cluster for tests: made with initdb in a temp
/// directory, listening on 127.0.0.1 and a free port (and a unix socket in
/// its own directory), removed when the test process ends.
///
/// As root the cluster runs as the `postgres` user (PostgreSQL refuses to
/// run as root). TCP connections need the superuser's password (SCRAM), so
/// the password path is exercised for real; the unix socket trusts local
/// users. `shared` is one cluster per test process; tests that stop or
/// restart PostgreSQL make their own with `start()`.
///
/// Without PostgreSQL installed, `start()` throws a message that names
/// `make test` (which installs it): tests never skip silently.
public final class PostgresTestServer: @unchecked Sendable {
    /// The superuser; its password is `password`.
    public let user = "lockfs"
    public let password: String
    public let port: Int
    /// The directory of the unix socket (`.s.PGSQL.PORT`).
    public let socketDirectory: String
    public let root: URL
    let binDirectory: String
    let dataDirectory: String
    private let lock = NSLock()
    private var nextDatabase = 0
    /// Whether commits are flushed to disk (fsync, synchronous_commit): off for
    /// tests (speed), on for benchmarks that compare with SQLite's synced commits.
    public let durable: Bool

    /// One cluster for the whole test process, started on first use.
    public static func shared() async throws -> PostgresTestServer {
        try await sharedCluster.value
    }

    private static let sharedCluster = Task { try await PostgresTestServer.start() }

    /// Clusters to stop when the test process exits.
    private static let running = LockedBox([PostgresTestServer]())

    /// A `postgres://` URL for `database` over TCP (the password is not in it).
    public func url(database: String) -> String {
        "postgres://\(user)@127.0.0.1:\(port)/\(database)?sslmode=disable"
    }

    /// A `postgres://` URL for `database` over the unix socket.
    public func socketURL(database: String) -> String {
        "postgres://\(user)@/\(database)?host=\(socketDirectory)"
    }

    /// Makes, starts and returns a new cluster.
    /// - Parameter durable: flush every commit to disk as a production server does (default: no, for speed).
    public static func start(durable: Bool = false) async throws -> PostgresTestServer {
        let bin = try findBinaries()
        removeStaleClusters()
        let root = URL(fileURLWithPath: "/tmp/lockfs-pgtest-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        // The postgres user must be able to enter the directory.
        chmod(root.path, 0o755)
        try "\(getpid())\n".write(to: root.appendingPathComponent("owner.pid"), atomically: true, encoding: .utf8)
        let data = root.appendingPathComponent("data").path
        let password = UUID().uuidString
        let pwfile = root.appendingPathComponent("pwfile").path
        try password.write(toFile: pwfile, atomically: true, encoding: .utf8)
        let logFile = root.appendingPathComponent("postgres.log").path
        FileManager.default.createFile(atPath: logFile, contents: nil)
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        chmod(data, 0o700)
        if getuid() == 0 {
            guard let pw = getpwnam("postgres") else {
                throw TestFailure("PostgreSQL's `postgres` user is missing; install the Debian package postgresql (`make test` does)")
            }
            for path in [data, pwfile, logFile] { chown(path, pw.pointee.pw_uid, pw.pointee.pw_gid) }
        }
        let initdb = try await runAsOwner(bin + "/initdb", ["-D", data, "-U", "lockfs", "--pwfile", pwfile,
                                                            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                                                            "--locale=C", "--no-sync"], timeout: .seconds(120))
        guard initdb.status == 0 else {
            throw TestFailure("initdb failed (exit \(initdb.status)): \(initdb.stdout.suffix(2000))")
        }
        var lastError = ""
        for _ in 0..<5 {
            let port = try freePort()
            let server = PostgresTestServer(root: root, bin: bin, data: data, port: port, password: password, durable: durable)
            do {
                try await server.startServer()
                running.withLock { $0.append(server) }
                installExitHandler()
                return server
            } catch {
                lastError = "\(error)"
            }
        }
        throw TestFailure("PostgreSQL did not start: \(lastError)")
    }

    private init(root: URL, bin: String, data: String, port: Int, password: String, durable: Bool) {
        self.durable = durable
        self.root = root
        self.binDirectory = bin
        self.dataDirectory = data
        self.socketDirectory = data
        self.port = port
        self.password = password
    }

    /// `pg_ctl start` (waits until it accepts connections).
    public func startServer() async throws {
        let options = "-p \(port) -k \(socketDirectory) -c listen_addresses=127.0.0.1 -c max_connections=400 "
            + (durable ? "-c shared_buffers=32MB" : "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB")
        let r = try await Self.runAsOwner(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-l", root.appendingPathComponent("postgres.log").path,
                                                                    "-o", options, "-w", "-t", "60", "start"], timeout: .seconds(90))
        guard r.status == 0 else { throw TestFailure("pg_ctl start failed (exit \(r.status)): \(r.stdout) \(r.stderr) \(log.suffix(2000))") }
    }

    /// `pg_ctl stop -m fast`: open connections are ended (as in a restart for maintenance).
    public func stopServer(mode: String = "fast") async throws {
        let r = try await Self.runAsOwner(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", mode, "-w", "-t", "60", "stop"],
                                          timeout: .seconds(90))
        guard r.status == 0 else { throw TestFailure("pg_ctl stop failed (exit \(r.status)): \(r.stdout) \(r.stderr)") }
    }

    /// `pg_ctl restart -m fast`.
    public func restartServer() async throws {
        try await stopServer()
        try await startServer()
    }

    /// The server's log so far (for failure messages).
    public var log: String { (try? String(contentsOf: root.appendingPathComponent("postgres.log"), encoding: .utf8)) ?? "" }

    /// Creates a fresh, empty database and returns its name.
    public func createDatabase(_ prefix: String = "t") async throws -> String {
        let name: String = lock.withLock {
            nextDatabase += 1
            return "\(prefix)_\(getpid())_\(nextDatabase)"
        }
        try await psql("CREATE DATABASE \(name)")
        return name
    }

    /// Drops a database, ending any connection to it.
    public func dropDatabase(_ name: String) async throws {
        try await psql("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// Runs SQL with psql over the unix socket as the superuser; returns its output.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") async throws -> String {
        let r = try await runProcess(URL(fileURLWithPath: binDirectory + "/psql"),
                                     ["-h", socketDirectory, "-p", String(port), "-U", user, "-d", database,
                                      "-v", "ON_ERROR_STOP=1", "-At", "-c", sql], timeout: .seconds(60))
        guard r.status == 0 else { throw TestFailure("psql \(sql): exit \(r.status): \(r.stderr)") }
        return r.stdout
    }

    /// Stops the cluster at once and removes its directory.
    public func destroy() {
        let r = Self.runSync(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", "immediate", "-w", "stop"])
        _ = r
        try? FileManager.default.removeItem(at: root)
    }

    // MARK: Helpers

    /// initdb and pg_ctl of the newest PostgreSQL under /usr/lib/postgresql.
    static func findBinaries() throws -> String {
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [])
            .compactMap(Int.init).sorted(by: >)
        for v in versions where FileManager.default.isExecutableFile(atPath: "\(base)/\(v)/bin/initdb") {
            return "\(base)/\(v)/bin"
        }
        throw TestFailure("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin): run `make test`, which installs the Debian package postgresql, or `apt-get install postgresql`")
    }

    /// A port that was free a moment ago on 127.0.0.1.
    static func freePort() throws -> Int {
        #if canImport(Glibc)
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let s = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard s >= 0 else { throw TestFailure("socket: errno \(errno)") }
        defer { close(s) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, len) == 0 && getsockname(s, $0, &len) == 0 }
        }
        guard ok else { throw TestFailure("bind: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Runs a PostgreSQL tool as the cluster's owner (`postgres` when we are root).
    ///
    /// Not with Foundation's Process: `pg_ctl start` leaves a daemon that
    /// would inherit Process's exit-watching socket (and any other open
    /// descriptor of this process), so Process would never see the tool
    /// exit. posix_spawn closes every descriptor above stderr in the child.
    static func runAsOwner(_ tool: String, _ args: [String], timeout: Duration) async throws -> ProcessResult {
        let argv = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--", tool] + args : [tool] + args
        let dir = try makeTemporaryDirectory("pgtool")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("output").path
        let status: Int32 = await withCheckedContinuation { c in
            DispatchQueue.global().async { c.resume(returning: spawnAndWait(argv, output: out)) }
        }
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        return ProcessResult(status: status, stdout: text, stderr: "")
    }

    /// posix_spawn with stdin from /dev/null, stdout and stderr to `output`,
    /// no other descriptors; waits and returns the exit status (-1 if it could not start).
    static func spawnAndWait(_ argv: [String], output: String) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        addCloseFrom(&actions, 3)
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for a in cArgs { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, &cArgs, environ)
        guard rc == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED / WEXITSTATUS by hand (macros do not import).
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// glibc's posix_spawn_file_actions_addclosefrom_np (2.34+), which Swift's Glibc module does not import.
    private static func addCloseFrom(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ fd: Int32) {
        typealias Fn = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return }
        _ = unsafeBitCast(symbol, to: Fn.self)(actions, fd)
    }

    /// Synchronous variant for the exit handler.
    static func runSync(_ tool: String, _ args: [String]) -> Int32 {
        let argv = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--", tool] + args : [tool] + args
        return spawnAndWait(argv, output: "/dev/null")
    }

    /// Clusters left by test processes that died without cleaning up.
    static func removeStaleClusters() {
        let tmp = URL(fileURLWithPath: "/tmp")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: tmp.path)) ?? [] where name.hasPrefix("lockfs-pgtest-") {
            let dir = tmp.appendingPathComponent(name)
            guard let text = try? String(contentsOf: dir.appendingPathComponent("owner.pid"), encoding: .utf8),
                  let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  kill(pid, 0) != 0 && errno == ESRCH else { continue }
            if let bin = try? findBinaries() {
                _ = runSync(bin + "/pg_ctl", ["-D", dir.appendingPathComponent("data").path, "-m", "immediate", "-w", "stop"])
            }
            try? FileManager.default.removeItem(at: dir)
        }
    }

    private static let exitHandlerInstalled = LockedBox(false)

    private static func installExitHandler() {
        let first = exitHandlerInstalled.withLock { installed -> Bool in
            defer { installed = true }
            return !installed
        }
        guard first else { return }
        atexit {
            for server in PostgresTestServer.running.withLock({ $0 }) { server.destroy() }
        }
    }
}

/// A lock-protected value.
final class LockedBox<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
