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
    /// When an operation last changed the node (its batch's time), whatever
    /// it changed: content, name, mode, entries (a folder). A file system's
    /// ctime: a chmod moves it and not the mtime. The same on every client.
    public var ctime = Timestamp(nanoseconds: 0)

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
    /// The replay rules the batch was made for (its version byte; docs/design.md, "Replay rules").
    public var rules: UInt8

    public init(device: DeviceID, createdAt: Timestamp, seq: UInt64, baseSeq: UInt64, rules: UInt8 = OperationBatch.wireVersion) {
        self.device = device
        self.createdAt = createdAt
        self.seq = seq
        self.baseSeq = baseSeq
        self.rules = rules
    }
}

/// The vault's tree and the deterministic rules that apply operations to it.
///
/// Every client replays the same journal entries in the same order with
/// these rules, so all converge on the same tree without asking the server
/// (docs/design.md, "Replay rules"). The rules never lose written content.
/// Rules 2 (batches of version 2, what this client writes):
/// - an operation that names the version it acts on (write, delete, set
///   attributes: their `base`) acts on the node that holds that version now:
///   the node itself, or the conflict copy the writer's earlier write became;
/// - a create whose node exists is a duplicate and is ignored; a folder
///   whose name a live folder has merges into it (its id becomes an alias);
///   another taken name gets a conflict name; a deleted parent comes back;
/// - a write whose base is stale lands as a conflict copy beside the file
///   ("NAME (conflict from DEVICE DATE)"); a write to a deleted file brings it
///   back (and its folders);
/// - a move that would make a cycle is dropped; a move into a deleted folder
///   brings the folder back; a name taken in the target gets a conflict name;
/// - a file delete whose base is stale (content the deleter had not seen) is
///   dropped; a folder delete takes only an empty folder: whatever is still
///   in it at replay is something the deleter did not see there;
/// - attribute changes are last-writer-wins; only a change made on the
///   current version makes a revision later writes may name as fresh.
/// - a folder whose entries an operation changes (a create, a move out of
///   or into it, a delete or a revival that happens) takes the batch's time
///   as its mtime: a side effect that changes no conflict state.
/// Rules 1 (version-1 batches) differ: no aliases or redirection, attribute
/// revisions are always fresh, and a folder delete takes what is in it
/// except what other devices changed after the deleter's base.
public struct Tree: Sendable {
    /// `modSeq` of changes not yet in the journal.
    public static let pendingSeq = UInt64.max
    /// Fresh revisions kept per node (older ones count as stale).
    static let freshRevisionLimit = 64

    public private(set) var nodes: [NodeID: Node]
    /// Live children by name.
    public private(set) var children: [NodeID: [String: NodeID]]
    /// Folders merged into another (rules 2): alias → the folder that stayed.
    public private(set) var aliases: [NodeID: NodeID] = [:]
    /// Which node holds each fresh revision (rules 2 follow a version there).
    private var holders: [RevisionID: NodeID] = [:]
    /// Nodes changed since the last `takeChanges()`.
    public private(set) var changed: Set<NodeID> = []
    /// Aliases made since the last `takeChanges()`.
    public private(set) var newAliases: [NodeID: NodeID] = [:]

    public init() {
        let rootAttributes = try! NodeAttributes(mode: 0o755, mtime: Timestamp(nanoseconds: 0))
        let root = Node(id: .root, parent: .root, name: "", revision: RevisionID(storage: .zero), attributes: rootAttributes,
                        content: .directory, deleted: false, modSeq: 0, modDevice: DeviceID(storage: .zero), freshRevisions: [])
        nodes = [.root: root]
        children = [.root: [:]]
    }

    /// A tree from stored nodes and aliases (the index); the root is made if absent.
    public init(loading stored: [Node], aliases: [NodeID: NodeID] = [:]) {
        self.init()
        for n in stored { nodes[n.id] = n }
        for n in stored where !n.deleted && n.id != .root { children[n.parent, default: [:]][n.name] = n.id }
        for n in stored where n.isDirectory && !n.deleted { if children[n.id] == nil { children[n.id] = [:] } }
        for n in stored { for r in n.freshRevisions { holders[r] = n.id } }
        self.aliases = aliases
    }

    /// The node an id stands for: itself, or the folder it was merged into.
    public func resolved(_ id: NodeID) -> NodeID {
        var cur = id
        for _ in 0..<64 { guard let next = aliases[cur] else { return cur }; cur = next }
        return cur
    }

    public func node(_ id: NodeID) -> Node? { nodes[resolved(id)] }
    public func liveNode(_ id: NodeID) -> Node? { nodes[resolved(id)].flatMap { $0.deleted ? nil : $0 } }
    public func child(of parent: NodeID, named name: String) -> NodeID? { children[resolved(parent)]?[name] }
    public func childNames(of parent: NodeID) -> [String: NodeID] { children[resolved(parent)] ?? [:] }

    /// Returns and clears the set of changed nodes (and the new aliases: `takeAliases`).
    public mutating func takeChanges() -> Set<NodeID> {
        defer { changed = [] }
        return changed
    }

