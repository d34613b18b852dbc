import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A finished child process: its exit status and what it wrote.
public struct ProcessResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs `binary` with stdin on /dev/null and output to files (no pipe can
/// fill up while it runs), off the cooperative pool, killing it after `timeout`.
/// Crashes end it at once (no backtracer).
public func runProcess(_ binary: URL, _ arguments: [String], environment extra: [String: String?] = [:],
                       timeout: Duration = .seconds(60)) async throws -> ProcessResult {
    let (p, out, err) = try spawnProcess(binary, arguments, environment: extra)
    defer { try? FileManager.default.removeItem(at: out.deletingLastPathComponent()) }
    let watchdog = Task {
        try await Task.sleep(for: timeout)
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    }
    defer { watchdog.cancel() }
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        DispatchQueue.global().async { p.waitUntilExit(); c.resume() }
    }
    return ProcessResult(status: p.terminationStatus,
                         stdout: String(decoding: (try? Data(contentsOf: out)) ?? Data(), as: UTF8.self),
                         stderr: String(decoding: (try? Data(contentsOf: err)) ?? Data(), as: UTF8.self))
}

/// Starts `binary` with stdin on /dev/null and stdout and stderr to files in
/// a fresh temporary directory; returns the running process and the two files.
public func spawnProcess(_ binary: URL, _ arguments: [String], environment extra: [String: String?] = [:]) throws -> (Process, stdout: URL, stderr: URL) {
    let p = Process()
    p.executableURL = binary
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env["SWIFT_BACKTRACE"] = "enable=no"
    for (k, v) in extra { env[k] = v }
    p.environment = env
    let dir = try makeTemporaryDirectory("process")
    let out = dir.appendingPathComponent("stdout"), err = dir.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    p.standardOutput = try FileHandle(forWritingTo: out)
    p.standardError = try FileHandle(forWritingTo: err)
    p.standardInput = FileHandle.nullDevice
    try p.run()
    return (p, out, err)
}
