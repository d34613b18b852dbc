import Foundation
import LockChunker
import LockCrypto
import LockWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a node is, as a file system shows it: a synced kind, or a
/// local-only FIFO or socket (`LocalNode`).
public enum FileKind: Sendable, Equatable {
    case file, directory, symlink, fifo, socket

    public init(_ kind: NodeKind) {
        switch kind {
        case .file: self = .file
        case .directory: self = .directory
        case .symlink: self = .symlink
        }
    }
}

/// What `getattr` and `lookup` return: a node as a file system shows it.
public struct Attributes: Sendable, Equatable {
    public var ino: UInt64
    public var kind: FileKind
    public var size: Int
    /// Permission bits (the kind gives the file type).
    public var mode: UInt32
    public var mtime: Timestamp
    /// When the node last changed in any way (content, name, mode, a
    /// folder's entries): `Node.ctime`.
    public var ctime: Timestamp
    /// The access time set on this device (utimensat, `touch -a`, `cp -a`),
    /// else the mtime. Local: not synced, and reads do not move it (as with
    /// noatime).
    public var atime: Timestamp
}

/// Where an engine stands, for `lockfs status` and the status xattr.
public struct EngineStatus: Sendable, Codable {
    public var online: Bool
    public var lastError: String?
    public var lastSync: Date?
    public var cursor: UInt64
    public var queuedOperations: Int
    public var queuedBytes: Int
    public var cacheSize: Int
    public var cacheLimit: Int
    public var pinnedBytes: Int
    /// Set when the server broke the rules (tampered data, a broken or forked journal).
    public var integrityAlarm: String?
    /// Journal entries skipped because their signature or signer was wrong
    /// (`EntryAuthority`; counted for this home since it began), and why the
    /// last one was.
    public var ignoredEntries: Int = 0
    public var lastIgnoredEntry: String? = nil
}

