import Foundation
import LockChunker
import LockCrypto
import LockWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Inode numbers, lookups and the POSIX namespace changes made here.
extension Engine {
    // MARK: Inodes and lookups

    func ino(of id: NodeID) throws -> UInt64 {
        if let i = state.withLock({ $0.inoByNode[id] }) { return i }
        let allocated = try index.allocateInodes([id])
        return state.withLock { s in
            for (n, i) in allocated { s.inoByNode[n] = i; s.nodeByIno[i] = n }
            return s.inoByNode[id]!
        }
    }

    /// The node behind an inode. With `includingDeleted`, a node deleted
    /// since it was opened still answers (POSIX: an unlinked open file stays
    /// readable until closed).
    func node(_ ino: UInt64, includingDeleted: Bool = false) throws -> Node {
        try state.withLock { s in
            guard let id = s.nodeByIno[ino], let n = includingDeleted ? s.local.node(id) : s.local.liveNode(id) else {
                throw LockError.notFound
            }
            return n
        }
    }

    func attributes(_ n: Node) throws -> Attributes {
        var size = n.size
        let (st, atime) = state.withLock { ($0.staging[n.id], $0.accessTimes[n.id]) }
        if let st { size = st.file.size }
        let mtime = st?.mtime ?? n.attributes.mtime
        return Attributes(ino: try ino(of: n.id), kind: FileKind(n.kind), size: size, mode: st?.mode ?? n.attributes.mode,
                          mtime: mtime, ctime: n.ctime, atime: atime ?? mtime)
    }

    public func getattr(_ ino: UInt64) throws -> Attributes {
        if let local = localNode(ino) { return attributes(local, ino: ino) }
        return try attributes(try node(ino, includingDeleted: true))
    }

    public func lookup(parent: UInt64, name: String) throws -> Attributes {
        let found: (Node?, LocalNode?, UInt64?) = try state.withLock { s in
            guard let pid = s.nodeByIno[parent], let p = s.local.liveNode(pid) else { throw LockError.notFound }
            guard p.isDirectory else { throw LockError.notDirectory }
            if let cid = s.local.child(of: pid, named: name), let c = s.local.liveNode(cid) { return (c, nil, nil) }
            guard let l = Self.localChild(of: pid, named: name, in: s), let ino = s.inoByNode[l.id] else { throw LockError.notFound }
            return (nil, l, ino)
        }
        if let local = found.1, let ino = found.2 { return attributes(local, ino: ino) }
        return try attributes(found.0!)
    }

    /// The entries of a folder, sorted by name.
    public func list(_ ino: UInt64) throws -> [(name: String, attributes: Attributes)] {
        let (kids, localKids): ([Node], [(LocalNode, UInt64)]) = try state.withLock { s in
            guard let id = s.nodeByIno[ino], let n = s.local.liveNode(id) else { throw LockError.notFound }
            guard n.isDirectory else { throw LockError.notDirectory }
            return (s.local.childNames(of: id).values.compactMap { s.local.liveNode($0) },
                    Self.localChildren(of: id, in: s).compactMap { l in s.inoByNode[l.id].map { (l, $0) } })
        }
        let missing = state.withLock { s in kids.map(\.id).filter { s.inoByNode[$0] == nil } }
        if !missing.isEmpty {
            let allocated = try index.allocateInodes(missing)
            state.withLock { s in for (n, i) in allocated { s.inoByNode[n] = i; s.nodeByIno[i] = n } }
        }
        let all = try kids.map { ($0.name, try attributes($0)) } + localKids.map { ($0.0.name, attributes($0.0, ino: $0.1)) }
        return all.sorted { $0.0 < $1.0 }
    }

    /// The inode of a path from the vault's root ("/a/b" or "a/b").
    public func resolve(_ path: String) throws -> UInt64 {
        var ino: UInt64 = 1
        for part in path.split(separator: "/") where part != "." {
            ino = try lookup(parent: ino, name: String(part)).ino
        }
        return ino
    }

    public func readlink(_ ino: UInt64) throws -> String {
        guard case .symlink(let target) = try node(ino).content else { throw LockError.invalid("not a symbolic link") }
        return target
    }

    /// A node's extended attributes (none on a local-only node).
    public func xattrs(_ ino: UInt64) throws -> [ExtendedAttribute] {
        if localNode(ino) != nil { return [] }
        return try node(ino).attributes.xattrs
    }

    // MARK: Local changes

    func now() -> Timestamp { .now }

