import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real `lockfs-server serve` process on 127.0.0.1 and an ephemeral port,
/// with its own data directory. Tests talk to it over real HTTP.
public final class ServerProcess: @unchecked Sendable {
    /// The package's debug build of lockfs-server (`swift build --build-tests` builds it).
    public static let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/debug/lockfs-server")

    public let dataDirectory: URL
    public let arguments: [String]
    /// Extra environment of the server and its admin commands (nil removes a variable).
    public let environment: [String: String?]
    public private(set) var process: Process
    public private(set) var port: Int
    private let logURL: URL

    public var baseURL: String { "\(arguments.contains("--tls-cert") ? "https" : "http")://127.0.0.1:\(port)" }

    /// The server's process id (for /proc and signals).
    public var pid: Int32 { process.processIdentifier }

    /// Starts a server; `arguments` are extra `serve` flags (e.g. --open-registration),
    /// `environment` extra variables (e.g. S3 credentials).
    public static func start(dataDirectory: URL? = nil, arguments: [String] = [],
                             environment: [String: String?] = [:]) async throws -> ServerProcess {
        let dir = try dataDirectory ?? makeTemporaryDirectory("server")
        let (process, port, log) = try await launch(dir: dir, arguments: arguments, environment: environment)
        return ServerProcess(dataDirectory: dir, arguments: arguments, environment: environment, process: process, port: port, logURL: log)
    }

    private init(dataDirectory: URL, arguments: [String], environment: [String: String?], process: Process, port: Int, logURL: URL) {
        self.dataDirectory = dataDirectory
        self.arguments = arguments
        self.environment = environment
        self.process = process
        self.port = port
        self.logURL = logURL
    }

    private static func launch(dir: URL, arguments: [String], environment: [String: String?], port: Int = 0) async throws -> (Process, Int, URL) {
        let out = dir.appendingPathComponent("stdout-\(UUID().uuidString).log")
        let err = dir.appendingPathComponent("stderr.log")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        if !FileManager.default.fileExists(atPath: err.path) { FileManager.default.createFile(atPath: err.path, contents: nil) }
        let p = Process()
        p.executableURL = binary
        p.arguments = ["serve", "--data", dir.path, "--listen", "127.0.0.1:\(port)", "--log-level", "warning"] + arguments
        // A crash must end the process at once (the backtracer can take seconds).
        var env = ProcessInfo.processInfo.environment
        env["SWIFT_BACKTRACE"] = "enable=no"
        for (k, v) in environment { env[k] = v }
        p.environment = env
        p.standardOutput = try FileHandle(forWritingTo: out)
        let errHandle = try FileHandle(forWritingTo: err)
        errHandle.seekToEndOfFile()
        p.standardError = errHandle
        try p.run()
        // Poll for the "listening on" line, with a deadline.
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOf: out, encoding: .utf8),
               let range = text.range(of: #"listening on https?://[^ ]*:(\d+)"#, options: .regularExpression) {
                let port = Int(text[range].split(separator: ":").last!)!
                return (p, port, err)
            }
            guard p.isRunning else { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        p.terminate()
        let log = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
        throw TestFailure("lockfs-server did not start: \(log.suffix(2000))")
    }

    /// SIGTERM and wait (then SIGKILL after 10 s): a clean shutdown.
    public func stop() {
        guard process.isRunning else { return }
        process.terminate()
        if !waitForExit(within: .seconds(10)) { kill9() }
    }

    /// SIGKILL: the process dies wherever it is (a crash, a power cut for the process).
    public func kill9() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        _ = waitForExit(within: .seconds(10))
    }

    /// Polls until the process has exited; false if it is still running.
    private func waitForExit(within limit: Duration) -> Bool {
        let deadline = ContinuousClock.now + limit
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
        return !process.isRunning
    }

    /// Starts the server again on the same data directory: on a new port, or
    /// on the same one (`samePort`: devices keep their server URL, as after an
    /// operator's restart).
    public func restart(samePort: Bool = false) async throws {
        stop()
        let (p, port, _) = try await Self.launch(dir: dataDirectory, arguments: arguments, environment: environment,
                                                 port: samePort ? port : 0)
        process = p
        self.port = port
    }

    /// Runs an admin command (`user add NAME`, …) against this server's data
    /// directory, with stdin on /dev/null (so `user remove` without --yes never
    /// waits for a terminal), off the cooperative thread pool, killing it after `timeout`.
    @discardableResult
    public func admin(_ args: [String], timeout: Duration = .seconds(30)) async throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = Self.binary
        // Options go after the subcommand path: insert --data after the verbs.
        let verbs = args.prefix { !$0.hasPrefix("-") }.count
        p.arguments = Array(args.prefix(min(2, verbs))) + ["--data", dataDirectory.path] + storeArguments
            + Array(args.dropFirst(min(2, verbs)))
        var env = ProcessInfo.processInfo.environment
        env["SWIFT_BACKTRACE"] = "enable=no"
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let watchdog = Task {
            try await Task.sleep(for: timeout)
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        defer { watchdog.cancel() }
        let data: Data = await withCheckedContinuation { c in
            DispatchQueue.global().async {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                c.resume(returning: data)
            }
        }
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// The `serve` flags that say where the metadata lives (--metadata and
    /// its --pg-… settings): admin commands must open the same store.
    var storeArguments: [String] {
        var out: [String] = []
        for (i, a) in arguments.enumerated() where ["--metadata", "--pg-passfile"].contains(a) && i + 1 < arguments.count {
            out += [a, arguments[i + 1]]
        }
        return out
    }

    /// The server's log so far (for failure messages).
    public var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: dataDirectory)
    }
}

/// A failure with a message, for `throw` in test helpers.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A fresh directory under the system temp directory.
public func makeTemporaryDirectory(_ prefix: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("lockfs-\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
