import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// Sessions of random changes on three to five devices of one vault, with
/// random outages, partial syncs and crashes; afterwards every device must
/// show the same tree (names, bytes, modes) and no version anyone wrote may
/// be lost (`Simulation`'s oracle).
///
/// `make test` runs a fast subset; `make soak` runs many more sessions
/// (LOCKFS_SOAK_SESSIONS of LOCKFS_SOAK_ROUNDS rounds, from seed
/// LOCKFS_SOAK_SEED). A failure names its session: rerun it alone with
/// `LOCKFS_SOAK_SEED=S LOCKFS_SOAK_SESSIONS=1 LOCKFS_SOAK_DEVICES=N
/// LOCKFS_SOAK_ROUNDS=R` (and `LOCKFS_SOAK_LOG=1` for its story).
@Suite struct ConvergenceTests {
    struct Session: Sendable, CustomStringConvertible {
        var seed: UInt64
        var devices: Int
        var rounds: Int
        var description: String { "seed \(seed), \(devices) devices, \(rounds) rounds" }
    }

    static let sessions: [Session] = {
        let env = ProcessInfo.processInfo.environment
        if let rounds = env["LOCKFS_SOAK_ROUNDS"].flatMap(Int.init) {
            let first = env["LOCKFS_SOAK_SEED"].flatMap(UInt64.init) ?? 1
            let count = env["LOCKFS_SOAK_SESSIONS"].flatMap(UInt64.init) ?? 1
            let devices = env["LOCKFS_SOAK_DEVICES"].flatMap(Int.init)
            return (first..<first + count).map { Session(seed: $0, devices: devices ?? 3 + Int($0 % 3), rounds: rounds) }
        }
        // The fast subset: many short sessions (where most losses showed), a few long ones.
        return (1...36).map { Session(seed: $0, devices: 3 + Int($0 % 3), rounds: 60) }
            + (101...103).map { Session(seed: $0, devices: 3, rounds: 400) }
    }()

    /// Sessions run in a few lanes, one after another in each: thousands
    /// at once (Swift Testing's default for arguments) would hold
    /// thousands of engines and their files open together.
    static let lanes = 4

    @Test(arguments: 0..<lanes) func devicesConverge(lane: Int) async throws {
        for session in Self.sessions.enumerated().filter({ $0.offset % Self.lanes == lane }).map(\.element) {
            do {
                let sim = try Simulation(session: session)
                try await sim.run()
                try await sim.converge()
                let report = try await sim.check()
                #expect(report.isEmpty, "\(session): \(report.joined(separator: "; "))\(sim.story())")
                sim.removeHomes()
            } catch {
                Issue.record("\(session): \(error)")
            }
        }
    }
}

/// A vault on an in-memory server, its devices, and what they wrote.
///
/// The oracle: after everyone reconnects, all devices show identical trees
/// (names, bytes, modes, kinds), every live file reads back, and every
/// version a device wrote is the content of some live file on every device
/// — unless some device replaced it knowingly: overwrote or deleted it (or a
/// folder holding it) while showing exactly that version. Conflict copies
/// count; tombstones (history) do not.
final class Simulation {
    let session: ConvergenceTests.Session
    let server: InMemoryVaultServer
    var devices: [TestDevice]
    let keys: VaultKeys
    var rng: SeededGenerator
    /// Every version written: content → who wrote it, when (for messages).
    var written: [Manifest: String] = [:]
    /// Versions some device knowingly replaced.
    var superseded: Set<Manifest> = []
    var counter = 0
    var log: [String] = []

    init(session: ConvergenceTests.Session) throws {
        self.session = session
        keys = .generate()
        (server, devices) = try makeDevices(session.devices, keys: keys)
        rng = SeededGenerator(seed: session.seed)
    }

    // MARK: Choosing

    func paths(_ e: Engine) -> [(String, Node)] { e.snapshot().sorted { $0.key < $1.key } }
    func folders(_ e: Engine) -> [String] { [""] + paths(e).filter { $0.1.isDirectory }.map(\.0) }
    func files(_ e: Engine) -> [(String, Node)] { paths(e).filter { $0.1.kind == .file } }

    /// One of `items`, half the time among the first three: devices then
    /// often pick the same files and folders, where the conflicts are.
    func pick<T>(_ items: [T]) -> T? {
        guard !items.isEmpty else { return nil }
        if Bool.random(using: &rng) { return items[Int.random(in: 0..<min(3, items.count), using: &rng)] }
        return items[Int.random(in: 0..<items.count, using: &rng)]
    }

