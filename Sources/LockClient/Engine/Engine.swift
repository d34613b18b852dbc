import Foundation
import LockChunker
import LockCrypto
import LockWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The heart of lockfs: the vault's tree, local changes, sync and content,
/// testable without a mount (docs/design.md, "Client engine").
///
/// Every call the FUSE layer makes is a method here, on inode numbers that
/// stay the same across restarts. Local changes are durable (index and
/// outbox fsynced) before a call that makes them returns; a background
/// uploader drains them and a background puller applies the journal, both
/// retrying forever with backoff. The view is always the verified journal
/// with the pending local operations replayed on top, by the same rules
/// every client uses.
public final class Engine: Sendable {
    public let home: ClientHome
    public let device: DeviceID
    /// Every key generation this device holds; a rotation adds one
    /// (`learnGenerations`).
    let generations: KeyGenerations
    /// The newest generation: what new chunks and entries are sealed with.
    var keys: VaultKeys { generations.newest }
    /// Called with every generation (newest first) when this engine learns
    /// a new one, to keep them with the credentials.
    let onNewGenerations: Mutex<(@Sendable ([VaultKeys]) throws -> Void)?> = Mutex(nil)
    /// This device's signing key (nil: credentials of lockfs 0.1, entries go unsigned).
    let identity: DeviceIdentity?
    let remote: any Remote
    let index: Index
    public let cache: ChunkCache
    let options: EngineOptions
    /// The chunker's gear table of the newest generation, and its number.
    let gearTable: Mutex<(generation: UInt32, table: [UInt64])>
    var gear: [UInt64] {
        let g = generations.generation
        if let cached = gearTable.withLock({ $0.generation == g ? $0.table : nil }) { return cached }
        let table = keys.gearTable()
        gearTable.withLock { $0 = (g, table) }
        return table
    }
    /// Sealed chunks waiting for upload (files and index rows).
    let outbox: Outbox
    /// Read-ahead, pinned fetches and the move to the cache, ended by `stop()`.
    let background = BackgroundTasks()
    /// The staging folder's path, computed once.
    let stagingRoot: String

    struct Staging {
        var file: StagingFile
        var handles: Int
        var dirty: Bool
        /// An mtime set while the file is open, after its last write (cp -a,
        /// tar and rsync set it with futimens before close): the commit
        /// keeps it instead of the time of the commit.
        var mtime: Timestamp?
        /// A mode set while the file is open with unsaved changes: committed
        /// with the content at close (one synced commit, not two).
        var mode: UInt32?
        /// Unlinked (or replaced by a rename) on this device while open: what
        /// is still written goes nowhere (POSIX), and a commit would bring
        /// the file back (a write revives a deleted file, for deletes made
        /// elsewhere). Stays readable through its handles until the last close.
        var unlinked = false
        /// The chunks the staging file matched at open or at the last commit,
        /// and the lowest offset changed since: a commit reuses the chunks
        /// that end before it and re-chunks only from there (FastCDC's cuts
        /// depend only on the bytes since the previous cut).
        var base: [Manifest.Chunk] = []
        var dirtyFrom = Int.max
        /// The node's revision the staging copy was made from (at open), then
        /// the one its last commit made: a commit's base. Not the revision at
        /// the commit: a write that the journal brought in while the file was
        /// open here was never seen by this writer and must not be replaced
        /// unseen (the replay rules keep it as a conflict copy).
        var revision: RevisionID
    }

