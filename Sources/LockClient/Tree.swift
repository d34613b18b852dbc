import Foundation
import LockCrypto
import LockWire

/// One node of the vault's tree as the engine keeps it.
public struct Node: Sendable, Hashable {
    public var id: NodeID
    public var parent: NodeID
    public var name: String
    public var revision: RevisionID
    public var attributes: NodeAttributes
    public var content: NodeContent
    /// A deleted node stays as a tombstone (history): a later write brings it back.
    public var deleted: Bool
    /// The journal sequence number of the last change (`Tree.pendingSeq` for a local change not yet in the journal).
    public var modSeq: UInt64
    /// The device that made the last change.
    public var modDevice: DeviceID
    /// The last change by any device other than `modDevice` (0 if none).
    /// With `modSeq` it gives, for any device D, the last change D did not
    /// make: `modSeq` if D is not `modDevice`, else this.
    public var otherSeq: UInt64 = 0

    /// Records a change by `device` at `seq`.
    mutating func touch(by device: DeviceID, seq: UInt64) {
        if device != modDevice { otherSeq = modSeq; modDevice = device }
        modSeq = seq
    }

    /// The last change to this node made by a device other than `device`.
    func lastChange(notBy device: DeviceID) -> UInt64 { device == modDevice ? otherSeq : modSeq }
    /// Revisions a writer may name as its base without conflict: the revision
    /// of the last content change and those of attribute changes since.
    public var freshRevisions: [RevisionID]

    public var kind: NodeKind { content.kind }
    public var isDirectory: Bool { content.kind == .directory }
    public var size: Int {
        switch content {
        case .file(let m): m.size
        case .symlink(let t): t.utf8.count
        case .directory: 0
        }
    }
    public var manifest: Manifest? { if case .file(let m) = content { m } else { nil } }
}

/// Who made a batch and where it sits, for the replay rules.
public struct ReplayContext: Sendable {
    public var device: DeviceID
    public var createdAt: Timestamp
    /// The entry's sequence number (`Tree.pendingSeq` for local operations).
    public var seq: UInt64
    /// The last sequence number the writer had seen when it made the operations.
    public var baseSeq: UInt64

    public init(device: DeviceID, createdAt: Timestamp, seq: UInt64, baseSeq: UInt64) {
        self.device = device
        self.createdAt = createdAt
        self.seq = seq
        self.baseSeq = baseSeq
    }
}

/// The vault's tree and the deterministic rules that apply operations to it.
///
/// Every client replays the same journal entries in the same order with
/// these rules, so all converge on the same tree without asking the server
/// (docs/design.md, "Replay rules"). The rules never lose written content:
/// - a create whose node exists is a duplicate and is ignored; a name taken
///   by another node gets a conflict name; a parent that was deleted comes back;
/// - a write whose base revision is stale lands as a conflict copy beside the
///   file (a sibling named "NAME (conflict from DEVICE DATE)"); a write to a
///   deleted file brings it back (and its folders);
/// - a move into a deleted folder, or one that would make a cycle, is dropped;
///   a name taken in the target gets a conflict name;
/// - a delete whose base is stale (content the deleter had not seen) is
///   dropped; deleting a folder keeps everything in it that another device
///   changed after the deleter's base sequence number (with its folders);
/// - attribute changes are last-writer-wins.
public struct Tree: Sendable {
    /// `modSeq` of changes not yet in the journal.
    public static let pendingSeq = UInt64.max
    /// Fresh revisions kept per node (older ones count as stale).
    static let freshRevisionLimit = 64

    public private(set) var nodes: [NodeID: Node]
    /// Live children by name.
    public private(set) var children: [NodeID: [String: NodeID]]
    /// Nodes changed since the last `takeChanges()`.
    public private(set) var changed: Set<NodeID> = []

    public init() {
        let rootAttributes = try! NodeAttributes(mode: 0o755, mtime: Timestamp(nanoseconds: 0))
        let root = Node(id: .root, parent: .root, name: "", revision: RevisionID(storage: .zero), attributes: rootAttributes,
                        content: .directory, deleted: false, modSeq: 0, modDevice: DeviceID(storage: .zero), freshRevisions: [])
        nodes = [.root: root]
        children = [.root: [:]]
    }

    /// A tree from stored nodes (the index); the root is made if absent.
    public init(loading stored: [Node]) {
        self.init()
        for n in stored { nodes[n.id] = n }
        for n in stored where !n.deleted && n.id != .root { children[n.parent, default: [:]][n.name] = n.id }
        for n in stored where n.isDirectory && !n.deleted { if children[n.id] == nil { children[n.id] = [:] } }
    }

    public func node(_ id: NodeID) -> Node? { nodes[id] }
    public func liveNode(_ id: NodeID) -> Node? { nodes[id].flatMap { $0.deleted ? nil : $0 } }
    public func child(of parent: NodeID, named name: String) -> NodeID? { children[parent]?[name] }
    public func childNames(of parent: NodeID) -> [String: NodeID] { children[parent] ?? [:] }