    /// Makes one local change durable and shows it: stored in the outbox,
    /// then replayed onto the local view. Coalesces a write into a queued
    /// create or write of the same file.
    ///
    /// - Parameters:
    ///   - mode: with a write, a mode set while the file was open: folded
    ///     into a queued create of the file, else its own operation.
    ///   - chunks: small sealed chunks the operation needs, stored in the
    ///     same index transaction (larger ones are in outbox files already).
    /// A change this device made on the revision its open staging copy is
    /// based on moves that base along (a chmod while open must not make the
    /// next write look concurrent with it); one made on a newer revision (a
    /// write the journal brought in meanwhile) does not.
    static func advanceStaging(_ s: inout State, past op: LockWire.Operation) {
        // This device's own change of the node: what a read showed before is moot.
        s.shownRevision[op.node] = nil
        let base: RevisionID
        switch op {
        case .write(_, let b, _, _, _), .setAttributes(_, let b, _, _): base = b
        default: return
        }
        if let made = op.madeRevision, s.staging[op.node]?.revision == base { s.staging[op.node]?.revision = made }
    }

    func commitLocal(_ op: LockWire.Operation, mode: UInt32? = nil, chunks: [SealedChunk] = []) throws {
        let t = now()
        let foldedMode = try state.withLock { s -> Bool in
            // Coalesce content into a queued create/write of the same node that is the last
            // operation on it, when it was made on that operation's version. Made on another
            // (the queued write became a conflict copy in the view, and this one edits the
            // version that won), folding would drop the queued version.
            if case let .write(node, base, revision, mtime, manifest) = op,
               let i = s.pending.lastIndex(where: { $0.operation.node == node }), s.pending[i].state == .queued,
               s.pending[i].operation.madeRevision == base {
                var merged: LockWire.Operation?
                var newAttributes: NodeAttributes?
                switch s.pending[i].operation {
                case let .create(n, parent, name, _, attributes, .file):
                    let attrs = (try? NodeAttributes(mode: mode ?? attributes.mode, mtime: mtime, xattrs: attributes.xattrs))
                        ?? attributes.with(mtime: mtime)
                    if mode != nil { newAttributes = attrs }
                    merged = .create(node: n, parent: parent, name: name, revision: revision,
                                     attributes: attrs, content: .file(manifest))
                case let .write(n, oldBase, _, _, _):
                    merged = .write(node: n, base: oldBase, revision: revision, mtime: mtime, manifest: manifest)
                default: break
                }
                if let merged, try index.replaceQueued(id: s.pending[i].id, with: merged, device: device, madeAt: s.pending[i].madeAt,
                                                       chunks: chunks) {
                    for c in chunks { s.outboxChunks[c.id] = c.bytes.count }
                    s.unsyncedCommits += 1
                    s.lastCommitAt = .now
                    s.pending[i].operation = merged
                    let context = ReplayContext(device: device, createdAt: t, seq: Tree.pendingSeq, baseSeq: s.cursor)
                    s.local.apply(op, context: context)
                    Self.advanceStaging(&s, past: op)
                    if let newAttributes {
                        // The view shows the folded mode at once (the next rebase replays the merged create).
                        s.local.apply(.setAttributes(node: node, base: revision, revision: revision, attributes: newAttributes), context: context)
                    }
                    return true
                }
            }
            let id: Int64
            if case let .create(node, _, _, _, _, _) = op, s.inoByNode[node] == nil {
                // A new node: its inode number in the same synced commit.
                let (opID, ino) = try index.enqueue(op, device: device, madeAtSeq: s.cursor, madeAt: t, chunks: chunks,
                                                    allocatingInodeFor: node)
                s.inoByNode[node] = ino!
                s.nodeByIno[ino!] = node
                id = opID
            } else {
                id = try index.enqueue(op, device: device, madeAtSeq: s.cursor, madeAt: t, chunks: chunks).id
            }
            for c in chunks { s.outboxChunks[c.id] = c.bytes.count }
            s.unsyncedCommits += 1
            s.lastCommitAt = .now
            s.pending.append(PendingOperation(id: id, operation: op, madeAtSeq: s.cursor, madeAt: t, state: .queued, batchStamp: nil))
            s.local.apply(op, context: ReplayContext(device: device, createdAt: t, seq: Tree.pendingSeq, baseSeq: s.cursor))
            Self.advanceStaging(&s, past: op)
            return false
        }
        state.withLock { _ = $0.local.takeChanges() }
        uploadSignal.yield()
        // Not folded into a create: the mode is its own change, after the content.
        if let mode, !foldedMode, case .write(let node, _, _, _, _) = op,
           let n = state.withLock({ $0.local.liveNode(node) }), n.attributes.mode != mode {
            try commitLocal(.setAttributes(node: node, base: n.revision, revision: .random(),
                                           attributes: try NodeAttributes(mode: mode, mtime: n.attributes.mtime, xattrs: n.attributes.xattrs)))
        }
    }