    struct State {
        var base: Tree
        var local: Tree
        var pending: [PendingOperation]
        var inflight: [InflightBatch]
        var cursor: UInt64
        var head: ChainHead
        var recentHeads: [UInt64: ChainHead] = [:]
        /// Where each device's own chain stands (`DeviceChain`).
        var deviceTails: [DeviceID: DeviceTail]
        /// The last batch this home sealed: the next one names it.
        var sealedTail: SealedTail?
        /// When this engine last sealed a batch (its start before that), and
        /// since when it has applied another device's change that none of its
        /// batches is based on yet, at which seq (`AttestationPolicy`).
        var lastSealedAt = ContinuousClock.now
        /// Acknowledgements recorded by this engine so far (`InflightBatch.ackSerial`).
        var ackSerial: UInt64 = 0
        var attestWanted: (seq: UInt64, since: ContinuousClock.Instant)?
        /// The account's devices as the server lists them (the silence warning), and when fetched.
        var roster: [DeviceInfo] = []
        var rosterFetchedAt: ContinuousClock.Instant?
        var lastStamp: Int64
        var inoByNode: [NodeID: UInt64] = [:]
        var nodeByIno: [UInt64: NodeID] = [:]
        var pins: Set<NodeID>
        /// Access times set on this device (the index's `atimes`).
        var accessTimes: [NodeID: Timestamp] = [:]
        /// FIFOs and sockets made on this device, never synced (the index's `local_nodes`).
        var localNodes: [NodeID: LocalNode] = [:]
        var serverChunks: Set<ChunkID> = []
        /// Sealed chunks waiting for upload (outbox files and small ones in the index) → sealed size.
        var outboxChunks: [ChunkID: Int] = [:]
        /// Local commits since the last `syncToDisk` (the periodic sync skips when 0).
        var unsyncedCommits = 0
        /// When the last local change was committed (the uploader and the cache mover wait for a pause).
        var lastCommitAt = ContinuousClock.now
        /// Uploaded small chunks to move from the index to the cache once local changes pause.
        var cacheMoves: [ChunkID] = []
        var cacheMoverRunning = false
        var staging: [NodeID: Staging] = [:]
        var handles: [UInt64: NodeID] = [:]
        var nextHandle: UInt64 = 1
        var lastReadEnd: [NodeID: Int] = [:]
        /// The revision of each file at its last read-only open here, and
        /// when: what a program may have read (the kernel serves the pages
        /// itself). Forgotten at this device's next change of the file, after
        /// `shownRevisionLife`, and beyond `shownRevisionLimit` entries.
        var shownRevision: [NodeID: (revision: RevisionID, at: ContinuousClock.Instant)] = [:]
        var alarm: String?
        /// Keys bound to devices by their first signed entry (`EntryAuthority`).
        var signers: [DeviceID: [UInt8]] = [:]
        /// Heads of entries `lockfs repair` quarantined, and their batches' envelope hashes.
        var quarantined: Set<ChainHead> = []
        var quarantinedEnvelopes: Set<[UInt8]> = []
        /// Entries skipped by `EntryAuthority` (kept in the index), and the last reason.
        var ignoredEntries = 0
        var lastIgnored: String?
        var online = false
        var lastError: String?
        var lastSync: Date?
        var running = false
        var uploadWaiters: [CheckedContinuation<Void, Never>] = []
        var tasks: [Task<Void, Never>] = []
    }
    let state: Mutex<State>
    let uploadSignal: AsyncStream<Void>.Continuation
    let uploadWakeups: Mutex<AsyncStream<Void>?>
    let onChange: Mutex<(@Sendable (ViewChanges) -> Void)?> = Mutex(nil)
    /// One page is applied at a time: the background puller and `pullOnce`
    /// (`lockfs sync`, the first mount's catch-up) may pull at once.
    let applying = Mutex(())
    /// One send at a time (the background uploader and `pushOnce` may run
    /// at once): a device's entries reach the server in the order sealed,
    /// as its device chain says.
    let sending = SerialGate()

