import Foundation
import LockWire

#if canImport(Glibc)
import Glibc
#endif

/// A FIFO or UNIX socket made on this device: it lives here only.
///
/// Such a node means something only to the processes of one machine (a
/// pipe between them, a socket a daemon listens on: git's fsmonitor makes
/// one in `.git`), so it is never synced: no operation is queued for it,
/// nothing is uploaded, other devices never see it. It is kept in the index
/// (`local_nodes`), so a FIFO survives a remount; a socket survives as a
/// name, like one on a local disk after its listener exited
/// (docs/design.md, "Local-only nodes").
public struct LocalNode: Sendable, Equatable {
    public enum Kind: UInt8, Sendable { case fifo = 1, socket = 2 }
    public var id: NodeID
    /// The synced folder it is in.
    public var parent: NodeID
    public var name: String
    public var kind: Kind
    /// Permission bits.
    public var mode: UInt32
    public var mtime: Timestamp
    public var ctime: Timestamp
}

extension Engine {
    /// Makes a FIFO or a UNIX socket in a folder, on this device only.
    /// - Throws: `.exists` if the name is taken (by a synced or a local-only
    ///   node), `.notFound` / `.notDirectory` for a bad parent.
    public func makeLocalNode(parent: UInt64, name: String, kind: LocalNode.Kind, mode: UInt32) throws -> Attributes {
        let (pid, n) = try freeSlot(parent: parent, name: name)
        let t = now()
        let node = LocalNode(id: .random(), parent: pid, name: n.value, kind: kind, mode: mode & 0o7777, mtime: t, ctime: t)
        let ino = try index.saveLocalNode(node)
        state.withLock { s in
            s.localNodes[node.id] = node
            s.inoByNode[node.id] = ino
            s.nodeByIno[ino] = node.id
        }
        return attributes(node, ino: ino)
    }

    func attributes(_ n: LocalNode, ino: UInt64) -> Attributes {
        let atime = state.withLock { $0.accessTimes[n.id] }
        return Attributes(ino: ino, kind: n.kind == .fifo ? .fifo : .socket, size: 0, mode: n.mode, mtime: n.mtime,
                          ctime: n.ctime, atime: atime ?? n.mtime)
    }

    /// The local-only node behind an inode, if it is one.
    func localNode(_ ino: UInt64) -> LocalNode? {
        state.withLock { s in s.nodeByIno[ino].flatMap { s.localNodes[$0] } }
    }

    /// The local-only node named `name` in folder `folder`, unless a synced
    /// node has that name (a synced node that arrives under its name hides it).
    static func localChild(of folder: NodeID, named name: String, in s: State) -> LocalNode? {
        let folder = s.local.resolved(folder)
        guard s.local.child(of: folder, named: name) == nil else { return nil }
        return s.localNodes.values.first { $0.name == name && s.local.resolved($0.parent) == folder }
    }

    /// The local-only nodes shown in folder `folder`.
    static func localChildren(of folder: NodeID, in s: State) -> [LocalNode] {
        let folder = s.local.resolved(folder)
        return s.localNodes.values.filter { s.local.resolved($0.parent) == folder && s.local.child(of: folder, named: $0.name) == nil }
    }

    /// The local-only node named `name` in the folder with inode `parent`.
    func localChild(parent: UInt64, name: String) -> LocalNode? {
        state.withLock { s in s.nodeByIno[parent].flatMap { Self.localChild(of: $0, named: name, in: s) } }
    }

    /// Whether the folder holds local-only nodes (then it is not empty: rmdir refuses).
    func hasLocalChildren(_ folder: NodeID) -> Bool {
        state.withLock { s in !Self.localChildren(of: folder, in: s).isEmpty }
    }

    /// Stores a changed local-only node (or removes it with `nil`).
    func updateLocalNode(_ id: NodeID, _ body: (inout LocalNode) throws -> Void) throws {
        guard var n = state.withLock({ $0.localNodes[id] }) else { throw LockError.notFound }
        try body(&n)
        n.ctime = now()
        _ = try index.saveLocalNode(n)
        state.withLock { $0.localNodes[id] = n }
    }

    func removeLocalNode(_ id: NodeID) throws {
        try index.deleteLocalNodes([id])
        state.withLock { _ = $0.localNodes.removeValue(forKey: id) }
        try forgetAccessTime(id)
    }

    /// mode, mtime and atime of a local-only node: kept here, like the node.
    func setLocalAttributes(_ n: LocalNode, ino: UInt64, mode: UInt32?, mtime: Timestamp?, atime: Timestamp?) throws -> Attributes {
        if let atime {
            try index.setAccessTimes([(n.id, atime)])
            state.withLock { $0.accessTimes[n.id] = atime }
        }
        if mode != nil || mtime != nil {
            try updateLocalNode(n.id) { n in
                if let mode { n.mode = mode & 0o7777 }
                if let mtime { n.mtime = mtime }
            }
        }
        return attributes(state.withLock { $0.localNodes[n.id] } ?? n, ino: ino)
    }

    /// Renames a local-only node within the mount. A node at the new name
    /// is replaced as rename(2) does (a synced file is deleted as by
    /// `unlink`); exchanging with a local-only node is refused.
    func renameLocal(_ src: LocalNode, newParent: UInt64, newName: String, mode: RenameMode) throws {
        let target = try validName(newName)
        let (dstParent, synced, local): (NodeID, Node?, LocalNode?) = try state.withLock { s in
            guard let pid = s.nodeByIno[newParent], let p = s.local.liveNode(pid) else { throw LockError.notFound }
            guard p.isDirectory else { throw LockError.notDirectory }
            let synced = s.local.child(of: pid, named: newName).flatMap { s.local.liveNode($0) }
            return (pid, synced, synced == nil ? Self.localChild(of: pid, named: newName, in: s) : nil)
        }
        if local?.id == src.id { return }
        if synced != nil || local != nil {
            switch mode {
            case .noReplace: throw LockError.exists
            case .exchange: throw LockError.invalid("a FIFO or socket cannot be exchanged")
            case .replace:
                if let synced {
                    if synced.isDirectory { throw LockError.isDirectory }
                    try deleteFile(synced)
                }
                if let local { try removeLocalNode(local.id) }
            }
        } else if mode == .exchange {
            throw LockError.notFound
        }
        try updateLocalNode(src.id) { n in
            n.parent = dstParent
            n.name = target.value
        }
    }

    /// Forgets local-only nodes whose folder is gone from the view (deleted
    /// on another device, which never saw them): they go with it.
    static func pruneLocalNodes(_ s: inout State) -> [NodeID] {
        let orphans = s.localNodes.values.filter { s.local.liveNode($0.parent) == nil }.map(\.id)
        for id in orphans { s.localNodes[id] = nil }
        return orphans
    }
}
