import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real S3-compatible server for tests: moto's server mode
/// (`moto_server -H 127.0.0.1 -p PORT`, installed into .build/venv by
/// `make test`) on an ephemeral loopback port.
///
/// moto keeps everything in memory and does not check signatures (the
/// signer is proved by Tests/Vectors/sigv4.json instead). It runs under a
/// small Python watcher that ends it when the test process goes away, even
/// after a crash or kill -9, so no server outlives its tests.
public final class S3TestServer: @unchecked Sendable {
    /// .build/venv/bin/moto_server of this package (`make test` installs it).
    public static let venvBinary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/venv/bin/moto_server")

    public let port: Int
    private let process: Process
    private let logURL: URL

    /// "http://127.0.0.1:PORT".
    public var endpoint: String { "http://127.0.0.1:\(port)" }

    /// The server's process id (the watcher's; stopping it stops moto).
    public var pid: Int32 { process.processIdentifier }

    /// One server for the whole test process, started on first use.
    public static func shared() async throws -> S3TestServer {
        try await SharedServer.instance.server()
    }

    /// Starts the shared server once, however many tests ask at the same time.
    private actor SharedServer {
        static let instance = SharedServer()
        var starting: Task<S3TestServer, any Error>?
        func server() async throws -> S3TestServer {
            if let starting, let running = try? await starting.value, running.process.isRunning { return running }
            let task = Task { try await S3TestServer.start() }
            starting = task
            return try await task.value
        }
    }

    /// Where moto_server is: $LOCKFS_MOTO_SERVER, else .build/venv/bin/moto_server.
    /// - Throws: a failure naming `make test` when it is not installed.
    public static func binary() throws -> URL {
        if let path = ProcessInfo.processInfo.environment["LOCKFS_MOTO_SERVER"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        guard FileManager.default.isExecutableFile(atPath: venvBinary.path) else {
            throw TestFailure("moto_server is not installed at \(venvBinary.path): the S3 tests need it. "
                              + "Run `make test` (it installs moto[server] into .build/venv), or set LOCKFS_MOTO_SERVER")
        }
        return venvBinary
    }

    /// Starts a fresh server and waits until it answers.
    public static func start() async throws -> S3TestServer {
        let moto = try binary()
        let python = moto.deletingLastPathComponent().appendingPathComponent("python3")
        var lastLog = ""
        for _ in 0..<3 {  // a free port can be taken between choosing it and binding it: try again
            let port = try freePort()
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("lockfs-moto-\(UUID().uuidString).log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            let p = Process()
            // The watcher: runs moto as its child, ends it on SIGTERM or when its parent (this test process) is gone.
            let watcher = """
                import os, signal, subprocess, sys, time
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])  # the test process may have it blocked
                parent = os.getppid()
                moto = subprocess.Popen(sys.argv[1:])
                def stop(*_):
                    moto.kill()  # its SIGTERM handler does not end its server loop; it holds nothing worth keeping
                    moto.wait()
                    sys.exit(0)
                signal.signal(signal.SIGTERM, stop)
                while moto.poll() is None:
                    if os.getppid() != parent: stop()
                    time.sleep(0.2)
                """
            let interpreter = FileManager.default.isExecutableFile(atPath: python.path) ? python.path : "/usr/bin/python3"
            p.executableURL = URL(fileURLWithPath: interpreter)
            p.arguments = ["-c", watcher, moto.path, "-H", "127.0.0.1", "-p", String(port)]
            let handle = try FileHandle(forWritingTo: log)
            p.standardOutput = handle
            p.standardError = handle
            p.standardInput = FileHandle.nullDevice
            try p.run()
            let server = S3TestServer(port: port, process: p, logURL: log)
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline && p.isRunning {
                if let status = try? rawRequest(port: port, method: "GET", path: "/"), status > 0 { return server }
                try await Task.sleep(for: .milliseconds(100))
            }
            lastLog = server.log
            server.stop()
        }
        throw TestFailure("moto_server did not start: \(lastLog.suffix(2000))")
    }

    private init(port: Int, process: Process, logURL: URL) {
        self.port = port
        self.process = process
        self.logURL = logURL
    }

    /// Creates a fresh bucket with a random name and returns the name.
    public func makeBucket() throws -> String {
        let name = "lockfs-test-\(UUID().uuidString.lowercased().prefix(13))"
        let status = try Self.rawRequest(port: port, method: "PUT", path: "/\(name)")
        guard status == 200 else { throw TestFailure("moto did not create bucket \(name): HTTP \(status)\n\(log.suffix(1000))") }
        return name
    }

    /// Stops the server (SIGTERM to the watcher, which ends moto) and waits for it.
    public func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// moto's output so far (for failure messages).
    public var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: logURL)
    }

    /// A port nobody listens on right now (bound to port 0, then released).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw TestFailure("bind: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// One HTTP/1.1 request with no body over a fresh loopback connection;
    /// returns the status code. moto checks no signature, but answers a
    /// request without any Authorization as anonymous (403 on objects), so
    /// a well-formed, unsigned one is sent. Blocking, with 5-second socket time-outs.
    public static func rawRequest(port: Int, method: String, path: String) throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { throw TestFailure("connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
        let authorization = "AWS4-HMAC-SHA256 Credential=lockfs-test/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
        let request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAuthorization: \(authorization)\r\n"
            + "Content-Length: 0\r\nConnection: close\r\n\r\n"
        let sent = request.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress!, $0.count - 1, 0) }
        guard sent == request.utf8.count else { throw TestFailure("send: \(String(cString: strerror(errno)))") }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = recv(fd, &buffer, buffer.count, 0)
        guard n > 12 else { throw TestFailure("no HTTP answer from 127.0.0.1:\(port)") }
        // "HTTP/1.1 200 OK": the three digits after the first space.
        let line = String(decoding: buffer[0..<n], as: UTF8.self)
        guard let space = line.firstIndex(of: " "), let code = Int(line[line.index(after: space)...].prefix(3)) else {
            throw TestFailure("not an HTTP answer from 127.0.0.1:\(port): \(line)")
        }
        return code
    }
}