    /// Opens (creating if needed) the engine's state in `home` for `credentials`.
    public init(home: ClientHome, credentials: DeviceCredentials, remote: any Remote, options: EngineOptions = .init()) throws {
        try home.createDirectories()
        self.home = home
        device = credentials.device
        generations = KeyGenerations(credentials.generations)
        identity = credentials.identity
        self.remote = remote
        self.options = options
        stagingRoot = home.stagingDirectory.path
        index = try Index(path: home.indexFile.path)
        outbox = Outbox(root: home.outboxDirectory, index: index)
        cache = try ChunkCache(directory: home.chunkCacheDirectory, limit: options.cacheLimit)
        gearTable = Mutex((UInt32(credentials.generations.count), credentials.keys.gearTable()))
        if let stored = try index.meta("vault"), stored != credentials.keys.vaultID.bytes {
            throw LockError.invalid("\(home.indexFile.path) belongs to another vault; use another --home")
        }
        try index.setMeta("vault", credentials.keys.vaultID.bytes)

        let snap = try index.load()
        let base = Tree(loading: snap.nodes, aliases: snap.aliases)
        var s = State(base: base, local: base, pending: snap.pending, inflight: snap.inflight, cursor: snap.cursor,
                      head: snap.head ?? ChainHead.genesis(of: credentials.keys.vaultID), deviceTails: snap.deviceTails,
                      sealedTail: snap.sealedTail, lastStamp: try index.metaInt("last_stamp") ?? 0, pins: snap.pins)
        s.alarm = try index.meta("alarm").map { String(decoding: $0, as: UTF8.self) }
        // lockfs 0.1 raised the alarm at the first signed entry it met: a version
        // it could not read, not tampering. This version reads it: clear that one.
        if let alarm = s.alarm, Self.isOldClientsAlarmOnSignedEntries(alarm) {
            s.alarm = nil
            try index.setMeta("alarm", nil)
        }
        s.accessTimes = snap.accessTimes
        s.signers = snap.signers
        (s.quarantined, s.quarantinedEnvelopes) = try index.quarantined()
        s.ignoredEntries = Int(try index.metaInt("ignored_entries") ?? 0)
        s.lastIgnored = try index.meta("last_ignored_entry").map { String(decoding: $0, as: UTF8.self) }
        for n in snap.localNodes { s.localNodes[n.id] = n }
        for (ino, node) in snap.inodes { s.inoByNode[node] = ino; s.nodeByIno[ino] = node }
        for n in base.nodes.values { if let m = n.manifest { for c in m.chunks { s.serverChunks.insert(c.id) } } }
        // Sealed chunks no pending or in-flight operation needs are dropped: an outbox file
        // whose operation a power cut took (the file was fsynced, the commit not yet).
        let needed = Set(s.pending.flatMap(\.operation.chunkIDs) + s.inflight.flatMap(\.references))
        // Unneeded chunks the server has go to the cache (the mover had not run); the rest are dropped.
        let serverChunks = s.serverChunks
        let reconciled = try outbox.reconcile(needed: needed, serverHas: { serverChunks.contains($0) })
        s.outboxChunks = reconciled.waiting
        s.cacheMoves = Array(reconciled.toCache)
        Self.rebase(&s, device: credentials.device)
        // Access times of nodes deleted since (here or elsewhere) are forgotten.
        let gone = s.accessTimes.keys.filter { s.local.node($0)?.deleted == true }
        for id in gone { s.accessTimes[id] = nil }
        try index.setAccessTimes(gone.map { ($0, nil) })
        try index.deleteLocalNodes(Self.pruneLocalNodes(&s))
        state = Mutex(s)
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        uploadSignal = continuation
        uploadWakeups = Mutex(stream)
        // Leftover staging files belong to writes never closed: not acknowledged, removed.
        for f in (try? FileManager.default.contentsOfDirectory(atPath: home.stagingDirectory.path)) ?? [] {
            Glibc.unlink(home.stagingDirectory.appendingPathComponent(f).path)
        }
    }

    /// What sync changed in the view, for the kernel's caches.
    public struct ViewChanges: Sendable {
        /// Inodes whose attributes or content changed (folders: their entries).
        public var inodes: Set<UInt64> = []
        /// Names that went away or now lead elsewhere: (folder inode, name).
        public var entries: [(parent: UInt64, name: String)] = []
    }

    /// Called after sync changed the view (not for this engine's own local changes).
    public func setChangeHandler(_ handler: @escaping @Sendable (ViewChanges) -> Void) {
        onChange.withLock { $0 = handler }
    }

    /// The Ed25519 keys the journal bound to devices so far.
    public var boundSigners: [DeviceID: [UInt8]] { state.withLock { $0.signers } }

    /// Called with every key generation (newest first) when this engine
    /// learns a new one: the caller keeps them with the credentials.
    public func setNewGenerationsHandler(_ handler: @escaping @Sendable ([VaultKeys]) throws -> Void) {
        onNewGenerations.withLock { $0 = handler }
    }
}


/// A thread-safe running total.
final class Counter: Sendable {
    let value = Mutex(0)
    /// Adds `n`; returns the new total.
    func add(_ n: Int) -> Int { value.withLock { $0 += n; return $0 } }
}