    /// Returns and clears the aliases made since the last call.
    public mutating func takeAliases() -> [NodeID: NodeID] {
        defer { newAliases = [:] }
        return newAliases
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
        let v2 = c.rules >= 2
        switch op {
        case let .create(id, parent, name, revision, attributes, content):
            guard nodes[id] == nil, aliases[id] == nil, id != .root else { return }
            var home = resolved(parent)
            if !reviveFolder(home, context: c) { home = .root }
            if v2, content == .directory, let other = children[home]?[name.value], let o = nodes[other], o.isDirectory {
                // Two devices made the same folder: one folder, holding what both put in it.
                aliases[id] = other
                newAliases[id] = other
                return
            }
            let finalName = freeName(name.value, in: home, context: c, tag: revision)
            put(Node(id: id, parent: home, name: finalName, revision: revision, attributes: attributes, content: content,
                     deleted: false, modSeq: c.seq, modDevice: c.device, freshRevisions: [revision]), at: c.createdAt)
            entriesChanged(home, context: c)

        case let .write(id, base, revision, mtime, manifest):
            let target = v2 ? holder(of: base, else: id) : id
            guard var n = nodes[target], n.kind == .file else { return }
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
                put(n, at: c.createdAt)
            } else {
                // Stale base: keep the current version, and this one beside it.
                let copyID = Self.conflictNodeID(of: target, revision: revision)
                guard nodes[copyID] == nil else { return }
                let name = freeName(Self.conflictName(n.name, context: c), in: n.parent, context: c, tag: revision)
                put(Node(id: copyID, parent: n.parent, name: name, revision: revision,
                         attributes: n.attributes.with(mtime: mtime), content: .file(manifest), deleted: false,
                         modSeq: c.seq, modDevice: c.device, freshRevisions: [revision]), at: c.createdAt)
                entriesChanged(n.parent, context: c)
            }

        case let .move(id, parent, name):
            let id = resolved(id), parent = resolved(parent)
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
            let oldParent = n.parent
            children[n.parent]?[n.name] = nil
            n.parent = parent
            n.name = freeName(name.value, in: parent, context: c, tag: n.revision)
            n.touch(by: c.device, seq: c.seq)
            put(n, at: c.createdAt)
            entriesChanged(oldParent, context: c)
            entriesChanged(parent, context: c)

        case let .delete(id, base):
            let target = v2 ? holder(of: base, else: resolved(id)) : id
            guard target != .root, let n = liveNode(target) else { return }
            if n.isDirectory {
                if !v2 {
                    deleteFolder(n, context: c)
                } else if (children[target] ?? [:]).isEmpty {
                    // The deleter emptied it (rm -rf deletes what is inside first); anything
                    // still here is something it did not see here: the folder stays for it.
                    tombstone(n, at: c.createdAt)
                    entriesChanged(n.parent, context: c)
                }
            } else if n.freshRevisions.contains(base) {
                tombstone(n, at: c.createdAt)
                entriesChanged(n.parent, context: c)
            }

        case let .setAttributes(id, base, revision, attributes):
            let target = v2 ? holder(of: base, else: resolved(id)) : id
            guard var n = liveNode(target) else { return }
            n.attributes = attributes
            if !v2 || n.freshRevisions.contains(base) {
                n.revision = revision
                n.freshRevisions.append(revision)
                if n.freshRevisions.count > Self.freshRevisionLimit { n.freshRevisions.removeFirst() }
            } // else: made on a version that is not current; later writes on it are stale.
            n.touch(by: c.device, seq: c.seq)
            put(n, at: c.createdAt)
        }
    }

    /// The node holding the version `base` names: `id` when it is fresh
    /// there, else the node where it is fresh now (the conflict copy that
    /// the writer's earlier write became), else `id` (stale).
    private func holder(of base: RevisionID, else id: NodeID) -> NodeID {
        let id = resolved(id)
        if let n = nodes[id], n.freshRevisions.contains(base) { return id }
        if let other = holders[base], nodes[other]?.freshRevisions.contains(base) == true { return other }
        return id
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

    /// Stores a node changed by an operation of time `time` (its change time).
    private mutating func put(_ n: Node, at time: Timestamp) {
        var n = n
        n.ctime = time
        if let old = nodes[n.id] {
            if !old.deleted, old.id != .root, children[old.parent]?[old.name] == n.id { children[old.parent]?[old.name] = nil }
            for r in old.freshRevisions where holders[r] == n.id && !n.freshRevisions.contains(r) { holders[r] = nil }
        }
        nodes[n.id] = n
        for r in n.freshRevisions { holders[r] = n.id }
        if !n.deleted && n.id != .root { children[n.parent, default: [:]][n.name] = n.id }
        if n.isDirectory && !n.deleted && children[n.id] == nil { children[n.id] = [:] }
        changed.insert(n.id)
        if n.id != .root { changed.insert(n.parent) }
    }

    private mutating func tombstone(_ n: Node, at time: Timestamp) {
        var t = n
        t.deleted = true
        t.ctime = time
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
        put(n, at: c.createdAt)
        entriesChanged(n.parent, context: c)
    }

    /// Rules 2: a folder whose entries an operation changed (a node made,
    /// brought back, moved in or out, deleted in it) takes the batch's time
    /// as its mtime, as a local file system does. A side effect, the same on
    /// every client: its revision, fresh revisions and last change stay, so
    /// it makes no conflict and no folder delete sees a change.
    private mutating func entriesChanged(_ folder: NodeID, context c: ReplayContext) {
        guard c.rules >= 2, var f = nodes[folder], f.isDirectory, !f.deleted else { return }
        f.attributes = f.attributes.with(mtime: c.createdAt)
        f.ctime = c.createdAt
        nodes[folder] = f
        changed.insert(folder)
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
            if let n = liveNode(id) { tombstone(n, at: c.createdAt) }
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

    /// Whether `name` is one `conflictName` makes: the tag in full (eight
    /// hex digits of a device, a date and time, perhaps a number), at the
    /// end of the stem. A file the user named "x (conflict from y)" is not.
    public static func isConflictName(_ name: String) -> Bool {
        name.range(of: #" \(conflict from [0-9a-f]{8} [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{6}( [0-9]+)?\)(\.[^.]*)?$"#,
                   options: .regularExpression) != nil
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
