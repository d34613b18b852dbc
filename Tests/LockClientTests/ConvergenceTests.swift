import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// Three devices make random changes with random offline periods; after
/// everyone reconnects they must show the same tree, and every content ever
/// written must survive as a file, a conflict copy, or history (a deleted
/// node's last content), unless a device knowingly replaced it (it was what
/// that device showed for the file when it overwrote or deleted it).
///
/// Seeded and reproducible in the operations chosen (sync is driven by hand);
/// `LOCKFS_SOAK_ROUNDS` runs longer (`make soak`).
@Suite struct ConvergenceTests {
    static let rounds = Int(ProcessInfo.processInfo.environment["LOCKFS_SOAK_ROUNDS"] ?? "") ?? 300
    static let seeds: [UInt64] = ProcessInfo.processInfo.environment["LOCKFS_SOAK_SEED"].flatMap { UInt64($0) }.map { [$0] } ?? [1, 2, 3]

    @Test(arguments: seeds) func threeDevicesConverge(seed: UInt64) async throws {
        let (server, devices) = try makeDevices(3)
        var rng = SeededGenerator(seed: seed)
        var written: Set<Manifest> = []
        var superseded: Set<Manifest> = []
        var counter = 0
        var log: [String] = []   // what happened, for the failure message

        func livePaths(_ e: Engine) -> [(String, Node)] { e.snapshot().sorted { $0.key < $1.key } }
        func folders(_ e: Engine) -> [String] { [""] + livePaths(e).filter { $0.1.isDirectory }.map(\.0) }
        func files(_ e: Engine) -> [(String, Node)] { livePaths(e).filter { $0.1.kind == .file } }
        /// Everything under a path as the device shows it (for "knowingly replaced").
        func contents(under path: String, _ e: Engine) -> [Manifest] {
            livePaths(e).filter { $0.0 == path || $0.0.hasPrefix(path + "/") }.compactMap { $0.1.manifest }
        }

        for _ in 0..<Self.rounds {
            let d = devices[Int.random(in: 0..<3, using: &rng)]
            let e = d.engine
            let roll = Int.random(in: 0..<100, using: &rng)
            counter += 1
            do {
                switch roll {
                case 0..<8: // go offline / online
                    d.remote.offlineFlag.set(!d.remote.offlineFlag.isOffline)
                    log.append("\(counter) d\(e.device.hex.prefix(4)) \(d.remote.offlineFlag.isOffline ? "offline" : "online")")
                case 8..<30: // sync
                    if !d.remote.offlineFlag.isOffline { try await e.syncNow(); log.append("\(counter) d\(e.device.hex.prefix(4)) sync") }
                case 30..<45: // create a file with content
                    let dir = folders(e).randomElement(using: &rng)!
                    try await e.put(dir + "/f\(counter).txt", "content \(counter) by \(e.device.hex.prefix(4))")
                    if let m = e.snapshot()[dir + "/f\(counter).txt"]?.manifest { written.insert(m); log.append("\(counter) d\(e.device.hex.prefix(4)) create \(dir)/f\(counter).txt \(m.chunks.first?.id.hex.prefix(8) ?? "")") }
                case 45..<62: // overwrite or edit an existing file
                    guard let (path, node) = files(e).randomElement(using: &rng) else { continue }
                    if let m = node.manifest { superseded.insert(m) }
                    let ino = try e.resolve(path)
                    let h = try await e.openForWrite(ino, truncate: Bool.random(using: &rng))
                    let bytes = Array(" edit \(counter)".utf8)
                    _ = try bytes.withUnsafeBytes { try e.write(h, offset: Int.random(in: 0..<8, using: &rng), bytes: $0) }
                    try e.close(h)
                    if let m = e.snapshot()[path]?.manifest { written.insert(m); log.append("\(counter) d\(e.device.hex.prefix(4)) edit \(path) \(node.manifest?.chunks.first?.id.hex.prefix(8) ?? "-") -> \(m.chunks.first?.id.hex.prefix(8) ?? "")") }
                case 62..<70: // mkdir
                    let dir = folders(e).randomElement(using: &rng)!
                    _ = try e.mkdir(parent: try e.resolve(dir), name: "d\(counter)", mode: 0o755)
                case 70..<82: // rename, maybe across folders
                    guard let (path, _) = livePaths(e).randomElement(using: &rng) else { continue }
                    let target = folders(e).randomElement(using: &rng)!
                    let parts = path.split(separator: "/").map(String.init)
                    let parent = try e.resolve(parts.dropLast().joined(separator: "/"))
                    do {
                        try e.rename(parent: parent, name: parts.last!, newParent: try e.resolve(target), newName: "r\(counter)")
                        log.append("\(counter) d\(e.device.hex.prefix(4)) mv \(path) \(target)/r\(counter)")
                    } catch LockError.invalid { } // into itself
                case 82..<92: // delete a file
                    guard let (path, node) = files(e).randomElement(using: &rng) else { continue }
                    if let m = node.manifest { superseded.insert(m) }
                    let parts = path.split(separator: "/").map(String.init)
                    try e.unlink(parent: try e.resolve(parts.dropLast().joined(separator: "/")), name: parts.last!)
                    log.append("\(counter) d\(e.device.hex.prefix(4)) unlink \(path)")
                default: // delete a folder with everything in it (rm -rf)
                    guard let dir = folders(e).dropFirst().randomElement(using: &rng) else { continue }
                    for m in contents(under: dir, e) { superseded.insert(m) }
                    try removeTree(e, dir)
                    log.append("\(counter) d\(e.device.hex.prefix(4)) rm -rf \(dir)")
                }
            } catch LockError.offline {
                // Expected while offline.
            }
        }

        // Everyone reconnects and syncs until nothing moves.
        for d in devices { d.remote.offlineFlag.set(false) }
        for _ in 0..<3 { for d in devices { try await d.engine.syncNow() } }
        let trees = try await devices.asyncMap { try await $0.engine.tree() }
        #expect(trees[0] == trees[1], "seed \(seed): devices 0 and 1 differ")
        #expect(trees[0] == trees[2], "seed \(seed): devices 0 and 2 differ")
        for d in devices { #expect(d.engine.status().queuedOperations == 0) }

        // The oracle: nothing written is lost.
        let kept: Set<Manifest> = devices[0].engine.state.withLock { s in
            Set(s.base.nodes.values.compactMap(\.manifest))
        }
        let lost = written.subtracting(superseded).subtracting(kept)
        #expect(lost.isEmpty, "seed \(seed): \(lost.count) written versions were lost")
        if !lost.isEmpty, ProcessInfo.processInfo.environment["LOCKFS_SOAK_LOG"] != nil {
            print(log.joined(separator: "\n"))
            print("LOST: " + lost.map { $0.chunks.first?.id.hex.prefix(8) ?? "" }.joined(separator: " "))
            // The journal's story of each lost version's node.
            let keys = devices[0].engine.keys
            let entries = server.state.withLock { $0.entries }
            var nodes = Set<NodeID>()
            for e in entries { for op in try e.entry.open(keys: keys).operations {
                if case let .write(n, _, _, _, m) = op, lost.contains(m) { nodes.insert(n); if let p = devices[0].engine.state.withLock({ $0.base.node(n)?.parent }) { nodes.insert(p) } }
                if case let .create(n, p, _, _, _, .file(m)) = op, lost.contains(m) { nodes.insert(n); nodes.insert(p) }
            } }
            var replay = Tree()
            var lastState: [NodeID: String] = [:]
            for e in entries {
                let b = try e.entry.open(keys: keys)
                replay.apply(b.operations, context: ReplayContext(device: b.device, createdAt: b.createdAt, seq: e.seq.rawValue, baseSeq: e.entry.baseSeq.rawValue))
                for n in nodes {
                    let st = replay.node(n).map { "\($0.deleted ? "DELETED " : "")\(replay.path(of: $0.parent) ?? "?")/\($0.name) rev \($0.revision.hex.prefix(6)) fresh \($0.freshRevisions.map { $0.hex.prefix(6) }) \($0.manifest?.chunks.first?.id.hex.prefix(8) ?? "")" } ?? "nil"
                    if lastState[n] != st { print("  after seq \(e.seq) (dev \(b.device.hex.prefix(5)), base \(e.entry.baseSeq)): \(st)"); lastState[n] = st }
                }
                for op in b.operations where nodes.contains(op.node) || { if case let .create(_, p, _, _, _, _) = op { return nodes.contains(p) }; return false }() {
                    print("seq \(e.seq) base \(e.entry.baseSeq) dev \(b.device.hex.prefix(5)): \(op)".prefix(400))
                }
            }
        }
        // And every live file reads back on every device.
        for d in devices {
            for (path, n) in d.engine.snapshot() where n.kind == .file {
                let data = try await d.engine.read(try d.engine.resolve(path), offset: 0, size: 1 << 20)
                #expect(data.count == n.size)
            }
        }
    }

    /// rm -rf as a program does it: children first, then the folder.
    func removeTree(_ e: Engine, _ path: String) throws {
        let ino = try e.resolve(path)
        for (name, a) in try e.list(ino) {
            if a.kind == .directory { try removeTree(e, path + "/" + name) } else { try e.unlink(parent: ino, name: name) }
        }
        let parts = path.split(separator: "/").map(String.init)
        try e.rmdir(parent: try e.resolve(parts.dropLast().joined(separator: "/")), name: parts.last!)
    }
}

extension Array {
    func asyncMap<T>(_ f: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for x in self { out.append(try await f(x)) }
        return out
    }
}
