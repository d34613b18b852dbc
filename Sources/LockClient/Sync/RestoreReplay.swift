import LockCrypto
import LockWire

/// After a server was restored from a backup, the operations that bring
/// this device's changes made after the restored history's common prefix
/// back on top of it (`lockfs repair --server-restored`; docs/operations.md,
/// "After a server restore"). Pure, table-tested (RestoreReplayTests).
///
/// "This device's changes" are the nodes whose last change this device made
/// after `prefix` (in the journal, or still queued): each is brought to the
/// state this device had, from the state the restored history has. A node
/// another device changed last is left to that device (which repairs in
/// turn). Deletes are made again whoever made them (see below). Missing folders above one of this device's nodes are created too
/// (with their ids: a second device doing the same makes a duplicate
/// create, which the replay rules ignore). The operations go through the
/// replay rules like any others: what changed on the restored history
/// meanwhile is kept (conflict copies), nothing is lost.
public enum RestoreReplay {
    /// One operation to queue, and the path it is about (for the report).
    public struct Step: Equatable, Sendable {
        public let operation: Operation
        public let path: String
    }

    /// - Parameters:
    ///   - old: this device's view before the repair (verified journal and
    ///     queued operations).
    ///   - restored: the tree the restored server's journal makes.
    ///   - device: this device.
    ///   - prefix: the last seq both histories share.
    ///   - revision: makes each new revision id (random in use; fixed in tests).
    public static func steps(old: Tree, restored: Tree, device: DeviceID, after prefix: UInt64,
                             revision: () -> RevisionID = { .random() }) -> [Step] {
        let mine = old.nodes.values.filter { $0.id != .root && $0.modDevice == device && $0.modSeq > prefix }
        // Live nodes of this device, and the folders above them the restored tree lacks.
        var needed: [NodeID: Node] = [:]
        for n in mine where !n.deleted {
            needed[n.id] = n
            var up = n.parent
            var guardCount = 0
            while up != .root, restored.liveNode(up) == nil, let p = old.liveNode(up), guardCount < 10_000 {
                if restored.node(up) == nil { needed[up] = p }
                up = p.parent
                guardCount += 1
            }
        }
        var creates: [(Int, Step)] = []
        var changes: [(String, [Step])] = []
        for n in needed.values {
            let path = old.path(of: n.id) ?? n.name
            guard let r = restored.node(n.id) else {
                let name = (try? Name(n.name)) ?? (try! Name("_"))
                creates.append((depth(of: n, in: old), Step(operation: .create(node: n.id, parent: n.parent, name: name, revision: revision(),
                                                                             attributes: n.attributes, content: n.content), path: path)))
                continue
            }
            // In order: the content (a write also brings back a file the restored
            // history deleted), the place, the attributes.
            var steps: [Step] = []
            var base = r.revision
            var live = !r.deleted
            if case .file(let manifest) = n.content, r.deleted || r.content != n.content {
                let made = revision()
                steps.append(Step(operation: .write(node: n.id, base: base, revision: made, mtime: n.attributes.mtime, manifest: manifest), path: path))
                base = made
                live = true
            }
            if live, r.parent != n.parent || r.name != n.name, let name = try? Name(n.name) {
                steps.append(Step(operation: .move(node: n.id, parent: n.parent, name: name), path: path))
            }
            if live, r.attributes != n.attributes {
                steps.append(Step(operation: .setAttributes(node: n.id, base: base, revision: revision(), attributes: n.attributes), path: path))
            }
            if !steps.isEmpty { changes.append((path, steps)) }
        }
        // Deletes in the lost history of what the restored tree still has: deepest
        // first. Whoever made them (a tombstone does not say): each was verified
        // here, a second device doing the same deletes nothing more, and each is
        // made on the version deleted then, so a version the restored history
        // wrote since is stale for it and stays.
        var deletes: [(Int, Step)] = []
        for n in old.nodes.values where n.deleted && n.id != .root {
            guard let r = restored.liveNode(n.id), r.id == n.id else { continue }
            deletes.append((depth(of: r, in: restored), Step(operation: .delete(node: n.id, base: n.revision), path: restored.path(of: n.id) ?? n.name)))
        }
        return creates.sorted { ($0.0, $0.1.path) < ($1.0, $1.1.path) }.map(\.1)
            + changes.sorted { $0.0 < $1.0 }.flatMap(\.1)
            + deletes.sorted { ($0.0, $0.1.path) > ($1.0, $1.1.path) }.map(\.1)
    }

    static func depth(of node: Node, in tree: Tree) -> Int {
        var d = 0
        var cur = node.parent
        while cur != .root, d < 10_000, let p = tree.node(cur) { d += 1; cur = p.parent }
        return d
    }
}