    func validName(_ name: String) throws -> Name {
        do { return try Name(name) } catch {
            if name.utf8.count > 255 { throw LockError.nameTooLong }
            throw LockError.invalid("“\(name)” is not a valid file name")
        }
    }

    /// The parent folder and that no live node has `name` in it.
    func freeSlot(parent: UInt64, name: String) throws -> (NodeID, Name) {
        let n = try validName(name)
        let pid: NodeID = try state.withLock { s in
            guard let pid = s.nodeByIno[parent], let p = s.local.liveNode(pid) else { throw LockError.notFound }
            guard p.isDirectory else { throw LockError.notDirectory }
            if s.local.child(of: pid, named: name) != nil || Self.localChild(of: pid, named: name, in: s) != nil {
                throw LockError.exists
            }
            return pid
        }
        return (pid, n)
    }

    func create(parent: UInt64, name: String, mode: UInt32, content: NodeContent) throws -> Attributes {
        let (pid, n) = try freeSlot(parent: parent, name: name)
        let id = NodeID.random()
        let attrs: NodeAttributes
        do { attrs = try NodeAttributes(mode: mode & 0o7777, mtime: now()) } catch { throw LockError.invalid("mode") }
        try commitLocal(.create(node: id, parent: pid, name: n, revision: .random(), attributes: attrs, content: content))
        return try attributes(state.withLock { $0.local.liveNode(id) }!)
    }

    public func createFile(parent: UInt64, name: String, mode: UInt32) throws -> Attributes {
        try create(parent: parent, name: name, mode: mode, content: .file(.empty))
    }

    /// Makes a folder. In a setgid folder the new folder is setgid too:
    /// mkdir(2) drops S_ISGID from the mode it is given, and a Linux file
    /// system (BSD group semantics) sets it from the parent; through FUSE that
    /// is the file system's job.
    public func mkdir(parent: UInt64, name: String, mode: UInt32) throws -> Attributes {
        let inherited = state.withLock { s in
            s.nodeByIno[parent].flatMap { s.local.liveNode($0) }.map { $0.attributes.mode & UInt32(S_ISGID) } ?? 0
        }
        return try create(parent: parent, name: name, mode: mode | inherited, content: .directory)
    }

    public func symlink(parent: UInt64, name: String, target: String) throws -> Attributes {
        guard WireLimits.symlinkTargetBytes.contains(target.utf8.count), !target.utf8.contains(0) else { throw LockError.nameTooLong }
        return try create(parent: parent, name: name, mode: 0o777, content: .symlink(target: target))
    }

    func child(parent: UInt64, name: String) throws -> Node {
        try state.withLock { s in
            guard let pid = s.nodeByIno[parent], let p = s.local.liveNode(pid) else { throw LockError.notFound }
            guard p.isDirectory else { throw LockError.notDirectory }
            guard let cid = s.local.child(of: pid, named: name), let c = s.local.liveNode(cid) else { throw LockError.notFound }
            return c
        }
    }

    public func unlink(parent: UInt64, name: String) throws {
        if let local = localChild(parent: parent, name: name) { try removeLocalNode(local.id); return }
        let n = try child(parent: parent, name: name)
        if n.isDirectory { throw LockError.isDirectory }
        try deleteFile(n)
    }

    /// Deletes a file on this device; an open copy of it is no longer committed.
    func deleteFile(_ n: Node) throws {
        try commitLocal(.delete(node: n.id, base: n.revision))
        state.withLock { $0.staging[n.id]?.unlinked = true }
        try forgetAccessTime(n.id)
    }

    /// Drops the access time of a node deleted here.
    func forgetAccessTime(_ id: NodeID) throws {
        guard state.withLock({ $0.accessTimes.removeValue(forKey: id) }) != nil else { return }
        try index.setAccessTimes([(id, nil)])
    }

    public func rmdir(parent: UInt64, name: String) throws {
        if localChild(parent: parent, name: name) != nil { throw LockError.notDirectory }
        let n = try child(parent: parent, name: name)
        guard n.isDirectory else { throw LockError.notDirectory }
        // A FIFO or socket in it counts: rm -rf removes it first, as anything else.
        guard state.withLock({ $0.local.childNames(of: n.id).isEmpty }), !hasLocalChildren(n.id) else { throw LockError.notEmpty }
        try commitLocal(.delete(node: n.id, base: n.revision))
        try forgetAccessTime(n.id)
    }

