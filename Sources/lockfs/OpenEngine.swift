import Foundation
import LockClient
import LockCrypto
import LockWire

#if canImport(Glibc)
import Glibc
#endif

/// An engine opened by a command, holding the home's lock so that no two
/// processes (a mount and a command, say) drive one index and outbox at once.
struct OpenEngine {
    let engine: Engine
    let credentials: DeviceCredentials
    /// The engine's way to the server (its `remote` retries a call for up to 17 s).
    let connection: Connection
    private let lockFD: Int32

    /// Opens the engine of `home`.
    /// - Throws: `CLIError.busy` when another lockfs process holds this home.
    init(_ home: HomeOptions, cacheLimit: Int? = nil, fetchTimeout: Duration? = nil) throws {
        let credentials = try home.credentials()
        let clientHome = home.clientHome
        let fd = try Self.lock(clientHome)
        var options = EngineOptions()
        if let cacheLimit { options.cacheLimit = cacheLimit }
        if let fetchTimeout { options.fetchTimeout = fetchTimeout }
        // Retries within a call give up after 9–17 s (a read then fails with EIO unless
        // --fetch-timeout came first); the loops retry forever on their own. Both wait at
        // most Backoff.reconnect.cap between attempts, so a server that is back is seen at once.
        let policy = RetryPolicy(attempts: 12)
        connection = Connection(credentials, policy: policy)
        engine = try Engine(home: clientHome, credentials: credentials, remote: connection.remote, options: options)
        Self.keepNewGenerations(of: engine, in: clientHome.credentialsFile, device: credentials.device)
        self.credentials = credentials
        lockFD = fd
    }

    /// Saves the key generations the engine learns (a rotation made by
    /// another device) in device.json, so that the next command starts with
    /// them; under the credentials lock, read again first.
    static func keepNewGenerations(of engine: Engine, in file: URL, device: DeviceID) {
        engine.setNewGenerationsHandler { try saveGenerations($0, in: file, device: device) }
    }

    /// Keeps `generations` (newest first) in the credentials file `file` if
    /// it is still `device`'s and holds fewer; under the credentials lock,
    /// read again first (a mount and a command may both learn them).
    static func saveGenerations(_ generations: [VaultKeys], in file: URL, device: DeviceID) throws {
        try HomeOptions.withCredentialsLock(file) {
            var saved = try DeviceCredentials.load(from: file)
            guard saved.device == device, generations.count > saved.generations.count else { return }
            saved.generations = generations
            try saved.save(to: file)
        }
    }

    /// Takes the home's `engine.lock` for the rest of this process (released
    /// when it exits), so that no other lockfs process drives its index.
    /// - Throws: `CLIError.busy` when another lockfs process holds this home.
    static func lock(_ home: ClientHome) throws -> Int32 {
        try home.createDirectories()
        let lockPath = home.dataDirectory.appendingPathComponent("engine.lock").path
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LockError.io(errno: errno, "open \(lockPath)") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw CLIError.busy(home.dataDirectory.path)
        }
        return fd
    }

    /// Whether another process holds the home (a running mount).
    static func isBusy(_ home: ClientHome) -> Bool {
        let fd = open(home.dataDirectory.appendingPathComponent("engine.lock").path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return flock(fd, LOCK_EX | LOCK_NB) != 0
    }

    /// Waits until every local change is on the server, showing progress on
    /// a terminal; gives up after `timeout` if one is set.
    func waitUntilSynced(timeout: Duration?, quiet: Bool = false) async throws {
        engine.start()
        let tty = isatty(STDERR_FILENO) == 1 && !quiet
        let progress = Task {
            var last = ""
            while !Task.isCancelled {
                let s = engine.status()
                var line = "uploading: \(s.queuedOperations) change(s), \(formatBytes(s.queuedBytes)) queued"
                if !s.online, let e = s.lastError { line += " — waiting for the server (\(e))" }
                if tty && line != last { FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8)); last = line }
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
        defer {
            progress.cancel()
            if tty { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        }
        if let timeout {
            try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask { try await engine.waitUntilSynced(); return true }
                group.addTask { try await Task.sleep(for: timeout); return false }
                let done = try await group.next()!
                group.cancelAll()
                if !done { throw CLIError.timedOut(engine.status().queuedOperations) }
            }
        } else {
            try await engine.waitUntilSynced()
        }
    }
}

/// "1.5 MiB".
func formatBytes(_ n: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n)
    var u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
}

/// "10G", "512M", "100k", "4096" → bytes.
func parseSize(_ text: String) -> Int? {
    let t = text.trimmingCharacters(in: .whitespaces).uppercased()
    let multipliers: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var digits = t
    var m = 1
    if t.hasSuffix("IB") { digits = String(t.dropLast(2)) } else if t.hasSuffix("B") { digits = String(t.dropLast()) }
    if let last = digits.last, let mult = multipliers[last] { m = mult; digits.removeLast() }
    guard let n = Double(digits), n >= 0 else { return nil }
    return Int(n * Double(m))
}