    /// Returns and clears the set of changed nodes.
    public mutating func takeChanges() -> Set<NodeID> {
        defer { changed = [] }
        return changed
    }

    /// The path of a live node from the root ("/a/b"), for messages and tests.
    public func path(of id: NodeID) -> String? {
        var parts: [String] = []
        var cur = id
        var guardCount = 0
        while cur != .root {
            guard let n = liveNode(cur), guardCount < 10_000 else { return nil }
            parts.append(n.name)
            cur = n.parent
            guardCount += 1
        }
        return "/" + parts.reversed().joined(separator: "/")
    }

    // MARK: Replay

    /// Applies a batch's operations in order.
    public mutating func apply(_ operations: [LockWire.Operation], context: ReplayContext) {
        for op in operations { apply(op, context: context) }
    }

    /// Applies one operation with the rules above.
    public mutating func apply(_ op: LockWire.Operation, context c: ReplayContext) {
        switch op {
        case let .create(id, parent, name, revision, attributes, content):
            guard nodes[id] == nil, id != .root else { return }
            var home = parent
            if !reviveFolder(parent, context: c) { home = .root }
            let finalName = freeName(name.value, in: home, context: c, tag: revision)
            put(Node(id: id, parent: home, name: finalName, revision: revision, attributes: attributes, content: content,
                     deleted: false, modSeq: c.seq, modDevice: c.device, freshRevisions: [revision]))

        case let .write(id, base, revision, mtime, manifest):
            guard var n = nodes[id], n.kind == .file else { return }
            if n.deleted {
                // Content written into a deleted file brings it (and its folders) back.
                n.content = .file(manifest)
                n.attributes = n.attributes.with(mtime: mtime)
                n.revision = revision
                n.freshRevisions = [revision]
                n.touch(by: c.device, seq: c.seq)
                revive(n, context: c)
            } else if n.freshRevisions.contains(base) {
                n.content = .file(manifest)
                n.attributes = n.attributes.with(mtime: mtime)
                n.revision = revision
                n.freshRevisions = [revision]
                n.touch(by: c.device, seq: c.seq)
                put(n)
            } else {
                // Stale base: keep the current version, and this one beside it.
                let copyID = Self.conflictNodeID(of: id, revision: revision)
                guard nodes[copyID] == nil else { return }
                let name = freeName(Self.conflictName(n.name, context: c), in: n.parent, context: c, tag: revision)
                put(Node(id: copyID, parent: n.parent, name: name, revision: revision,
                         attributes: n.attributes.with(mtime: mtime), content: .file(manifest), deleted: false,
                         modSeq: c.seq, modDevice: c.device, freshRevisions: [revision]))
            }

        case let .move(id, parent, name):
            guard id != .root, var n = liveNode(id) else { return }
            // A target folder deleted elsewhere comes back (as for a create into it).
            guard reviveFolder(parent, context: c) else { dropMove(n, context: c); return }
            // A move under itself would make a cycle: dropped.
            var cur = parent
            while cur != .root {
                if cur == id { dropMove(n, context: c); return }
                guard let p = nodes[cur] else { dropMove(n, context: c); return }
                cur = p.parent
            }
            if n.parent == parent && n.name == name.value { return }
            children[n.parent]?[n.name] = nil
            n.parent = parent
            n.name = freeName(name.value, in: parent, context: c, tag: n.revision)
            n.touch(by: c.device, seq: c.seq)
            put(n)

        case let .delete(id, base):
            guard id != .root, let n = liveNode(id) else { return }
            if n.isDirectory {
                deleteFolder(n, context: c)
            } else if n.freshRevisions.contains(base) {
                tombstone(n)
            }

        case let .setAttributes(id, _, revision, attributes):
            guard var n = liveNode(id) else { return }
            n.attributes = attributes
            n.revision = revision
            n.freshRevisions.append(revision)
            if n.freshRevisions.count > Self.freshRevisionLimit { n.freshRevisions.removeFirst() }
            n.touch(by: c.device, seq: c.seq)
            put(n)
        }
    }

    // MARK: Rule helpers

    /// The device id of changes made by the rules themselves.
    static let rulesDevice = DeviceID(storage: .zero)

    /// A dropped move leaves the node where it was, which its mover did not
    /// expect: it counts as a change nobody saw, so a folder delete by the
    /// mover (made believing the node elsewhere) keeps it.
    private mutating func dropMove(_ n: Node, context c: ReplayContext) {
        var n = n
        n.touch(by: Self.rulesDevice, seq: c.seq)
        nodes[n.id] = n
        changed.insert(n.id)
    }

    private mutating func put(_ n: Node) {
        if let old = nodes[n.id], !old.deleted, old.id != .root, children[old.parent]?[old.name] == n.id {
            children[old.parent]?[old.name] = nil
        }
        nodes[n.id] = n
        if !n.deleted && n.id != .root { children[n.parent, default: [:]][n.name] = n.id }
        if n.isDirectory && !n.deleted && children[n.id] == nil { children[n.id] = [:] }
        changed.insert(n.id)
        if n.id != .root { changed.insert(n.parent) }
    }

