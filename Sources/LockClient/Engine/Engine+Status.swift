import Foundation
import LockChunker
import LockCrypto
import LockWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Waiting for sync, status and the view as paths (tests and tools).
extension Engine {
    // MARK: Waiting and status

    /// Returns when every local change is in the journal and applied, or throws on an integrity alarm.
    /// - Throws: `CancellationError` when the calling task is cancelled (`lockfs sync --timeout`).
    public func waitUntilSynced() async throws {
        while true {
            try Task.checkCancellation()
            let (empty, alarm) = state.withLock { ($0.pending.isEmpty, $0.alarm) }
            if let alarm { throw LockError.integrity(alarm) }
            if empty { return }
            // Bug fix: the wait ignored cancellation, so `sync --timeout` never
            // returned while a change stayed queued (its task group waited for it).
            await withTaskCancellationHandler {
                await withCheckedContinuation { c in
                    let resumeNow = state.withLock { s -> Bool in
                        if s.pending.isEmpty || s.alarm != nil || Task.isCancelled { return true }
                        s.uploadWaiters.append(c)
                        return false
                    }
                    if resumeNow { c.resume() }
                }
            } onCancel: {
                wakeUploadWaiters()
            }
        }
    }

    func wakeUploadWaiters() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in defer { s.uploadWaiters = [] }; return s.uploadWaiters }
        for w in waiters { w.resume() }
    }

    public func status() -> EngineStatus {
        state.withLock { s in
            EngineStatus(online: s.online, lastError: s.lastError, lastSync: s.lastSync, cursor: s.cursor,
                         queuedOperations: s.pending.count, queuedBytes: s.outboxChunks.values.reduce(0, +),
                         cacheSize: cache.totalSize, cacheLimit: cache.limit,
                         pinnedBytes: Self.pinnedBytes(s),
                         integrityAlarm: s.alarm, ignoredEntries: s.ignoredEntries, lastIgnoredEntry: s.lastIgnored,
                         head: headFingerprint(s.head),
                         silentDevices: AttestationPolicy.silentDevices(roster: s.roster, tails: s.deviceTails, now: Date(),
                                                                        limit: options.silenceWarning))
        }
    }

    static func pinnedBytes(_ s: State) -> Int {
        files(under: s.pins, in: s).reduce(0) { $0 + (s.local.node($1)?.size ?? 0) }
    }

    /// Records a pin (sticky for folders) without fetching; `pin` fetches.
    public func markPinned(_ ino: UInt64) throws {
        let n = try node(ino)
        try index.setPinned(n.id, true)
        state.withLock { _ = $0.pins.insert(n.id) }
    }

    /// Bytes of content under a node (a file, or a folder's files) that are
    /// local, and in all (each chunk counted once).
    public func localBytes(under ino: UInt64) throws -> (local: Int, total: Int) {
        let n = try node(ino)
        let chunks = state.withLock { s in Self.uniqueChunks(of: Self.files(under: [n.id], in: s), in: s) }
        let local = chunks.filter { cache.contains($0.id) }.reduce(0) { $0 + $1.length }
        return (local, chunks.reduce(0) { $0 + $1.length })
    }

    /// Pins a file or folder (sticky for folders) and fetches all of it.
    /// - Parameter progress: called with (bytes done, bytes total).
    public func pin(_ ino: UInt64, progress: (@Sendable (Int, Int) -> Void)? = nil) async throws {
        let n = try node(ino)
        try index.setPinned(n.id, true)
        let chunks: [Manifest.Chunk] = state.withLock { s in
            s.pins.insert(n.id)
            return Self.uniqueChunks(of: Self.files(under: s.pins, in: s), in: s)
        }
        let total = chunks.reduce(0) { $0 + $1.length }
        let done = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            var inFlight = 0
            for c in chunks {
                if cache.contains(c.id) { progress?(done.add(c.length), total); continue }
                if inFlight == 4 { try await group.next(); inFlight -= 1 }
                group.addTask { [self] in
                    _ = try await chunkPlaintext(c.id)
                    progress?(done.add(c.length), total)
                }
                inFlight += 1
            }
            try await group.waitForAll()
        }
    }

    /// Unpins; the space becomes evictable and the cache shrinks to its limit.
    public func unpin(_ ino: UInt64) throws {
        let n = try node(ino)
        try index.setPinned(n.id, false)
        state.withLock { _ = $0.pins.remove(n.id) }
        evictIfNeeded()
    }

    public func isPinned(_ ino: UInt64) throws -> Bool {
        let n = try node(ino)
        return state.withLock { isPinned($0, n.id) }
    }

    /// What `user.lockfs.status` reports for a node.
    public struct FileState: Sendable {
        public var isConflictCopy: Bool
        /// A local change to it is not yet on the server.
        public var isPending: Bool
        public var isPinned: Bool
        /// Every chunk is local.
        public var isCached: Bool
        /// A FIFO or socket of this device (`LocalNode`): never synced.
        public var isLocalOnly = false
    }

    public func fileState(_ ino: UInt64) throws -> FileState {
        if localNode(ino) != nil { return FileState(isConflictCopy: false, isPending: false, isPinned: false, isCached: true, isLocalOnly: true) }
        let n = try node(ino)
        let (pending, pinned) = state.withLock { s in (s.pending.contains { $0.operation.node == n.id }, isPinned(s, n.id)) }
        return FileState(isConflictCopy: Tree.isConflictName(n.name), isPending: pending, isPinned: pinned,
                         isCached: isLocal(n))
    }

    /// Whether every chunk of a file is local.
    public func isCached(_ ino: UInt64) throws -> Bool { isLocal(try node(ino)) }

    /// Whether every chunk of `n` is on this device: in the cache, or still
    /// in the outbox (uploaded chunks wait there until local writes pause;
    /// the file is no less local meanwhile).
    func isLocal(_ n: Node) -> Bool {
        guard let chunks = n.manifest?.chunks else { return true }
        let missing = chunks.filter { !cache.contains($0.id) }
        guard !missing.isEmpty else { return true }
        return state.withLock { s in missing.allSatisfy { s.outboxChunks[$0.id] != nil || s.cacheMoves.contains($0.id) } }
    }

    /// The tree as the local view shows it: path → node (for tests and tools).
    public func snapshot() -> [String: Node] {
        state.withLock { s in
            var out: [String: Node] = [:]
            var stack: [(NodeID, String)] = [(.root, "")]
            while let (id, path) = stack.popLast() {
                for (name, cid) in s.local.childNames(of: id) {
                    guard let c = s.local.liveNode(cid) else { continue }
                    let p = path + "/" + name
                    out[p] = c
                    if c.isDirectory { stack.append((cid, p)) }
                }
            }
            return out
        }
    }
}