    public enum RenameMode: Sendable { case replace, noReplace, exchange }

    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String, mode: RenameMode = .replace) throws {
        if let local = localChild(parent: parent, name: name) {
            try renameLocal(local, newParent: newParent, newName: newName, mode: mode)
            return
        }
        let src = try child(parent: parent, name: name)
        let target = try validName(newName)
        let (dstParent, existing): (NodeID, Node?) = try state.withLock { s in
            guard let pid = s.nodeByIno[newParent], let p = s.local.liveNode(pid) else { throw LockError.notFound }
            guard p.isDirectory else { throw LockError.notDirectory }
            // Moving a folder under itself.
            var cur = pid
            while cur != .root {
                if cur == src.id { throw LockError.invalid("a folder cannot move into itself") }
                cur = s.local.node(cur)?.parent ?? .root
            }
            return (pid, s.local.child(of: pid, named: newName).flatMap { s.local.liveNode($0) })
        }
        if let existing, existing.id == src.id { return }
        if existing == nil, let local = localChild(parent: newParent, name: newName) {
            // A FIFO or socket at the new name: replaced as a file is; never exchanged.
            switch mode {
            case .noReplace: throw LockError.exists
            case .exchange: throw LockError.invalid("a FIFO or socket cannot be exchanged")
            case .replace:
                if src.isDirectory { throw LockError.notDirectory }
                try removeLocalNode(local.id)
            }
        }
        switch mode {
        case .noReplace:
            if existing != nil { throw LockError.exists }
            try commitLocal(.move(node: src.id, parent: dstParent, name: target))
        case .exchange:
            guard let other = existing else { throw LockError.notFound }
            let srcParent = src.parent
            let parking = try Name(".lockfs-exchange-\(NodeID.random().hex.prefix(12))")
            try commitLocal(.move(node: other.id, parent: srcParent, name: parking))
            try commitLocal(.move(node: src.id, parent: dstParent, name: target))
            try commitLocal(.move(node: other.id, parent: srcParent, name: try Name(name)))
        case .replace:
            if let existing {
                if existing.isDirectory {
                    guard src.isDirectory else { throw LockError.isDirectory }
                    guard state.withLock({ $0.local.childNames(of: existing.id).isEmpty }), !hasLocalChildren(existing.id) else {
                        throw LockError.notEmpty
                    }
                } else if src.isDirectory {
                    throw LockError.notDirectory
                }
                if existing.isDirectory {
                    try commitLocal(.delete(node: existing.id, base: existing.revision))
                } else {
                    try deleteFile(existing)
                }
            }
            try commitLocal(.move(node: src.id, parent: dstParent, name: target))
        }
    }

    /// Changes mode, mtime and/or atime (size goes through `truncate`).
    ///
    /// The atime is this device's own (the index's `atimes`): stored at
    /// once, never synced.
    public func setAttributes(_ ino: UInt64, mode: UInt32? = nil, mtime: Timestamp? = nil, atime: Timestamp? = nil) throws -> Attributes {
        if let local = localNode(ino) { return try setLocalAttributes(local, ino: ino, mode: mode, mtime: mtime, atime: atime) }
        let n = try node(ino)
        if let atime {
            try index.setAccessTimes([(n.id, atime)])
            state.withLock { $0.accessTimes[n.id] = atime }
        }
        let a = n.attributes
        // A file open with unsaved changes takes them with its content at
        // close (tar and cp -a set times and modes between write and close):
        // one synced commit instead of three.
        let deferred = state.withLock { s -> Bool in
            guard var st = s.staging[n.id], st.dirty, !st.unlinked else { return false }
            if let mode { st.mode = mode & 0o7777 }
            if let mtime { st.mtime = mtime }
            s.staging[n.id] = st
            return true
        }
        if deferred { return try getattr(ino) }
        let new = try NodeAttributes(mode: (mode ?? a.mode) & 0o7777, mtime: mtime ?? a.mtime, xattrs: a.xattrs)
        if new != a { try commitLocal(.setAttributes(node: n.id, base: n.revision, revision: .random(), attributes: new)) }
        if let mtime { state.withLock { $0.staging[n.id]?.mtime = mtime } }
        return try getattr(ino)
    }

    public func setXattr(_ ino: UInt64, name: String, value: [UInt8]?) throws {
        if localNode(ino) != nil { throw LockError.notSupported("extended attributes on a FIFO or socket") }
        let n = try node(ino)
        var list = n.attributes.xattrs.filter { $0.name != name }
        if let value {
            do { list.append(try ExtendedAttribute(name: name, value: value)) } catch { throw LockError.invalid("extended attribute too large") }
        } else if list.count == n.attributes.xattrs.count {
            throw LockError.notFound
        }
        let new: NodeAttributes
        do { new = try NodeAttributes(mode: n.attributes.mode, mtime: n.attributes.mtime, xattrs: list) } catch {
            throw LockError.invalid("too many extended attributes")
        }
        try commitLocal(.setAttributes(node: n.id, base: n.revision, revision: .random(), attributes: new))
    }
}
