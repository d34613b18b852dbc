import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A failure of the server benchmark, with a message.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The release `lockfs-server serve` the server figures run against: its own
/// temporary directory, 127.0.0.1 and an ephemeral port, open registration.
final class BenchServer: @unchecked Sendable {
    let directory: URL
    let process: Process
    let port: Int
    private let stderrURL: URL

    var baseURL: String { "http://127.0.0.1:\(port)" }
    var pid: Int32 { process.processIdentifier }

    /// `lockfs-server` next to this executable (both are in .build/release).
    static func binary() throws -> URL {
        var me = CommandLine.arguments[0]
        if !me.contains("/") {
            // Found through PATH: ask the kernel where we are.
            me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? me
        }
        let url = URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("lockfs-server")
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw BenchFailure("no lockfs-server at \(url.path); build it: swift build -c release --product lockfs-server")
        }
        return url
    }

    /// Starts the server and waits (20 s at most) for its "listening on" line.
    /// - Parameters:
    ///   - arguments: extra `serve` flags (`--metadata`, `--blobs`, …).
    ///   - environment: extra variables (nil removes one), e.g. S3 credentials.
    static func start(arguments: [String] = [], environment: [String: String?] = [:]) async throws -> BenchServer {
        let binary = try binary()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lockfs-bench-\(UUID().uuidString)")
        let data = dir.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let out = dir.appendingPathComponent("stdout.log"), err = dir.appendingPathComponent("stderr.log")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)

        let p = Process()
        p.executableURL = binary
        p.arguments = ["serve", "--data", data.path, "--listen", "127.0.0.1:0", "--open-registration", "--log-level", "warning",
                       // One account holds the 1,000 idle long-polls of the memory figure.
                       "--long-polls-per-account", "\(ServerBench.longPolls)"] + arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        p.standardInput = FileHandle.nullDevice
        do {
            try p.run()
        } catch {
            try? FileManager.default.removeItem(at: dir)
            throw error
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline, p.isRunning {
            // First stdout line: "lockfs-server listening on http://127.0.0.1:PORT (data: …)".
            if let text = try? String(contentsOf: out, encoding: .utf8), let newline = text.firstIndex(of: "\n") {
                let line = text[..<newline]
                if let range = line.range(of: #"127\.0\.0\.1:[0-9]+"#, options: .regularExpression),
                   let port = Int(line[range].split(separator: ":").last!) {
                    return BenchServer(directory: dir, process: p, port: port, stderrURL: err)
                }
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        let log = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
        let stdout = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(at: dir)
        throw BenchFailure("lockfs-server did not start: \(stdout.prefix(500)) \(log.suffix(2000))")
    }

    private init(directory: URL, process: Process, port: Int, stderrURL: URL) {
        self.directory = directory
        self.process = process
        self.port = port
        self.stderrURL = stderrURL
    }

    /// The server's stderr so far (for failure messages).
    var log: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }

    /// A numeric field of /proc/PID/status (VmRSS and VmHWM are in kB); nil if unreadable.
    func statusKB(_ field: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return Int(line.dropFirst(field.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "")
        }
        return nil
    }

    /// Resident set size in MiB.
    func rssMiB() throws -> Double {
        guard let kb = statusKB("VmRSS") else { throw BenchFailure("cannot read VmRSS of pid \(pid)") }
        return Double(kb) / 1024
    }

    /// Threads of the server process now.
    var threads: Int? { statusKB("Threads") }

    /// SIGTERM, then wait (SIGKILL after `grace`); returns how long the clean
    /// shutdown took, or nil if it had to be killed. Removes the directory.
    @discardableResult
    func stop(grace: Duration = .seconds(15)) -> Duration? {
        defer { try? FileManager.default.removeItem(at: directory) }
        guard process.isRunning else { return .zero }
        let start = ContinuousClock.now
        kill(pid, SIGTERM)
        while process.isRunning && ContinuousClock.now - start < grace { usleep(10_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return ContinuousClock.now - start
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Raises this process's open-file limit (children inherit it) to at least `wanted`.
/// - Returns: the soft limit in force afterwards.
@discardableResult
func raiseOpenFileLimit(to wanted: Int) -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    if limit.rlim_cur < rlim_t(wanted) {
        limit.rlim_cur = min(rlim_t(wanted), limit.rlim_max)
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return Int(limit.rlim_cur)
}