/// Engine settings.
public struct EngineOptions: Sendable {
    /// Plaintext bytes the chunk cache keeps (pinned data may exceed it).
    public var cacheLimit: Int = 10 << 30
    /// How long one long-poll waits for new entries.
    public var pollWait: Duration = .seconds(25)
    /// Operations per journal entry.
    public var operationsPerEntry = 5_000
    /// Chunks fetched ahead of a sequential reader.
    public var readAhead = 2
    /// How long a read waits for a chunk that is not local before it fails
    /// with `.offline` (EIO at the mount), retries included.
    public var fetchTimeout: Duration = .seconds(20)
    /// How long the background uploader lets local changes gather before it
    /// seals the next entry. Without it a burst (untar, cp -r) was sealed an
    /// operation or two at a time: several synced SQLite commits per entry
    /// competing with the writer's own, and a create claimed before its
    /// file's write could be folded into it. Local durability is unchanged.
    public var uploadSettle: Duration = .milliseconds(150)
    /// While local changes keep coming (an untar, a build), the uploader
    /// waits for a pause of `uploadSettle`, but no longer than this after
    /// the first of them: larger entries, and less work competing with the
    /// burst itself.
    public var uploadMaxDelay: Duration = .seconds(2)
    /// Sealed chunks up to this size are kept in the index, in the same
    /// transaction as the operation that needs them (no file, no fsync);
    /// larger ones are outbox files, fsynced before the operation commits.
    public var inlineChunkLimit = 256 << 10
    /// How often local commits are made durable against a power cut when
    /// nothing asked for it sooner (fsync(2), unmount): ext4's default.
    public var syncInterval: Duration = .seconds(5)
    /// How the puller and the uploader wait between failed attempts: the cap
    /// bounds how late a server that comes back is noticed.
    public var reconnect = Backoff.reconnect
    public init() {}
}

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
    /// The outbox and staging folders' paths, computed once.
    let outboxRoot: String
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
        var deviceStamps: [DeviceID: Int64]
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
        var alarm: String?
        /// Keys bound to devices by their first signed entry (`EntryAuthority`).
        var signers: [DeviceID: [UInt8]] = [:]
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

    /// Opens (creating if needed) the engine's state in `home` for `credentials`.
    public init(home: ClientHome, credentials: DeviceCredentials, remote: any Remote, options: EngineOptions = .init()) throws {
        try home.createDirectories()
        self.home = home
        device = credentials.device
        generations = KeyGenerations(credentials.generations)
        identity = credentials.identity
        self.remote = remote
        self.options = options
        outboxRoot = home.outboxDirectory.path
        stagingRoot = home.stagingDirectory.path
        index = try Index(path: home.indexFile.path)
        cache = try ChunkCache(directory: home.chunkCacheDirectory, limit: options.cacheLimit)
        gearTable = Mutex((UInt32(credentials.generations.count), credentials.keys.gearTable()))
        if let stored = try index.meta("vault"), stored != credentials.keys.vaultID.bytes {
            throw LockError.invalid("\(home.indexFile.path) belongs to another vault; use another --home")
        }
        try index.setMeta("vault", credentials.keys.vaultID.bytes)

        let snap = try index.load()
        let base = Tree(loading: snap.nodes, aliases: snap.aliases)
        var s = State(base: base, local: base, pending: snap.pending, inflight: snap.inflight, cursor: snap.cursor,
                      head: snap.head ?? ChainHead.genesis(of: credentials.keys.vaultID), deviceStamps: snap.deviceStamps,
                      lastStamp: try index.metaInt("last_stamp") ?? 0, pins: snap.pins)
        s.alarm = try index.meta("alarm").map { String(decoding: $0, as: UTF8.self) }
        // lockfs 0.1 raised the alarm at the first signed entry it met: a version
        // it could not read, not tampering. This version reads it: clear that one.
        if let alarm = s.alarm, Self.isOldClientsAlarmOnSignedEntries(alarm) {
            s.alarm = nil
            try index.setMeta("alarm", nil)
        }
        s.accessTimes = snap.accessTimes
        s.signers = snap.signers
        s.ignoredEntries = Int(try index.metaInt("ignored_entries") ?? 0)
        s.lastIgnored = try index.meta("last_ignored_entry").map { String(decoding: $0, as: UTF8.self) }
        for n in snap.localNodes { s.localNodes[n.id] = n }
        for (ino, node) in snap.inodes { s.inoByNode[node] = ino; s.nodeByIno[ino] = node }
        for n in base.nodes.values { if let m = n.manifest { for c in m.chunks { s.serverChunks.insert(c.id) } } }
        // Sealed chunks no pending or in-flight operation needs are dropped: an outbox file
        // whose operation a power cut took (the file was fsynced, the commit not yet).
        let needed = Set(s.pending.flatMap(\.operation.chunkIDs) + s.inflight.flatMap(\.references))
        let outboxFiles = Self.scanOutbox(home.outboxDirectory)
        let outboxRows = try index.outboxChunkSizes()
        for (id, size) in outboxFiles + outboxRows where needed.contains(id) { s.outboxChunks[id] = size }
        // Unneeded chunks the server has go to the cache (the mover had not run); the rest are dropped.
        for (id, _) in outboxFiles where !needed.contains(id) && !s.serverChunks.contains(id) {
            let hex = id.hex
            Glibc.unlink(home.outboxDirectory.path + "/" + hex.prefix(2) + "/" + hex)
        }
        let unneeded = Set((outboxFiles + outboxRows).map(\.0)).subtracting(needed)
        s.cacheMoves = unneeded.filter { s.serverChunks.contains($0) }
        try index.deleteOutboxChunks(outboxRows.map(\.0).filter { unneeded.contains($0) && !s.serverChunks.contains($0) })
        s.cacheMoverRunning = !s.cacheMoves.isEmpty
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
        if state.withLock({ $0.cacheMoverRunning }) { Task.detached(priority: .background) { [self] in await moveToCache() } }
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

    // MARK: Background work

    /// Starts the puller and the uploader.
    public func start() {
        let stream = uploadWakeups.withLock { s -> AsyncStream<Void>? in defer { s = nil }; return s }
        let pull = Task { [self] in await pullLoop() }
        let push = Task { [self] in await uploadLoop(stream) }
        let sync = Task { [self] in await syncLoop() }
        state.withLock { $0.running = true; $0.tasks = [pull, push, sync] }
        uploadSignal.yield()
    }

    /// Stops background work; pending changes stay in the outbox.
    public func stop() async {
        let tasks = state.withLock { s -> [Task<Void, Never>] in s.running = false; defer { s.tasks = [] }; return s.tasks }
        uploadSignal.finish()
        for t in tasks { t.cancel() }
        for t in tasks { await t.value }
        try? syncToDisk()
    }

    /// Makes every local change so far durable against a power cut (the
    /// index's log fsynced). Local commits are already safe from a crash of
    /// this process when they return; this is fsync(2)'s promise on top.
    public func syncToDisk() throws {
        let n = state.withLock { $0.unsyncedCommits }
        try index.sync()
        state.withLock { $0.unsyncedCommits = max(0, $0.unsyncedCommits - n) }
    }

    /// Every `syncInterval`, makes the changes since the last sync durable.
    func syncLoop() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: options.syncInterval) } catch { return }
            if state.withLock({ $0.unsyncedCommits }) > 0 {
                do { try syncToDisk() } catch { noteFailure("sync to disk: \(error)") }
            }
        }
    }

    func pullLoop() async {
        var backoff = options.reconnect
        // The first pull does not wait, so status knows at once whether the server answers.
        var wait = Duration.zero
        while !Task.isCancelled {
            if state.withLock({ $0.alarm }) != nil { return }
            do {
                let cursor = state.withLock { $0.cursor }
                let page = try await remote.entries(after: JournalSeq(cursor), limit: APIv1.maxEntriesPerPage, wait: wait)
                try await applyFetchedPage(page, requestedAfter: cursor)
                backoff.reset()
                wait = options.pollWait
            } catch let e as LockError {
                if case .integrity(let why) = e { raiseAlarm(why); return }
                noteFailure("\(e)")
                try? await Task.sleep(for: backoff.next())
            } catch is CancellationError {
                return
            } catch {
                noteFailure("\(error)")
                try? await Task.sleep(for: backoff.next())
            }
        }
    }

    /// Pulls and applies entries until caught up with the server (no waiting).
    /// - Throws: `LockError.integrity` (and raises the alarm) when the server
    ///   broke the rules now or before: like the background puller, nothing
    ///   more is applied once the alarm is up.
    public func pullOnce() async throws {
        try throwIfAlarmed()
        do { try await pullUntilCaughtUp() } catch LockError.integrity(let why) {
            raiseAlarm(why)
            throw LockError.integrity(why)
        }
    }

    private func pullUntilCaughtUp() async throws {
        while true {
            let cursor = state.withLock { $0.cursor }
            let page: EntryPage
            do { page = try await remote.entries(after: JournalSeq(cursor), limit: APIv1.maxEntriesPerPage, wait: .zero) } catch let e as RemoteError {
                throw e.isRetryable ? LockError.offline : LockError.from(e)
            }
            try await applyFetchedPage(page, requestedAfter: cursor)
            if page.items.isEmpty || page.items.last!.seq >= page.latest { return }
        }
    }

    /// Uploads everything queued (no waiting for wake-ups).
    /// - Throws: `LockError.integrity` (and raises the alarm) as the
    ///   background uploader does: once the alarm is up nothing more is sent,
    ///   and the queue stays in the outbox.
    public func pushOnce() async throws {
        // Bug fix: pushOnce used to ignore the alarm (sending the queue to a
        // server already caught lying) and did not raise it on a `bad_base`
        // refusal, unlike uploadLoop; pullOnce raised it only for page errors.
        try throwIfAlarmed()
        do { while try await uploadOnce() {} } catch LockError.integrity(let why) {
            raiseAlarm(why)
            throw LockError.integrity(why)
        }
    }

    func throwIfAlarmed() throws {
        if let alarm = state.withLock({ $0.alarm }) { throw LockError.integrity(alarm) }
    }

    func noteFailure(_ message: String) {
        state.withLock { $0.online = false; $0.lastError = message }
    }

    /// The alarm lockfs 0.1 raised on a journal page holding a version 2
    /// (signed) entry: "the server's answer was malformed: entry page:
    /// unsupportedVersion(record: "journal entry", found: 2)".
    static func isOldClientsAlarmOnSignedEntries(_ alarm: String) -> Bool {
        alarm.hasPrefix("the server's answer was malformed: entry page:")
            && alarm.contains(#"unsupportedVersion(record: "journal entry", found: 2)"#)
    }

    func raiseAlarm(_ why: String) {
        state.withLock { if $0.alarm == nil { $0.alarm = why } }
        try? index.setMeta("alarm", Array(why.utf8))
        try? index.sync()
        wakeUploadWaiters()
    }

    // MARK: Key generations

    /// Applies a page fetched from the server, learning a newer key
    /// generation first when the page shows one.
    func applyFetchedPage(_ page: EntryPage, requestedAfter requested: UInt64) async throws {
        try await learnGenerations(for: page)
        try applyPage(page, requestedAfter: requested)
    }

    /// Learns newer key generations from the keyring when `page` shows one:
    /// its header names a newer generation (a rotation reaches every device
    /// at its next page, so its new writes stop using the old keys), or an
    /// entry is sealed under a key this device lacks.
    func learnGenerations(for page: EntryPage) async throws {
        let unknown = page.items.contains { generations.keys(opening: $0.entry.sealedBatch) == nil }
        guard unknown || (page.keyringGeneration ?? 0) > generations.generation else { return }
        try await learnGenerations()
    }

    /// Fetches the keyring and adopts its generations if it holds newer ones:
    /// opened with this device's own X25519 secret, and only if they extend
    /// the generations held (the server cannot swap one).
    /// - Throws: `LockError.unauthorized` when the keyring holds no seal for
    ///   this device (it was revoked, or left out of a rotation: log in
    ///   again); `.integrity` for a keyring that does not extend the keys
    ///   held; `.offline`.
    func learnGenerations() async throws {
        guard let identity else { return }
        let keyring: VaultKeyring
        do { keyring = try await remote.keyring() } catch let e as RemoteError {
            if case .malformedResponse(let m) = e { throw LockError.integrity("the server's keyring was refused (\(m))") }
            throw e.isRetryable ? LockError.offline : LockError.from(e)
        }
        guard keyring.vaultID == generations.vaultID else {
            throw LockError.integrity("the server's keyring belongs to another vault")
        }
        guard keyring.generation > generations.generation else { return }
        let opened: [VaultKeys]
        do { opened = try keyring.unlock(device: device, identity: identity) } catch {
            throw LockError.unauthorized("the vault's keys were rotated (key generation \(keyring.generation)) and this device was left out: it was revoked, or it had written nothing yet. Run `lockfs logout`, then `lockfs login`")
        }
        do { try generations.adopt(opened) } catch {
            throw LockError.integrity("the server's keyring does not extend the keys this device holds (\(error))")
        }
        try onNewGenerations.withLock { try $0?(generations.all) }
    }

    // MARK: Applying the journal

    /// Verifies a page of entries against the trusted chain, applies it to
    /// the tree by the replay rules, commits it to the index, and rebases the
    /// pending local operations on it.
    /// - Parameter requested: the cursor the page was asked for after.
    ///   Another pull may have applied part or all of it since: those
    ///   entries must be the very ones it verified, and are skipped.
    /// - Throws: `LockError.integrity` for anything a faithful server cannot send.
    func applyPage(_ page: EntryPage, requestedAfter requested: UInt64) throws {
        try applying.withLock { _ in try applyPageSerially(page, requestedAfter: requested) }
    }

    private func applyPageSerially(_ page: EntryPage, requestedAfter requested: UInt64) throws {
        var (base, cursor, head, stamps, inflight, recent) = state.withLock {
            ($0.base, $0.cursor, $0.head, $0.deviceStamps, $0.inflight, $0.recentHeads)
        }
        state.withLock { $0.online = true; $0.lastError = nil; $0.lastSync = Date() }
        if page.latest.rawValue < requested {
            throw LockError.integrity("the server's journal ends at \(page.latest) but this device verified it up to \(requested): history was rolled back")
        }
        // Entries another pull applied since this page was asked for.
        var items = page.items[...]
        while let first = items.first, first.seq.rawValue <= cursor {
            let verified = first.seq.rawValue == cursor ? head : (recent[first.seq.rawValue] ?? (try? index.head(at: first.seq.rawValue)) ?? nil)
            guard verified == first.head else {
                throw LockError.integrity("the server served two different entries at \(first.seq): the journal was forked")
            }
            items.removeFirst()
        }
        guard !items.isEmpty else { return }
        var heads: [(UInt64, ChainHead)] = []
        var changedStamps: [DeviceID: Int64] = [:]
        var confirmed: [Int64] = []
        var signers = state.withLock { $0.signers }
        var newSigners: [DeviceID: [UInt8]] = [:]
        var ignored: [String] = []
        for item in items {
            let seq = item.seq.rawValue
            guard seq == cursor + 1 else {
                throw LockError.integrity("journal entry \(seq) came where \(cursor + 1) was due: entries were dropped or reordered")
            }
            let bytes = item.entry.encoded
            let computed = head.next(seq: seq, entry: bytes)
            guard computed == item.head else {
                throw LockError.integrity("journal entry \(seq) does not chain to the verified history: altered or forked")
            }
            let entry = item.entry
            let baseSeq = entry.baseSeq.rawValue
            let knownBase: ChainHead? = baseSeq == cursor ? head
                : baseSeq == 0 ? ChainHead.genesis(of: keys.vaultID)
                : (recent[baseSeq] ?? heads.first(where: { $0.0 == baseSeq })?.1 ?? (try? index.head(at: baseSeq)) ?? nil)
            guard baseSeq <= cursor, knownBase == entry.baseHead else {
                throw LockError.integrity("journal entry \(seq) was written on a history this device never saw: the server forked the journal")
            }
            switch EntryAuthority.check(entry, vault: keys.vaultID, signers: signers) {
            case .ignore(let why):
                // This device's own acknowledged entry, served so that it would be
                // ignored: skipping it would leave the change "sending" forever.
                if inflight.contains(where: { $0.appendedSeq == seq }) {
                    throw LockError.integrity("the server acknowledged this device's entry at \(seq) but now serves it so that it must be ignored (\(why)): the journal was altered")
                }
                // A faithful server refuses such an entry; skip it, keep the chain.
                ignored.append("journal entry \(seq) was ignored: \(why)")
                head = computed
                cursor = seq
                heads.append((seq, computed))
                recent[seq] = computed
                continue
            case .apply(let device, let bind):
                if let bind, let device { signers[device] = bind; newSigners[device] = bind }
            }
            let batch: OperationBatch
            do { batch = try entry.open(keys: generations.keys(opening: entry.sealedBatch) ?? keys) } catch WireError.unsupportedVersion(let record, let found)
                where record == OperationBatch.recordName && found > OperationBatch.wireVersion {
                // Authentic, but made for replay rules this build does not know: nothing
                // more can be applied until this device runs a newer lockfs.
                throw LockError.upgradeRequired("journal entry \(seq) (operation batch version \(found))")
            } catch {
                throw LockError.integrity("journal entry \(seq) failed authentication (\(error))")
            }
            let stamp = batch.createdAt.nanoseconds
            // Bug fix: the server acknowledged one of this device's entries at
            // this seq; a faithful server serves that entry there and nothing
            // else. Without this check a fork or rollback that shows this seq
            // with another, well-chained entry went unnoticed, and the local
            // change stayed "sending" forever without ever reaching the journal.
            // This home's own entries are told by their bytes (the sealed entry
            // kept in flight), not by the engine's device id: after a new login
            // in this home, entries sealed before carry the previous device's id.
            if let mine = inflight.first(where: { $0.appendedSeq == seq }), mine.entry != entry.unsigned {
                throw LockError.integrity("the server acknowledged this device's entry at \(seq) but now serves another one there: the journal was forked or rolled back")
            }
            // Replayed under the device that made the batch (sealed inside it):
            // after a re-login in a home, batches sealed before are sent, and
            // signed, by the new device, and must still dedup against a copy
            // the old one may have landed. The signer is who answers for it.
            let author = batch.device
            if stamp > (stamps[author] ?? Int64.min) {
                stamps[author] = stamp
                changedStamps[author] = stamp
                base.apply(batch.operations, context: ReplayContext(device: author, createdAt: batch.createdAt, seq: seq, baseSeq: baseSeq,
                                                                    rules: batch.version))
            } // else: a retried append that landed twice; the first copy counted.
            if inflight.contains(where: { $0.stamp == stamp && $0.entry == entry.unsigned }) {
                confirmed.append(stamp)
                inflight.removeAll { $0.stamp == stamp }
            }
            head = computed
            cursor = seq
            heads.append((seq, computed))
            recent[seq] = computed
        }
        let changed = base.takeChanges()
        let changedNodes = changed.compactMap { base.node($0) }
        try index.commit(Index.AppliedPage(nodes: changedNodes, aliases: base.takeAliases(), heads: heads, deviceStamps: changedStamps,
                                           confirmedStamps: confirmed, signers: newSigners, ignored: ignored))
        var view = ViewChanges()
        var orphans: [NodeID] = []
        let (drained, wakeUploader) = state.withLock { s -> (Bool, Bool) in
            // Where each changed node was in the view before: a name it left must be forgotten.
            let before = changed.compactMap { id in s.local.liveNode(id).map { (id, $0.parent, $0.name) } }
            s.base = base
            s.cursor = cursor
            s.head = head
            s.deviceStamps.merge(changedStamps) { $1 }
            s.signers.merge(newSigners) { a, _ in a }
            if let last = ignored.last { s.ignoredEntries += ignored.count; s.lastIgnored = last }
            if recent.count > 4096 { recent = recent.filter { $0.key + 2048 > cursor } }
            s.recentHeads = recent
            for n in changedNodes { if let m = n.manifest { for c in m.chunks { s.serverChunks.insert(c.id) } } }
            s.inflight.removeAll { confirmed.contains($0.stamp) }
            s.pending.removeAll { p in p.batchStamp.map { confirmed.contains($0) } ?? false }
            Self.rebase(&s, device: device)
            orphans = Self.pruneLocalNodes(&s)
            for id in changed { if let ino = s.inoByNode[id] { view.inodes.insert(ino) } }
            for (id, parent, name) in before {
                let now = s.local.liveNode(id)
                if now?.parent != parent || now?.name != name, let pino = s.inoByNode[parent] { view.entries.append((pino, name)) }
            }
            return (s.pending.isEmpty, !confirmed.isEmpty)
        }
        // The page is applied already: a failure here must not count as the page's
        // (rows left in the index are pruned again at the next start).
        if !orphans.isEmpty { try? index.deleteLocalNodes(orphans) }
        if wakeUploader { cleanOutbox(); uploadSignal.yield() }
        if drained { wakeUploadWaiters() }
        if !view.inodes.isEmpty || !view.entries.isEmpty, let handler = onChange.withLock({ $0 }) { handler(view) }
        schedulePinnedFetches(changed)
    }

    /// local = base + pending operations, replayed by the same rules.
    static func rebase(_ s: inout State, device: DeviceID) {
        var local = s.base
        for p in s.pending {
            local.apply(p.operation, context: ReplayContext(device: device, createdAt: p.madeAt, seq: Tree.pendingSeq, baseSeq: p.madeAtSeq))
        }
        _ = local.takeChanges()
        s.local = local
    }

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

    func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(nanoseconds: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec))
    }

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

    // MARK: Reading

    /// Reads up to `size` bytes at `offset`: from the file open for writing,
    /// else from cached chunks, else fetched, verified and cached.
    /// - Throws: `.offline` when a needed chunk is not local and the server is
    ///   unreachable; `.integrity` when the server's bytes fail verification.
    public func read(_ ino: UInt64, offset: Int, size: Int) async throws -> [UInt8] {
        if let local = try readIfLocal(ino, offset: offset, size: size) { return local }
        let n = try node(ino, includingDeleted: true)
        guard case .file(let manifest) = n.content else { throw LockError.isDirectory }
        let spans = Self.spans(of: manifest, offset: offset, size: size)
        guard let last = spans.last else { return [] }
        var out: [UInt8] = []
        for s in spans {
            if let part = cache.read(s.chunk.id, range: s.range) {
                out += part
            } else {
                let plain = try await chunkPlaintext(s.chunk.id)
                guard plain.count == s.chunk.length else { throw LockError.integrity("chunk \(s.chunk.id) has the wrong length") }
                out += plain[s.range]
            }
        }
        readAhead(n.id, manifest, offset: offset, size: out.count, after: last.index)
        return out
    }

    /// `read` without waiting: nil when a chunk of the range is not local
    /// (the mount then calls `read` off its own thread).
    public func readIfLocal(_ ino: UInt64, offset: Int, size: Int) throws -> [UInt8]? {
        let n = try node(ino, includingDeleted: true)
        if let st = state.withLock({ $0.staging[n.id] }) { return try st.file.read(offset: offset, count: size) }
        guard case .file(let manifest) = n.content else { throw LockError.isDirectory }
        let spans = Self.spans(of: manifest, offset: offset, size: size)
        guard let last = spans.last else { return [] }
        var out: [UInt8] = []
        for s in spans {
            guard let part = cache.read(s.chunk.id, range: s.range) else { return nil }
            out += part
        }
        readAhead(n.id, manifest, offset: offset, size: out.count, after: last.index)
        return out
    }

    /// The chunks a read of `size` bytes at `offset` touches: each with its
    /// index in the manifest and the byte range of it that is read.
    static func spans(of manifest: Manifest, offset: Int, size: Int) -> [(index: Int, chunk: Manifest.Chunk, range: Range<Int>)] {
        let end = min(offset + size, manifest.size)
        var spans: [(index: Int, chunk: Manifest.Chunk, range: Range<Int>)] = []
        var chunkStart = 0
        for (i, c) in manifest.chunks.enumerated() {
            let chunkEnd = chunkStart + c.length
            defer { chunkStart = chunkEnd }
            if chunkEnd <= offset { continue }
            if chunkStart >= end { break }
            spans.append((i, c, (max(offset, chunkStart) - chunkStart)..<(min(end, chunkEnd) - chunkStart)))
        }
        return spans
    }

    /// On a sequential read, fetches the next `readAhead` chunks in the background.
    func readAhead(_ id: NodeID, _ manifest: Manifest, offset: Int, size: Int, after lastIndex: Int) {
        let end = offset + size
        let sequential = state.withLock { s -> Bool in
            defer { s.lastReadEnd[id] = end }
            return s.lastReadEnd[id] == offset || offset == 0
        }
        guard sequential && options.readAhead > 0 else { return }
        let ahead = manifest.chunks.dropFirst(lastIndex + 1).prefix(options.readAhead).map(\.id).filter { !cache.contains($0) }
        for id in ahead { Task { _ = try? await self.chunkPlaintext(id) } }
    }

    func chunkPlaintext(_ id: ChunkID) async throws -> [UInt8] {
        let plain = try await cache.chunk(id) { [self] in
            let sealed: SealedChunk
            if let local = try outboxChunk(id) {
                sealed = SealedChunk(id: id, bytes: local)
            } else if let moved = cache.cached(id) {
                // The outbox copy moved to the cache since the cache was asked.
                return moved
            } else {
                do { sealed = try await fetchWithTimeout(id) } catch let e as RemoteError { throw e.isRetryable ? LockError.offline : LockError.from(e) }
            }
            if generations.keys(opening: sealed.bytes) == nil { try await learnGenerations() }
            do { return try (generations.keys(opening: sealed.bytes) ?? keys).openChunk(sealed) } catch {
                throw LockError.integrity("chunk \(id) from the server failed verification (\(error)); it was not used")
            }
        }
        evictIfNeeded()
        return plain
    }

    /// `remote.chunk(id)`, given up (`.offline`) after `options.fetchTimeout`.
    func fetchWithTimeout(_ id: ChunkID) async throws -> SealedChunk {
        let limit = options.fetchTimeout
        return try await withThrowingTaskGroup(of: SealedChunk?.self) { group in
            group.addTask { [remote] in try await remote.chunk(id) }
            group.addTask { try await Task.sleep(for: limit); return nil }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let chunk = first else { throw LockError.offline }
            return chunk
        }
    }

    func evictIfNeeded() {
        guard cache.totalSize > cache.limit else { return }
        cache.evict(keep: pinnedChunks())
    }

    /// Chunks of every file under a pinned node, in the local view.
    func pinnedChunks() -> Set<ChunkID> {
        state.withLock { s in
            var out = Set<ChunkID>()
            for id in Self.files(under: s.pins, in: s) { if let m = s.local.node(id)?.manifest { for c in m.chunks { out.insert(c.id) } } }
            return out
        }
    }

    /// The live files at or under `roots` in the local view (each once).
    static func files(under roots: some Sequence<NodeID>, in s: State) -> [NodeID] {
        var out: [NodeID] = []
        var stack = Array(roots)
        var seen = Set<NodeID>()
        while let id = stack.popLast() {
            guard seen.insert(id).inserted, let n = s.local.liveNode(id) else { continue }
            if n.isDirectory { stack.append(contentsOf: s.local.childNames(of: id).values) } else { out.append(id) }
        }
        return out
    }

    /// The chunks of `files`, each once, in order.
    static func uniqueChunks(of files: [NodeID], in s: State) -> [Manifest.Chunk] {
        var seen = Set<ChunkID>()
        return files.compactMap { s.local.node($0)?.manifest }.flatMap(\.chunks).filter { seen.insert($0.id).inserted }
    }

    func isPinned(_ s: State, _ id: NodeID) -> Bool {
        var cur = id
        for _ in 0..<4096 {
            if s.pins.contains(cur) { return true }
            guard cur != .root, let n = s.local.node(cur) else { return false }
            cur = n.parent
        }
        return false
    }

    func schedulePinnedFetches(_ changed: Set<NodeID>) {
        let ids: [ChunkID] = state.withLock { s in
            guard !s.pins.isEmpty else { return [] }
            return changed.filter { isPinned(s, $0) }.compactMap { s.local.liveNode($0)?.manifest }.flatMap { $0.chunks.map(\.id) }
        }
        let missing = ids.filter { !cache.contains($0) }
        guard !missing.isEmpty else { return }
        Task { for id in missing { _ = try? await chunkPlaintext(id) } }
    }

    // MARK: Writing

    /// Opens a file for writing: a local staging copy shared by every handle
    /// on the file. Without `truncate`, the current content is fetched first.
    /// - Returns: a handle for `write`, `flush` and `close`.
    public func openForWrite(_ ino: UInt64, truncate: Bool) async throws -> UInt64 {
        if let h = try openForWriteIfLocal(ino, truncate: truncate) { return h }
        let n = try node(ino)
        // Fill a new staging copy outside the lock, fetching what is not local.
        let file = try newStagingFile(n.id)
        if !truncate, let m = n.manifest {
            var off = 0
            do {
                for c in m.chunks {
                    let plain = try await chunkPlaintext(c.id)
                    try plain.withUnsafeBytes { try file.write($0, at: off) }
                    off += plain.count
                }
            } catch { file.discard(); throw error }
        }
        return try installStaging(n, file, truncate: truncate)
    }

    /// `openForWrite` without waiting: nil when the content must be fetched
    /// first (the mount then calls `openForWrite` off its own thread).
    public func openForWriteIfLocal(_ ino: UInt64, truncate: Bool) throws -> UInt64? {
        let n = try node(ino)
        guard n.kind == .file else { throw LockError.isDirectory }
        if let h = try attachStaging(n.id, truncate: truncate) { return h }
        guard truncate || (n.manifest?.chunks.allSatisfy { cache.contains($0.id) } ?? true) else { return nil }
        let file = try newStagingFile(n.id)
        if !truncate, let m = n.manifest {
            var off = 0
            for c in m.chunks {
                // Evicted since isLocal looked: the caller fetches.
                guard let plain = cache.cached(c.id) else { file.discard(); return nil }
                do { try plain.withUnsafeBytes { try file.write($0, at: off) } } catch { file.discard(); throw error }
                off += plain.count
            }
        }
        return try installStaging(n, file, truncate: truncate)
    }

    private func newStagingFile(_ id: NodeID) throws -> StagingFile {
        try StagingFile(path: stagingRoot + "/" + id.hex + "-" + String(UInt32.random(in: 0...UInt32.max)))
    }

    /// Makes `file` the node's staging copy and returns a handle on it; if
    /// another open got there first, its copy is used and `file` dropped.
    private func installStaging(_ n: Node, _ file: StagingFile, truncate: Bool) throws -> UInt64 {
        try state.withLock { s in
            if var existing = s.staging[n.id] {
                // Another open won the race: use its copy.
                file.discard()
                existing.handles += 1
                if truncate { try existing.file.truncate(0); existing.dirty = true; existing.mtime = nil; existing.dirtyFrom = 0 }
                s.staging[n.id] = existing
            } else {
                var st = Staging(file: file, handles: 1, dirty: truncate && n.size > 0, revision: n.revision)
                if truncate { st.dirtyFrom = 0 } else { st.base = n.manifest?.chunks ?? [] }
                s.staging[n.id] = st
            }
            let h = s.nextHandle
            s.nextHandle += 1
            s.handles[h] = n.id
            return h
        }
    }

    private func attachStaging(_ id: NodeID, truncate: Bool) throws -> UInt64? {
        try state.withLock { s in
            guard var st = s.staging[id] else { return nil }
            st.handles += 1
            if truncate { try st.file.truncate(0); st.dirty = true; st.mtime = nil; st.dirtyFrom = 0 }
            s.staging[id] = st
            let h = s.nextHandle
            s.nextHandle += 1
            s.handles[h] = id
            return h
        }
    }

    private func staging(_ handle: UInt64) throws -> (NodeID, Staging) {
        try state.withLock { s in
            guard let id = s.handles[handle], let st = s.staging[id] else { throw LockError.invalid("bad file handle") }
            return (id, st)
        }
    }

    /// Writes into the open file (locally; nothing is sent before close).
    public func write(_ handle: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws -> Int {
        let (id, st) = try staging(handle)
        try st.file.write(bytes, at: offset)
        let done = bytes.count
        state.withLock { s in
            s.staging[id]?.dirty = true
            s.staging[id]?.mtime = nil
            if let d = s.staging[id]?.dirtyFrom { s.staging[id]?.dirtyFrom = min(d, offset) }
        }
        return done
    }

    /// Sets the size of an open file.
    public func truncate(handle: UInt64, size: Int) throws {
        let (id, st) = try staging(handle)
        let oldSize = st.file.size
        try st.file.truncate(size)
        state.withLock { s in
            s.staging[id]?.dirty = true
            s.staging[id]?.mtime = nil
            if let d = s.staging[id]?.dirtyFrom { s.staging[id]?.dirtyFrom = min(d, size, oldSize) }
        }
    }

    /// Sets the size of a file that may not be open (truncate(2)): open, resize, close.
    public func truncate(_ ino: UInt64, size: Int) async throws {
        let h = try await openForWrite(ino, truncate: size == 0)
        do { try truncate(handle: h, size: size) } catch { try? close(h); throw error }
        try close(h)
    }

    /// Makes what was written so far durable and queued (fsync, flush).
    public func flush(_ handle: UInt64) throws {
        let (id, st) = try staging(handle)
        guard st.dirty, !st.unlinked else { return }
        try commitContent(id, file: st.file)
        state.withLock { $0.staging[id]?.dirty = false }
    }

    /// Closes a handle; the last close of a changed file commits it:
    /// chunked, sealed into the outbox, queued, durable before this returns.
    public func close(_ handle: UInt64) throws {
        let (id, st) = try staging(handle)
        var failure: (any Error)?
        if st.handles == 1 && st.dirty && !st.unlinked {
            do { try commitContent(id, file: st.file) } catch { failure = error }
        }
        state.withLock { s in
            s.handles[handle] = nil
            guard var cur = s.staging[id] else { return }
            cur.handles -= 1
            if cur.handles == 0 && failure == nil {
                cur.file.discard()
                s.staging[id] = nil
            } else {
                if failure == nil { cur.dirty = false }
                s.staging[id] = cur
            }
        }
        if let failure { throw failure }
    }

    /// Chunks the staging file, seals the new chunks, puts the plaintext in
    /// the cache, and queues a write. Small sealed chunks are committed in
    /// the same index transaction as the write; larger ones go to outbox
    /// files, fsynced (then their folder) before that commit, so no
    /// committed write can outlive its data (docs/design.md, "Durability").
    func commitContent(_ id: NodeID, file: StagingFile) throws {
        try file.withContents { all in try commitContent(id, all) }
    }

    private func commitContent(_ id: NodeID, _ all: UnsafeRawBufferPointer) throws {
        let size = all.count
        // Take the changed range; writes from now on mark the next commit's.
        let (base, dirtyFrom) = state.withLock { s -> ([Manifest.Chunk], Int) in
            guard let st = s.staging[id] else { return ([], 0) }
            s.staging[id]?.dirtyFrom = .max
            return (st.base, st.dirtyFrom)
        }
        var committed = false
        defer {
            // Not committed: the range stays changed for the next try.
            if !committed { state.withLock { s in if let d = s.staging[id]?.dirtyFrom { s.staging[id]?.dirtyFrom = min(d, dirtyFrom) } } }
        }
        // Chunks that end before the first change are reused, except the old last one
        // (its end was the old end of the file, not a content-defined cut).
        var chunks: [Manifest.Chunk] = []
        var inline: [SealedChunk] = []
        var reused = 0
        for c in base.dropLast() {
            guard reused + c.length <= min(dirtyFrom, size) else { break }
            chunks.append(c)
            reused += c.length
        }
        if size > reused {
            var chunker = try Chunker(gear: gear)
            var ends: [Int] = []
            chunker.feed(UnsafeRawBufferPointer(rebasing: all[reused..<size])) { ends.append(reused + $0) }
            if let last = chunker.finish() { ends.append(reused + last) }
            var ranges: [Range<Int>] = []
            var start = reused
            for e in ends { ranges.append(start..<e); start = e }
            // Per chunk: its id, and when new, either its sealed bytes (small: they go into the
            // index with the operation) or the sealed size of its fsynced outbox file.
            struct Sealed { var id: ChunkID; var inline: SealedChunk?; var fileSize = 0; var errno: Int32 = 0 }
            let results = Mutex<[Int: Sealed]>([:])
            nonisolated(unsafe) let mapped = all
            let work = ranges
            let inlineLimit = options.inlineChunkLimit
            DispatchQueue.concurrentPerform(iterations: work.count) { i in
                let slice = UnsafeRawBufferPointer(rebasing: mapped[work[i]])
                let cid = keys.chunkID(of: slice)
                var r = Sealed(id: cid)
                // Looked up per chunk: a copy of both sets per commit made each close O(chunks in the vault).
                let known = state.withLock { s in s.serverChunks.contains(cid) || s.outboxChunks[cid] != nil }
                if !known {
                    do {
                        let sealed = try keys.sealChunk(slice)
                        // Kept sealed only (reads open it from the outbox): its plaintext reaches
                        // the cache once uploaded (cleanOutbox), off the close's path.
                        if sealed.bytes.count <= inlineLimit {
                            r.inline = sealed
                        } else {
                            r.fileSize = sealed.bytes.count
                            r.errno = Self.writeOutboxFile(outboxPath(cid), sealed.bytes)
                        }
                    } catch { r.errno = EIO }
                }
                results.withLock { $0[i] = r }
            }
            let r = results.withLock { $0 }
            for i in ranges.indices {
                let c = r[i]!
                if c.errno != 0 { throw LockError.io(errno: c.errno, "write outbox chunk") }
                chunks.append(Manifest.Chunk(id: c.id, length: ranges[i].count))
                if let sealed = c.inline { inline.append(sealed) }
            }
            // The outbox files were fsynced; now their names.
            let files = r.values.filter { $0.fileSize > 0 }
            for sub in Set(files.map { String($0.id.hex.prefix(2)) }) {
                let dfd = open(outboxRoot + "/" + sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                if dfd >= 0 { fsync(dfd); Glibc.close(dfd) }
            }
            state.withLock { s in for c in files { s.outboxChunks[c.id] = c.fileSize } }
        }
        let manifest = try Manifest(chunks: chunks)
        // A file deleted elsewhere while open here still takes the write: replay brings it back.
        let (node, mtime, mode, seen) = state.withLock {
            ($0.local.node(id), $0.staging[id]?.mtime, $0.staging[id]?.mode, $0.staging[id]?.revision)
        }
        guard let n = node else { throw LockError.notFound }
        try commitLocal(.write(node: id, base: seen ?? n.revision, revision: .random(), mtime: mtime ?? now(), manifest: manifest),
                        mode: mode, chunks: inline)
        committed = true
        state.withLock { $0.staging[id]?.mode = nil; $0.staging[id]?.base = chunks }
    }

    func outboxPath(_ id: ChunkID) -> String {
        let hex = id.hex
        return outboxRoot + "/" + hex.prefix(2) + "/" + hex
    }

    /// Writes a sealed chunk to its outbox file (temporary name, then rename). Returns errno or 0.
    ///
    /// The temporary name is unique: the same chunk may be written by two
    /// threads at once (a file with repeated content, such as runs of zeros,
    /// or two files committed together), and a shared name let one writer
    /// truncate the other's file or rename it away (ENOENT on close).
    static func writeOutboxFile(_ path: String, _ bytes: [UInt8]) -> Int32 {
        Glibc.mkdir((path as NSString).deletingLastPathComponent, 0o700)
        let tmp = path + ".tmp\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return errno }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { let e = errno; Glibc.close(fd); Glibc.unlink(tmp); return e == 0 ? EIO : e }
            done += n
        }
        if fsync(fd) != 0 { let e = errno; Glibc.close(fd); Glibc.unlink(tmp); return e }
        Glibc.close(fd)
        return Glibc.rename(tmp, path) == 0 ? 0 : errno
    }

    static func scanOutbox(_ dir: URL) -> [(ChunkID, Int)] {
        var out: [(ChunkID, Int)] = []
        let fm = FileManager.default
        for sub in (try? fm.contentsOfDirectory(atPath: dir.path)) ?? [] {
            let subdir = dir.appendingPathComponent(sub).path
            for name in (try? fm.contentsOfDirectory(atPath: subdir)) ?? [] {
                guard let id = ChunkID(hex: name) else { Glibc.unlink(subdir + "/" + name); continue }
                var st = stat()
                if stat(subdir + "/" + name, &st) == 0 { out.append((id, Int(st.st_size))) }
            }
        }
        return out
    }

    /// Deletes outbox chunks the server is known to have and no pending operation needs.
    ///
    /// They move to the cache first (the file was just written here: it
    /// stays local, like any recently used file), in the background.
    func cleanOutbox() {
        let done: [ChunkID] = state.withLock { s in
            let needed = Set(s.pending.flatMap { $0.operation.chunkIDs })
            let gone = s.outboxChunks.keys.filter { s.serverChunks.contains($0) && !needed.contains($0) }
            for id in gone { s.outboxChunks[id] = nil }
            return gone
        }
        guard !done.isEmpty else { return }
        let start = state.withLock { s -> Bool in
            s.cacheMoves += done
            defer { s.cacheMoverRunning = true }
            return !s.cacheMoverRunning
        }
        if start { Task.detached(priority: .background) { [self] in await moveToCache() } }
    }

    /// Moves uploaded chunks from the outbox (files and index rows) to the
    /// cache, a thousand at a time, when local changes pause (a burst of
    /// writes goes first).
    func moveToCache() async {
        while true {
            try? await waitForPause(.milliseconds(500), atMost: .seconds(30))
            let batch = state.withLock { s -> [ChunkID] in
                let b = Array(s.cacheMoves.prefix(1000))
                s.cacheMoves.removeFirst(b.count)
                if b.isEmpty { s.cacheMoverRunning = false }
                return b
            }
            guard !batch.isEmpty else { return }
            for id in batch where !cache.contains(id) {
                if let sealed = try? outboxChunk(id), let plain = try? (generations.keys(opening: sealed) ?? keys).openChunk(SealedChunk(id: id, bytes: sealed)) {
                    try? cache.store(id, plain)
                }
            }
            evictIfNeeded()
            for id in batch { Glibc.unlink(outboxPath(id)) }
            do { try index.deleteOutboxChunks(batch) } catch { noteFailure("outbox: \(error)") }
        }
    }

    /// A sealed chunk waiting for upload: an outbox file, or a small one in the index.
    func outboxChunk(_ id: ChunkID) throws -> [UInt8]? {
        if let data = FileManager.default.contents(atPath: outboxPath(id)) { return Array(data) }
        return try index.outboxChunk(id)
    }

    // MARK: Upload

    func uploadLoop(_ wakeups: AsyncStream<Void>?) async {
        var backoff = options.reconnect
        var iterator = wakeups?.makeAsyncIterator()
        while !Task.isCancelled {
            do {
                if state.withLock({ $0.alarm }) != nil { return }
                if try await uploadOnce() {
                    backoff.reset()
                    try await waitForPause()
                    continue
                }
                backoff.reset()
                // Nothing to do: wait for a local change, and for the ones right behind it.
                guard await iterator?.next() != nil else { return }
                try await waitForPause()
            } catch is CancellationError {
                return
            } catch let e as LockError {
                if case .integrity(let why) = e { raiseAlarm(why); return }
                noteFailure("upload: \(e)")
                try? await Task.sleep(for: backoff.next())
            } catch {
                noteFailure("upload: \(error)")
                try? await Task.sleep(for: backoff.next())
            }
        }
    }

    /// Waits until local changes pause for `uploadSettle`, or `uploadMaxDelay` at most.
    func waitForPause(_ pause: Duration? = nil, atMost: Duration? = nil) async throws {
        let pause = pause ?? options.uploadSettle
        let deadline = ContinuousClock.now + (atMost ?? options.uploadMaxDelay)
        while true {
            try await Task.sleep(for: pause)
            let quietSince = state.withLock { $0.lastCommitAt }
            if ContinuousClock.now - quietSince >= pause || ContinuousClock.now >= deadline { return }
        }
    }

    /// Sends one batch (a sealed one in flight first). Returns false if there was nothing to send.
    func uploadOnce() async throws -> Bool {
        do { return try await uploadOnceUnmapped() } catch let e as RemoteError {
            throw e.isRetryable ? LockError.offline : LockError.from(e)
        }
    }

    private func uploadOnceUnmapped() async throws -> Bool {
        if let batch = state.withLock({ $0.inflight.first(where: { $0.appendedSeq == nil }) }) {
            try await send(batch)
            return true
        }
        guard let batch = try sealNextBatch() else { return false }
        try await send(batch)
        return true
    }

    /// Seals the next queued operations (one base position, bounded count)
    /// into an entry and records it as in flight.
    func sealNextBatch() throws -> InflightBatch? {
        // Claim the operations (state .sending) in the same critical section
        // that reads them: from here on a local write can no longer be folded
        // into one of them, which would change an operation already sealed.
        let (ops, baseSeq): ([PendingOperation], UInt64) = state.withLock { s in
            guard let start = s.pending.firstIndex(where: { $0.state == .queued }) else { return ([], 0) }
            let base = s.pending[start].madeAtSeq
            var end = start
            while end < s.pending.count, end - start < options.operationsPerEntry,
                  s.pending[end].state == .queued, s.pending[end].madeAtSeq == base {
                s.pending[end].state = .sending
                end += 1
            }
            return (Array(s.pending[start..<end]), base)
        }
        guard !ops.isEmpty else { return nil }
        let claimed = Set(ops.map(\.id))
        do {
            let baseHead: ChainHead
            if baseSeq == 0 { baseHead = ChainHead.genesis(of: keys.vaultID) } else if let h = try index.head(at: baseSeq) { baseHead = h } else {
                throw LockError.invalid("no verified head at \(baseSeq)")
            }
            let stamp = state.withLock { s -> Int64 in
                s.lastStamp = max(now().nanoseconds, s.lastStamp + 1)
                return s.lastStamp
            }
            let batch = try OperationBatch(device: device, createdAt: Timestamp(nanoseconds: stamp), operations: ops.map(\.operation))
            let entry = try JournalEntry.seal(batch, keys: keys, baseSeq: JournalSeq(baseSeq), baseHead: baseHead)
            let inflight = InflightBatch(stamp: stamp, entry: entry, references: batch.chunkIDs, appendedSeq: nil)
            try index.recordInflight(inflight, operationIDs: ops.map(\.id))
            // Durable before it is sent: after a power cut, re-sealing operations the server
            // already has under another stamp would apply them twice.
            try index.sync()
            state.withLock { s in
                s.inflight.append(inflight)
                for i in s.pending.indices where claimed.contains(s.pending[i].id) { s.pending[i].batchStamp = stamp }
            }
            return inflight
        } catch {
            // Not sealed after all: give the operations back.
            state.withLock { s in
                for i in s.pending.indices where claimed.contains(s.pending[i].id) && s.pending[i].batchStamp == nil {
                    s.pending[i].state = .queued
                }
            }
            throw error
        }
    }

    /// Uploads the chunks the server lacks, then appends the entry.
    func send(_ batch: InflightBatch) async throws {
        var attempt = 0
        while true {
            attempt += 1
            try await uploadMissing(batch.references)
            do {
                // Signed when sent, by the device sending it (after a re-login, the new one).
                let entry = identity.map { batch.entry.signed(by: $0, device: device, vault: keys.vaultID) } ?? batch.entry
                let (seq, _) = try await remote.append(entry, references: batch.references)
                try index.markAppended(stamp: batch.stamp, seq: seq.rawValue)
                state.withLock { s in
                    if let i = s.inflight.firstIndex(where: { $0.stamp == batch.stamp }) { s.inflight[i].appendedSeq = seq.rawValue }
                    s.online = true
                    s.lastError = nil
                }
                return
            } catch RemoteError.missingChunks where attempt < 3 {
                continue
            } catch RemoteError.conflict(let code, _) where code == "bad_base" {
                throw LockError.integrity("the server says this device's verified history is not in its journal: it was rolled back or forked")
            } catch let e as RemoteError {
                throw e.isRetryable ? LockError.offline : LockError.from(e)
            }
        }
    }

    func uploadMissing(_ ids: [ChunkID]) async throws {
        var missing: [ChunkID] = []
        for group in stride(from: 0, to: ids.count, by: APIv1.maxIDsPerQuery) {
            missing += try await remote.missingChunks(Array(ids[group..<min(ids.count, group + APIv1.maxIDsPerQuery)]))
        }
        guard !missing.isEmpty else { return }
        var small: [SealedChunk] = []
        var smallBytes = 0
        var large: [ChunkID] = []
        for id in missing {
            guard let data = try outboxChunk(id) else {
                // Not in the outbox: reseal from the cache if we can.
                guard let plain = cache.cached(id) else { throw LockError.integrity("chunk \(id) is neither in the outbox nor cached") }
                let sealed = try plain.withUnsafeBytes { try keys.sealChunk($0) }
                large.append(id)
                _ = Self.writeOutboxFile(outboxPath(id), sealed.bytes)
                continue
            }
            if data.count < 512 << 10 {
                small.append(SealedChunk(id: id, bytes: data))
                smallBytes += data.count
                if small.count == APIv1.maxChunksPerBatch || smallBytes > APIv1.maxBatchBytes - (1 << 20) {
                    try await remote.putChunks(small)
                    small = []
                    smallBytes = 0
                }
            } else {
                large.append(id)
            }
        }
        if !small.isEmpty { try await remote.putChunks(small) }
        // Large chunks: four in flight.
        try await withThrowingTaskGroup(of: Void.self) { group in
            var inFlight = 0
            for id in large {
                if inFlight == 4 { try await group.next(); inFlight -= 1 }
                group.addTask { [self] in
                    guard let data = try outboxChunk(id) else { throw LockError.integrity("outbox chunk \(id) vanished") }
                    try await remote.putChunk(SealedChunk(id: id, bytes: Array(data)))
                }
                inFlight += 1
            }
            try await group.waitForAll()
        }
    }

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
                         integrityAlarm: s.alarm, ignoredEntries: s.ignoredEntries, lastIgnoredEntry: s.lastIgnored)
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
        return FileState(isConflictCopy: n.name.contains(" (conflict from "), isPending: pending, isPinned: pinned,
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

/// A thread-safe running total.
final class Counter: Sendable {
    private let value = Mutex(0)
    /// Adds `n`; returns the new total.
    func add(_ n: Int) -> Int { value.withLock { $0 += n; return $0 } }
}
