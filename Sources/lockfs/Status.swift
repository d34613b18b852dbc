import ArgumentParser
import Foundation
import LockClient

/// `lockfs status`: connection, queue, cache, pins and any integrity alarm.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the state of this device's sync.")
    @OptionGroup var home: HomeOptions
    @Flag(help: "Print JSON (for scripts).") var json = false
    @Flag(help: "Do not contact the server.") var offline = false
    @Argument(help: "Files or folders in a lockfs mount: their state, and the mount's.") var paths: [String] = []

    struct Report: Codable {
        var server: String
        var user: String
        var device: String
        var online: Bool
        var lastError: String?
        var journalSeq: UInt64
        var queuedOperations: Int
        var queuedBytes: Int
        var cacheBytes: Int
        var cacheLimitBytes: Int
        var pinnedBytes: Int
        var integrityAlarm: String?
        var mountedElsewhere: Bool
        /// Journal entries ignored as wrongly signed (docs/security.md, "Device keys").
        var ignoredEntries: Int = 0
        var lastIgnoredEntry: String?
        /// The chain head at `journalSeq`, short: compare it between devices.
        var head: String?
        /// Devices not heard from for days ("name (age)").
        var silentDevices: [String] = []
        /// The last `lockfs verify` (nil: never).
        var lastVerify: Engine.AuditReport?
    }

    /// The last `lockfs verify` of `home`, if any.
    static func lastVerify(_ home: ClientHome) -> Engine.AuditReport? {
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .iso8601
        return (try? Data(contentsOf: home.lastVerifyFile)).flatMap { try? dec.decode(Engine.AuditReport.self, from: $0) }
    }

    static func verifyLine(_ r: Engine.AuditReport?) -> String {
        guard let r else { return "verified:   never (lockfs verify checks the server's copy)" }
        let when = ISO8601DateFormatter().string(from: r.finishedAt)
        return "verified:   \(when), \(r.chunksChecked) of \(r.chunksTotal) chunk(s): "
            + (r.ok ? "ok" : "\(r.missing.count) missing, \(r.corrupt.count) corrupt")
    }

    /// What the user should know about a journal position and silent devices.
    static func journalLines(seq: UInt64, head: String?, silent: [String]) -> [String] {
        var lines = ["journal:    entry \(seq)\(head.map { ", head \($0)" } ?? "")"]
        if !silent.isEmpty {
            lines.append("silent:     no change or attestation for days from \(silent.joined(separator: ", ")): offline, or the server")
            lines.append("            is showing this device another history (compare `lockfs status` heads on both devices)")
        }
        return lines
    }

    /// What the integrity alarm means and what to do, after its message.
    static let alarmAdvice = [
        "  sync is stopped; every local file and queued change is kept on this device.",
        "  If the server's operator restored it from a backup, devices that were ahead stop",
        "  like this: see docs/operations.md, \"After a server restore\". Otherwise the server",
        "  broke the rules: do not use it until you know why (docs/security.md).",
    ]

    /// The state of paths in a running mount, and that mount's engine.
    struct PathReport: Codable {
        var engine: EngineStatus
        var paths: [String: String]
    }

    func runInMount() throws {
        let engine = try MountControl.engine(paths[0])
        var states: [String: String] = [:]
        for p in paths { states[p] = try MountControl.status(p) }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            enc.dateEncodingStrategy = .iso8601
            print(String(decoding: try enc.encode(PathReport(engine: engine, paths: states)), as: UTF8.self))
        } else {
            let lastSync = engine.lastSync.map { ISO8601DateFormatter().string(from: $0) } ?? "never"
            print("connection: \(engine.online ? "online" : "offline\(engine.lastError.map { " (\($0))" } ?? "")"), last sync \(lastSync)")
            for line in Self.journalLines(seq: engine.cursor, head: engine.head, silent: engine.silentDevices) { print(line) }
            print("queued:     \(engine.queuedOperations) change(s), \(formatBytes(engine.queuedBytes)) to upload")
            print("cache:      \(formatBytes(engine.cacheSize)) of \(formatBytes(engine.cacheLimit)); pinned \(formatBytes(engine.pinnedBytes))")
            for p in paths { print("\(states[p]!)\t\(p)") }
            if engine.ignoredEntries > 0 {
                print("ignored:    \(engine.ignoredEntries) journal entr\(engine.ignoredEntries == 1 ? "y" : "ies") the server should have refused (last: \(engine.lastIgnoredEntry ?? "?"))")
            }
            if let alarm = engine.integrityAlarm {
                print("INTEGRITY ALARM: \(alarm)")
                for line in Self.alarmAdvice { print(line) }
            }
        }
        if engine.integrityAlarm != nil { throw ExitCode(ExitCodes.integrity) }
    }

    func run() async throws {
        if !paths.isEmpty { return try runInMount() }
        let credentials = try home.credentials()
        let busy = OpenEngine.isBusy(home.clientHome)
        var report = Report(server: credentials.server, user: credentials.user, device: credentials.deviceName, online: false,
                            lastError: nil, journalSeq: 0, queuedOperations: 0, queuedBytes: 0, cacheBytes: 0, cacheLimitBytes: 0,
                            pinnedBytes: 0, integrityAlarm: nil, mountedElsewhere: busy)
        report.lastVerify = Self.lastVerify(home.clientHome)
        if busy {
            // A mount holds the engine: read its index (WAL allows a reader beside it).
            let index = try Index(path: home.clientHome.indexFile.path)
            let counts = try index.counts()
            report.journalSeq = counts.cursor
            report.head = try index.head(at: counts.cursor).map(headFingerprint)
            report.queuedOperations = counts.pendingOperations
            report.integrityAlarm = try index.meta("alarm").map { String(decoding: $0, as: UTF8.self) }
            report.ignoredEntries = Int(try index.metaInt("ignored_entries") ?? 0)
            report.lastIgnoredEntry = try index.meta("last_ignored_entry").map { String(decoding: $0, as: UTF8.self) }
        } else {
            let open = try OpenEngine(home)
            if !offline {
                do { try await open.engine.pullOnce() } catch LockError.offline {} catch LockError.integrity {}
                await open.engine.refreshRoster()
            }
            let s = open.engine.status()
            report.online = s.online
            report.lastError = s.lastError
            report.journalSeq = s.cursor
            report.queuedOperations = s.queuedOperations
            report.queuedBytes = s.queuedBytes
            report.cacheBytes = s.cacheSize
            report.cacheLimitBytes = s.cacheLimit
            report.pinnedBytes = s.pinnedBytes
            report.integrityAlarm = s.integrityAlarm
            report.ignoredEntries = s.ignoredEntries
            report.lastIgnoredEntry = s.lastIgnoredEntry
            report.head = s.head
            report.silentDevices = s.silentDevices
        }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(report), as: UTF8.self))
        } else {
            print("server:     \(report.server) (user \(report.user), device \(report.device))")
            if report.mountedElsewhere {
                print("connection: managed by the running mount")
            } else {
                print("connection: \(offline ? "not checked" : report.online ? "online" : "offline\(report.lastError.map { " (\($0))" } ?? "")")")
            }
            for line in Self.journalLines(seq: report.journalSeq, head: report.head, silent: report.silentDevices) { print(line) }
            print(Self.verifyLine(report.lastVerify))
            print("queued:     \(report.queuedOperations) change(s)\(report.mountedElsewhere ? "" : ", \(formatBytes(report.queuedBytes)) to upload")")
            if !report.mountedElsewhere {
                print("cache:      \(formatBytes(report.cacheBytes)) of \(formatBytes(report.cacheLimitBytes)); pinned \(formatBytes(report.pinnedBytes))")
            }
            if report.ignoredEntries > 0 {
                print("ignored:    \(report.ignoredEntries) journal entr\(report.ignoredEntries == 1 ? "y" : "ies") the server should have refused (last: \(report.lastIgnoredEntry ?? "?"))")
            }
            if let alarm = report.integrityAlarm {
                print("INTEGRITY ALARM: \(alarm)")
                for line in Self.alarmAdvice { print(line) }
            }
        }
        if report.integrityAlarm != nil { throw ExitCode(ExitCodes.integrity) }
    }
}