    private mutating func tombstone(_ n: Node) {
        var t = n
        t.deleted = true
        if children[n.parent]?[n.name] == n.id { children[n.parent]?[n.name] = nil }
        nodes[n.id] = t
        children[n.id] = nil
        changed.insert(n.id)
        changed.insert(n.parent)
    }

    /// Makes `id` a live folder, reviving it and its ancestors if they were deleted.
    /// Returns false if `id` is unknown or not a folder.
    private mutating func reviveFolder(_ id: NodeID, context c: ReplayContext) -> Bool {
        guard let n = nodes[id], n.isDirectory else { return false }
        if n.deleted { revive(n, context: c) }
        return true
    }

    /// Brings a tombstone back under a live parent (reviving the parent chain;
    /// an unknown parent means the root), under a free name.
    private mutating func revive(_ n: Node, context c: ReplayContext) {
        var n = n
        if !reviveFolder(n.parent, context: c) { n.parent = .root }
        n.deleted = false
        n.name = freeName(n.name, in: n.parent, context: c, tag: n.revision, excluding: n.id)
        put(n)
    }

    /// Deletes a folder and what is in it, except what another device changed
    /// after the deleter's base (kept with the folders leading to it). A
    /// folder changed unseen (moved in, say) is kept with all it holds: the
    /// deleter never saw its contents there.
    private mutating func deleteFolder(_ folder: Node, context c: ReplayContext) {
        var order: [NodeID] = []
        var keep: Set<NodeID> = []
        var stack: [(NodeID, Bool)] = [(folder.id, false)]   // (node, inside a kept subtree)
        while let (id, inherited) = stack.popLast() {
            order.append(id)
            guard let n = nodes[id] else { continue }
            let unseen = id != folder.id && n.lastChange(notBy: c.device) > c.baseSeq
            if inherited || unseen {
                // Keep it and its chain up to the folder.
                var cur = id
                while keep.insert(cur).inserted, cur != folder.id, let p = nodes[cur] { cur = p.parent }
            }
            if n.isDirectory {
                let keepAll = inherited || unseen
                stack.append(contentsOf: (children[id] ?? [:]).values.sorted { $0.hex < $1.hex }.map { ($0, keepAll) })
            }
        }
        for id in order.reversed() where !keep.contains(id) {
            if let n = liveNode(id) { tombstone(n) }
        }
    }

    /// `name` if no other live node in `parent` has it; otherwise a
    /// deterministic variant: "stem (conflict from DEVICE DATE).ext", then " 2", " 3"…
    private func freeName(_ name: String, in parent: NodeID, context c: ReplayContext, tag: RevisionID,
                          excluding: NodeID? = nil) -> String {
        func free(_ s: String) -> Bool {
            guard let other = children[parent]?[s] else { return true }
            return other == excluding
        }
        if free(name) { return name }
        let conflict = Self.conflictName(name, context: c)
        if free(conflict) { return conflict }
        var i = 2
        while true {
            let candidate = Self.conflictName(name, context: c, suffix: " \(i)")
            if free(candidate) { return candidate }
            i += 1
        }
    }

    /// "report (conflict from 3fa2c1d0 2026-11-30 140233).txt": the device's
    /// id prefix and the batch's UTC time, before the extension. At most 255 bytes.
    public static func conflictName(_ name: String, context c: ReplayContext, suffix: String = "") -> String {
        let seconds = c.createdAt.nanoseconds / 1_000_000_000
        var t = time_t(seconds)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        let date = String(format: "%04d-%02d-%02d %02d%02d%02d", tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday,
                          tmv.tm_hour, tmv.tm_min, tmv.tm_sec)
        let tag = " (conflict from \(c.device.hex.prefix(8)) \(date)\(suffix))"
        var stem = name
        var ext = ""
        if let dot = name.lastIndex(of: "."), dot != name.startIndex, name.distance(from: dot, to: name.endIndex) <= 16 {
            stem = String(name[..<dot])
            ext = String(name[dot...])
        }
        while stem.utf8.count + tag.utf8.count + ext.utf8.count > 255, !stem.isEmpty { stem.removeLast() }
        return stem + tag + ext
    }

    /// The node id of the conflict copy a stale write makes: the same on every client.
    public static func conflictNodeID(of node: NodeID, revision: RevisionID) -> NodeID {
        let h = Hash.blake2b256(parts: [Array("lockfs conflict copy v1".utf8), node.bytes, revision.bytes])
        return try! NodeID(bytes: h.prefix(16))
    }
}

extension NodeAttributes {
    /// The same attributes with another mtime.
    public func with(mtime: Timestamp) -> NodeAttributes {
        (try? NodeAttributes(mode: mode, mtime: mtime, xattrs: xattrs)) ?? self
    }
}