    func split(_ path: String) -> (String, String) {
        let parts = path.split(separator: "/").map(String.init)
        return (parts.dropLast().map { "/" + $0 }.joined(), parts.last ?? "")
    }

    func note(_ d: Int, _ what: String) { log.append("\(counter) d\(d) \(what)") }

    func short(_ m: Manifest?) -> String { m.map { written[$0] ?? ($0.chunks.first?.id.hex.prefix(6)).map(String.init) ?? "empty" } ?? "-" }

    // MARK: Running

    func run() async throws {
        for _ in 0..<session.rounds {
            counter += 1
            let i = Int.random(in: 0..<devices.count, using: &rng)
            do { try await step(i) } catch LockError.offline {
                // Expected while offline.
            }
        }
    }

    /// Everyone reconnects and syncs until nothing moves.
    func converge() async throws {
        for d in devices { d.remote.offlineFlag.set(false) }
        for _ in 0..<3 { for d in devices { try await d.engine.syncNow() } }
    }

    func step(_ i: Int) async throws {
        let e = devices[i].engine
        let remote = devices[i].remote
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<6:
            remote.offlineFlag.set(!remote.offlineFlag.isOffline)
            note(i, remote.offlineFlag.isOffline ? "offline" : "online")
        case 6..<16:
            guard !remote.offlineFlag.isOffline else { return }
            try await e.syncNow(); note(i, "sync")
        case 16..<19:
            guard !remote.offlineFlag.isOffline else { return }
            try await e.pushOnce(); note(i, "push")
        case 19..<22:
            guard !remote.offlineFlag.isOffline else { return }
            try await e.pullOnce(); note(i, "pull")
        case 22..<25:
            // Seal the queue into an entry (sent when online): a later change then
            // travels in an entry of its own, as with a mount's background uploader.
            _ = try? await e.uploadOnce(); note(i, "send one entry")
        case 25..<37:
            guard let dir = pick(folders(e)) else { return }
            try await write(i, dir + "/f\(counter).txt", create: true)
        case 37..<40:
            // A name other devices use too: same-named files conflict.
            guard let dir = pick(folders(e)) else { return }
            if (try? e.resolve(dir + "/same.txt")) == nil { try await write(i, dir + "/same.txt", create: true) }
        case 40..<55:
            guard let (path, _) = pick(files(e)) else { return }
            try await write(i, path, create: false)
        case 55..<60:
            guard let dir = pick(folders(e)) else { return }
            _ = try e.mkdir(parent: try e.resolve(dir), name: "d\(counter)", mode: 0o755); note(i, "mkdir \(dir)/d\(counter)")
        case 60..<63:
            // Folders every device makes under the same names: they merge.
            guard let dir = pick(folders(e)), (try? e.resolve(dir + "/shared")) == nil else { return }
            _ = try e.mkdir(parent: try e.resolve(dir), name: "shared", mode: 0o755); note(i, "mkdir \(dir)/shared")
        case 63..<71:
            guard let (path, _) = pick(paths(e)), let target = pick(folders(e)) else { return }
            try move(i, path, to: Bool.random(using: &rng) ? split(path).0 : target, name: "r\(counter)")
        case 71..<77:
            guard let (path, node) = pick(files(e)) else { return }
            if let m = node.manifest { superseded.insert(m) }
            let (dir, name) = split(path)
            try e.unlink(parent: try e.resolve(dir), name: name); note(i, "rm \(path) (\(short(node.manifest)))")
        case 77..<81:
            guard let dir = pick(Array(folders(e).dropFirst())) else { return }
            try removeTree(i, dir)
        case 81..<85:
            // Out of a folder, then edit, then rename (issue 12, first loss).
            guard let (path, _) = pick(files(e)), let target = pick(folders(e)) else { return }
            let moved = target + "/m\(counter)"
            try move(i, path, to: target, name: "m\(counter)")
            try await write(i, moved, create: false)
            try move(i, moved, to: target, name: "n\(counter)")
        case 85..<89:
            // Edit, move elsewhere, delete the former folder (issue 12, second loss).
            guard let (path, _) = pick(files(e)), let target = pick(folders(e)) else { return }
            try await write(i, path, create: false)
            let (dir, _) = split(path)
            if target == dir || target.hasPrefix(dir + "/") { return }
            try move(i, path, to: target, name: "k\(counter)")
            if !dir.isEmpty { try removeTree(i, dir) }
        case 89..<92:
            guard let (path, node) = pick(paths(e)) else { return }
            let mode: UInt32 = node.isDirectory ? [0o755, 0o700, 0o750].randomElement(using: &rng)! : [0o644, 0o600, 0o640].randomElement(using: &rng)!
            _ = try e.setAttributes(try e.resolve(path), mode: mode); note(i, "chmod \(String(mode, radix: 8)) \(path)")
        case 92..<95:
            try crash(i)
        default:
            // Write without closing, then the process dies: nothing was acknowledged.
            guard let (path, _) = pick(files(e)) else { return }
            let h = try await e.openForWrite(try e.resolve(path), truncate: true)
            _ = try Array("never closed \(counter)".utf8).withUnsafeBytes { try e.write(h, offset: 0, bytes: $0) }
            note(i, "open \(path), write, and…")
            try crash(i)
        }
    }

    /// Writes a new version of `path`: a new file, or (at random) an
    /// overwrite, an append, a truncation or a write in the middle. Each
    /// version starts with a tag of its own, so versions never repeat.
    func write(_ i: Int, _ path: String, create: Bool) async throws {
        let e = devices[i].engine
        let tag = "v\(counter)d\(i);"
        let before = create ? nil : e.snapshot()[path]?.manifest
        let ino: UInt64
        if create {
            let (dir, name) = split(path)
            ino = try e.createFile(parent: try e.resolve(dir), name: name, mode: 0o644).ino
        } else {
            ino = try e.resolve(path)
        }
        let how = create ? 0 : Int.random(in: 0..<4, using: &rng)
        let h = try await e.openForWrite(ino, truncate: how == 0)
        let size = try e.getattr(ino).size
        var text = tag + String(repeating: "x", count: Int.random(in: 0..<24, using: &rng))
        switch how {
        case 0: break                                                       // overwrite
        case 1: text = tag                                                  // truncate, keeping the tag
            try e.truncate(handle: h, size: min(size, text.utf8.count + 3))
        case 2: break                                                       // append
        default: break                                                      // write in the middle
        }
        let offset = how == 2 ? size : how == 3 ? Int.random(in: 0...size, using: &rng) / 2 : 0
        // The tag always leads the file: a write elsewhere rewrites the start too.
        _ = try Array(tag.utf8).withUnsafeBytes { try e.write(h, offset: 0, bytes: $0) }
        if how != 1 { _ = try Array(text.utf8).withUnsafeBytes { try e.write(h, offset: max(offset, tag.utf8.count), bytes: $0) } }
        try e.close(h)
        if let before { superseded.insert(before) }
        guard let m = e.snapshot()[path]?.manifest else { return }
        written[m] = tag
        note(i, "\(create ? "create" : ["overwrite", "truncate", "append", "write into"][how]) \(path) (\(short(before)) → \(tag))")
    }

    func move(_ i: Int, _ path: String, to folder: String, name: String) throws {
        let e = devices[i].engine
        let (dir, old) = split(path)
        do {
            try e.rename(parent: try e.resolve(dir), name: old, newParent: try e.resolve(folder), newName: name)
            note(i, "mv \(path) \(folder)/\(name)")
        } catch LockError.invalid { }   // into itself
    }

    /// rm -rf as a program does it: children first, then the folder.
    func removeTree(_ i: Int, _ path: String) throws {
        let e = devices[i].engine
        for (p, n) in paths(e) where p.hasPrefix(path + "/") { if let m = n.manifest { superseded.insert(m) } }
        try Self.removeTree(e, path)
        note(i, "rm -rf \(path)")
    }

    static func removeTree(_ e: Engine, _ path: String) throws {
        let ino = try e.resolve(path)
        for (name, a) in try e.list(ino) {
            if a.kind == .directory { try removeTree(e, path + "/" + name) } else { try e.unlink(parent: ino, name: name) }
        }
        let parts = path.split(separator: "/").map(String.init)
        try e.rmdir(parent: try e.resolve(parts.dropLast().joined(separator: "/")), name: parts.last!)
    }

    /// kill -9: the engine is dropped without stopping and opened again on its home.
    func crash(_ i: Int) throws {
        devices[i] = try devices[i].reopened()
        note(i, "kill -9, restart")
    }

    /// Deletes the devices' homes (after a green session; a red one keeps them to look at).
    func removeHomes() {
        for d in devices { try? FileManager.default.removeItem(at: d.home) }
    }

    // MARK: The oracle

    /// What the oracle found wrong (empty: nothing).
    func check() async throws -> [String] {
        var problems: [String] = []
        let first = try await fingerprint(devices[0].engine)
        for (i, d) in devices.enumerated().dropFirst() {
            let other = try await fingerprint(d.engine)
            if other != first {
                let diff = Set(first.map { "\($0.key): \($0.value)" }).symmetricDifference(other.map { "\($0.key): \($0.value)" })
                problems.append("devices 0 and \(i) differ: \(diff.sorted().prefix(6))")
            }
        }
        for (i, d) in devices.enumerated() {
            if d.engine.status().queuedOperations != 0 { problems.append("device \(i) still has \(d.engine.status().queuedOperations) queued") }
            if let alarm = d.engine.status().integrityAlarm { problems.append("device \(i) raised the alarm: \(alarm)") }
            let live = Set(d.engine.snapshot().values.compactMap(\.manifest))
            let lost = Set(written.keys).subtracting(superseded).subtracting(live)
            if !lost.isEmpty { problems.append("device \(i) lost \(lost.map { written[$0]! }.sorted())") }
            for (path, n) in d.engine.snapshot() where n.kind == .file {
                let data = try await d.engine.read(try d.engine.resolve(path), offset: 0, size: 1 << 20)
                if data.count != n.size { problems.append("device \(i): \(path) reads \(data.count) of \(n.size) bytes") }
            }
        }
        return problems
    }

    /// Path → kind, mode and content, as a device shows its tree.
    func fingerprint(_ e: Engine) async throws -> [String: String] {
        var out: [String: String] = [:]
        for (path, n) in e.snapshot() {
            let content: String = switch n.content {
            case .directory: "dir"
            case .symlink(let t): "-> \(t)"
            case .file(let m): short(m)
            }
            out[path] = "\(String(n.attributes.mode, radix: 8)) \(content)"
        }
        return out
    }

    /// The session's operations and the journal's story of the lost
    /// versions (with LOCKFS_SOAK_LOG set).
    func story() -> String {
        guard ProcessInfo.processInfo.environment["LOCKFS_SOAK_LOG"] != nil else { return " (LOCKFS_SOAK_LOG=1 prints the session)" }
        var out = ["", "operations:"] + log + ["journal:"]
        var replay = Tree()
        let entries = server.state.withLock { $0.entries }
        for e in entries {
            guard let b = try? e.entry.open(keys: keys) else { continue }
            for op in b.operations { out.append("  seq \(e.seq) base \(e.entry.baseSeq) dev \(b.device.hex.prefix(4)): \(describe(op, replay))") }
            replay.apply(b.operations, context: ReplayContext(device: b.device, createdAt: b.createdAt, seq: e.seq.rawValue,
                                                              baseSeq: e.entry.baseSeq.rawValue))
        }
        return out.joined(separator: "\n")
    }

    func describe(_ op: LockWire.Operation, _ t: Tree) -> String {
        func at(_ id: NodeID) -> String { t.path(of: id) ?? (t.node(id).map { "[deleted \($0.name)]" } ?? "[new]") + " \(id.hex.prefix(4))" }
        switch op {
        case let .create(n, p, name, _, _, content): return "create \(at(p))/\(name.value) \(n.hex.prefix(4)) \(content.kind) \(short(content.manifestIfFile))"
        case let .write(n, base, rev, _, m): return "write \(at(n)) base \(base.hex.prefix(4)) rev \(rev.hex.prefix(4)) \(short(m))"
        case let .move(n, p, name): return "move \(at(n)) → \(at(p))/\(name.value)"
        case let .delete(n, base): return "delete \(at(n)) base \(base.hex.prefix(4))"
        case let .setAttributes(n, _, _, a): return "chmod \(String(a.mode, radix: 8)) \(at(n))"
        }
    }
}

extension NodeContent {
    var manifestIfFile: Manifest? { if case .file(let m) = self { m } else { nil } }
}

extension Array {
    func asyncMap<T>(_ f: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for x in self { out.append(try await f(x)) }
        return out
    }
}
