import Foundation
import GRDB
import LockCrypto
import LockWire

/// A local operation not yet in the journal.
public struct PendingOperation: Sendable, Equatable {
    public enum State: Int, Sendable { case queued = 0, sending = 1 }
    /// Order in the outbox.
    public var id: Int64
    public var operation: LockWire.Operation
    /// The journal position this device had verified when the user made it
    /// (the base of the entry that will carry it).
    public var madeAtSeq: UInt64
    /// When it was made (ns), for conflict names in the local view.
    public var madeAt: Timestamp
    public var state: State
    /// The stamp (batch createdAt) of the entry that carries it, once sealed.
    public var batchStamp: Int64?
}

/// A sealed entry on its way to the server: kept so that a retry after a
/// crash sends the very same bytes (the same stamp), which replay dedups.
public struct InflightBatch: Sendable, Equatable {
    public var stamp: Int64
    public var entry: JournalEntry
    public var references: [ChunkID]
    /// Set once the server has acknowledged the append.
    public var appendedSeq: UInt64?
    /// The chain head the server said the append made (checked when the
    /// pull reaches `appendedSeq`).
    public var appendedHead: ChainHead? = nil
    /// In memory only: the engine's count of acknowledgements when this one
    /// came (0: before this process), so that a page asked for afterwards
    /// must reach it.
    public var ackSerial: UInt64 = 0
}

/// Where this home's own device chain ends: the last batch it sealed, which
/// the next one names (`BatchLink`).
public struct SealedTail: Sendable, Equatable {
    public var device: DeviceID
    public var stamp: Int64
    public var envelopeHash: [UInt8]

    /// meta `chain_tail`: device 16 ‖ stamp i64 ‖ hash 32.
    var encoded: [UInt8] { device.bytes + Index.int64Bytes(stamp) + envelopeHash }

    init(device: DeviceID, stamp: Int64, envelopeHash: [UInt8]) {
        self.device = device
        self.stamp = stamp
        self.envelopeHash = envelopeHash
    }

    init?(encoded b: [UInt8]) {
        guard b.count == 56, let device = try? DeviceID(bytes: b[0..<16]) else { return nil }
        self.init(device: device, stamp: Int64(bitPattern: UInt64(bigEndianBytes: Array(b[16..<24]))), envelopeHash: Array(b[24...]))
    }
}

/// The client's index: one SQLite database in WAL mode (`index.sqlite`).
///
/// Tables (docs/design.md, "Client index"):
///
///     meta(key, value)            cursor, trusted head, last batch stamp, integrity alarm
///     heads(seq, head)            every verified chain head (to check entries' bases)
///     nodes(id, …)                the tree as the verified journal makes it (tombstones too)
///     inodes(ino, node)           stable inode numbers, never reused
///     pending(id, op, …)          local operations not yet in the journal (the outbox's order)
///     inflight(stamp, entry, …)   sealed entries being appended
///     device_stamps(device, stamp) the last batch stamp applied per device (dedup of retried appends);
///                                 its envelope hash and whether it was linked (v8, device chains)
///     signers(device, public_key)  the Ed25519 key each device's first signed entry bound to it
///     pins(node)                  pinned files and folders (sticky)
///     outbox(id, sealed)          small sealed chunks of pending operations (v2)
///     aliases(node, target)       folders merged into another by the replay rules (v3)
///     nodes.ctime                 when an operation last changed the node (v4)
///     atimes(node, atime)         access times set on this device (utimensat, touch -a); never synced (v5)
///     local_nodes(id, parent, …)  FIFOs and sockets made on this device; never synced (v6)
///     inflight.appended_head      the head the server acknowledged an append with (v8)
///     quarantine(head, seq, …)    entries `lockfs repair` quarantined: skipped (v9)
///
/// Durability (docs/design.md, "Durability"): `synchronous = NORMAL`. A
/// commit is in the write-ahead log before it returns — it survives a crash
/// of the process (kill -9) — and a power cut can lose only the latest
/// commits, whole: the index is consistent either way. `sync()` makes every
/// commit so far survive a power cut too (fsync(2) in the mount, every few
/// seconds in the background, at unmount). Small chunks live in the same
/// transactions as the operations that need them, so no commit can survive
/// without its data.
public final class Index: Sendable {
    let pool: DatabasePool
    let path: String

    /// The Ed25519 keys the journal bound to devices (their first signed entries).
    public func signers() throws -> [DeviceID: [UInt8]] {
        try pool.read { db in
            var signers: [DeviceID: [UInt8]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT device, public_key FROM signers") {
                signers[try DeviceID(bytes: Array(row["device"] as Data))] = Array(row["public_key"] as Data)
            }
            return signers
        }
    }

    public init(path: String) throws {
        self.path = path
        // The index holds the decrypted tree (names, sizes, manifests): 0600,
        // and SQLite gives the WAL and shared-memory files the same mode.
        try PrivateFiles.file(path)
        for suffix in ["-wal", "-shm"] { try PrivateFiles.tightenIfPresent(path + suffix, to: 0o600) }
        var config = Configuration()
        config.busyMode = .timeout(10)
        pool = try DatabasePool(path: path, configuration: config)
        try pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = NORMAL") }
        try Self.migrator.migrate(pool)
    }

    /// Makes every commit so far durable against a power cut: fsyncs the
    /// write-ahead log (checkpoints sync the database file themselves).
    public func sync() throws {
        // Without a WAL (before the first write, after the last close) everything is in the
        // database file: that one then.
        var file = path + "-wal"
        var fd = open(file, O_RDONLY | O_CLOEXEC)
        if fd < 0 && errno == ENOENT {
            file = path
            fd = open(file, O_RDONLY | O_CLOEXEC)
        }
        guard fd >= 0 else { throw LockError.io(errno: errno, "open \(file) to sync it") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw LockError.io(errno: errno, "sync \(file)") }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
                CREATE TABLE heads (seq INTEGER PRIMARY KEY, head BLOB NOT NULL);
                CREATE TABLE nodes (
                    id BLOB PRIMARY KEY,
                    record BLOB NOT NULL,
                    deleted INTEGER NOT NULL,
                    mod_seq INTEGER NOT NULL,
                    mod_device BLOB NOT NULL,
                    other_seq INTEGER NOT NULL,
                    fresh BLOB NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE inodes (ino INTEGER PRIMARY KEY AUTOINCREMENT, node BLOB NOT NULL UNIQUE);
                CREATE TABLE pending (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    op BLOB NOT NULL,
                    made_at_seq INTEGER NOT NULL,
                    made_at INTEGER NOT NULL,
                    state INTEGER NOT NULL DEFAULT 0,
                    batch_stamp INTEGER
                );
                CREATE TABLE inflight (
                    stamp INTEGER PRIMARY KEY,
                    entry BLOB NOT NULL,
                    refs BLOB NOT NULL,
                    appended_seq INTEGER
                );
                CREATE TABLE device_stamps (device BLOB PRIMARY KEY, stamp INTEGER NOT NULL) WITHOUT ROWID;
                CREATE TABLE pins (node BLOB PRIMARY KEY) WITHOUT ROWID;
                INSERT INTO inodes (ino, node) VALUES (1, zeroblob(16));
                """)
        }
        m.registerMigration("v2: small outbox chunks in the index") { db in
            try db.execute(sql: "CREATE TABLE outbox (id BLOB NOT NULL UNIQUE, sealed BLOB NOT NULL)")
        }
        m.registerMigration("v3: merged folders") { db in
            try db.execute(sql: "CREATE TABLE aliases (node BLOB PRIMARY KEY, target BLOB NOT NULL) WITHOUT ROWID")
        }
        m.registerMigration("v4: node change times") { db in
            // NULL in rows stored before: the node's mtime stands in.
            try db.execute(sql: "ALTER TABLE nodes ADD COLUMN ctime INTEGER")
        }
        m.registerMigration("v5: access times set on this device") { db in
            try db.execute(sql: "CREATE TABLE atimes (node BLOB PRIMARY KEY, atime INTEGER NOT NULL) WITHOUT ROWID")
        }
        m.registerMigration("v6: local-only FIFOs and sockets") { db in
            try db.execute(sql: """
                CREATE TABLE local_nodes (
                    id BLOB PRIMARY KEY,
                    parent BLOB NOT NULL,
                    name TEXT NOT NULL,
                    kind INTEGER NOT NULL,
                    mode INTEGER NOT NULL,
                    mtime INTEGER NOT NULL,
                    ctime INTEGER NOT NULL
                ) WITHOUT ROWID
                """)
        }
        m.registerMigration("v7: the key each signing device's first entry bound to it") { db in
            try db.execute(sql: "CREATE TABLE signers (device BLOB PRIMARY KEY, public_key BLOB NOT NULL) WITHOUT ROWID")
        }
        m.registerMigration("v8: device chains and acknowledged heads") { db in
            try db.execute(sql: """
                ALTER TABLE device_stamps ADD COLUMN hash BLOB;
                ALTER TABLE device_stamps ADD COLUMN linked INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE inflight ADD COLUMN appended_head BLOB;
                """)
        }
        m.registerMigration("v9: quarantined journal entries") { db in
            try db.execute(sql: "CREATE TABLE quarantine (head BLOB PRIMARY KEY, seq INTEGER NOT NULL, envelope_hash BLOB NOT NULL) WITHOUT ROWID")
        }
        return m
    }

    // MARK: Meta

    public func meta(_ key: String) throws -> [UInt8]? {
        try pool.read { db in try Data.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [key]).map { Array($0) } }
    }

    static func setMeta(_ db: Database, _ key: String, _ value: [UInt8]?) throws {
        if let value {
            try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", arguments: [key, Data(value)])
        } else {
            try db.execute(sql: "DELETE FROM meta WHERE key = ?", arguments: [key])
        }
    }

    public func setMeta(_ key: String, _ value: [UInt8]?) throws {
        try pool.write { try Self.setMeta($0, key, value) }
    }

    public func metaInt(_ key: String) throws -> Int64? {
        try meta(key).flatMap { $0.count == 8 ? Int64(bitPattern: $0.reduce(0) { $0 << 8 | UInt64($1) }) : nil }
    }

    static func int64Bytes(_ v: Int64) -> [UInt8] { ByteOrder.bigEndian(UInt64(bitPattern: v)) }

    // MARK: Loading

    public struct Snapshot: Sendable {
        public var nodes: [Node]
        public var aliases: [NodeID: NodeID]
        public var cursor: UInt64
        public var head: ChainHead?
        public var pending: [PendingOperation]
        public var inflight: [InflightBatch]
        public var deviceTails: [DeviceID: DeviceTail]
        /// The last batch this home sealed (nil before lockfs 0.3).
        public var sealedTail: SealedTail?
        public var inodes: [(UInt64, NodeID)]
        public var pins: Set<NodeID>
        public var accessTimes: [NodeID: Timestamp]
        public var localNodes: [LocalNode]
        public var signers: [DeviceID: [UInt8]] = [:]
    }

    /// Everything the engine keeps in memory, read once at start.
    public func load() throws -> Snapshot {
        try pool.read { db in
            var nodes: [Node] = []
            for row in try Row.fetchAll(db, sql: "SELECT record, deleted, mod_seq, mod_device, other_seq, fresh, ctime FROM nodes") {
                nodes.append(try Self.decodeNode(row))
            }
            var aliases: [NodeID: NodeID] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT node, target FROM aliases") {
                aliases[try NodeID(bytes: Array(row["node"] as Data))] = try NodeID(bytes: Array(row["target"] as Data))
            }
            let cursor = try Data.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'cursor'").map { UInt64(bigEndianBytes: Array($0)) } ?? 0
            let head = try Data.fetchOne(db, sql: "SELECT head FROM heads WHERE seq = ?", arguments: [Int64(cursor)])
                .flatMap { try? ChainHead(bytes: Array($0)) }
            var pending: [PendingOperation] = []
            for row in try Row.fetchAll(db, sql: "SELECT id, op, made_at_seq, made_at, state, batch_stamp FROM pending ORDER BY id") {
                pending.append(try Self.decodePending(row))
            }
            var inflight: [InflightBatch] = []
            for row in try Row.fetchAll(db, sql: "SELECT stamp, entry, refs, appended_seq, appended_head FROM inflight ORDER BY stamp") {
                let refs = try Self.decodeIDs(Array(row["refs"] as Data))
                inflight.append(InflightBatch(stamp: row["stamp"], entry: try JournalEntry(decoding: Array(row["entry"] as Data)),
                                              references: refs, appendedSeq: (row["appended_seq"] as Int64?).map { UInt64($0) },
                                              appendedHead: try (row["appended_head"] as Data?).map { try ChainHead(bytes: Array($0)) }))
            }
            var tails: [DeviceID: DeviceTail] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT device, stamp, hash, linked FROM device_stamps") {
                tails[try DeviceID(bytes: Array(row["device"] as Data))] =
                    DeviceTail(stamp: row["stamp"], envelopeHash: (row["hash"] as Data?).map { Array($0) }, linked: (row["linked"] as Int64) != 0)
            }
            let sealedTail = try Data.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'chain_tail'").flatMap { SealedTail(encoded: Array($0)) }
            var inodes: [(UInt64, NodeID)] = []
            for row in try Row.fetchAll(db, sql: "SELECT ino, node FROM inodes") {
                inodes.append((UInt64(row["ino"] as Int64), try NodeID(bytes: Array(row["node"] as Data))))
            }
            let pins = Set(try Data.fetchAll(db, sql: "SELECT node FROM pins").map { try NodeID(bytes: Array($0)) })
            var accessTimes: [NodeID: Timestamp] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT node, atime FROM atimes") {
                accessTimes[try NodeID(bytes: Array(row["node"] as Data))] = Timestamp(nanoseconds: row["atime"])
            }
            var localNodes: [LocalNode] = []
            for row in try Row.fetchAll(db, sql: "SELECT id, parent, name, kind, mode, mtime, ctime FROM local_nodes") {
                guard let kind = LocalNode.Kind(rawValue: UInt8(clamping: row["kind"] as Int64)) else { continue }
                localNodes.append(LocalNode(id: try NodeID(bytes: Array(row["id"] as Data)), parent: try NodeID(bytes: Array(row["parent"] as Data)),
                                            name: row["name"], kind: kind, mode: UInt32(truncatingIfNeeded: row["mode"] as Int64),
                                            mtime: Timestamp(nanoseconds: row["mtime"]), ctime: Timestamp(nanoseconds: row["ctime"])))
            }
            var signers: [DeviceID: [UInt8]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT device, public_key FROM signers") {
                signers[try DeviceID(bytes: Array(row["device"] as Data))] = Array(row["public_key"] as Data)
            }
            return Snapshot(nodes: nodes, aliases: aliases, cursor: cursor, head: head, pending: pending, inflight: inflight,
                            deviceTails: tails, sealedTail: sealedTail, inodes: inodes, pins: pins, accessTimes: accessTimes, localNodes: localNodes,
                            signers: signers)
        }
    }

    /// The head this client verified at `seq`.
    public func head(at seq: UInt64) throws -> ChainHead? {
        guard seq <= UInt64(Int64.max) else { return nil }
        return try pool.read { db in
            try Data.fetchOne(db, sql: "SELECT head FROM heads WHERE seq = ?", arguments: [Int64(seq)]).flatMap { try? ChainHead(bytes: Array($0)) }
        }
    }

    // MARK: Nodes

    /// A node's row: the NodeRecord (as in checkpoints) plus replay state.
    static func encodeNode(_ n: Node) -> [UInt8] {
        TreeState(nodes: [NodeRecord(node: n.id, parent: n.parent, name: (try? Name(n.name)) ?? (try! Name("_")), revision: n.revision,
                                     attributes: n.attributes, content: n.content)]).encoded
    }

    static func decodeNode(_ row: Row) throws -> Node {
        let state = try TreeState(decoding: Array(row["record"] as Data))
        guard let r = state.nodes.first, state.nodes.count == 1 else { throw LockError.invalid("index: bad node row") }
        let fresh = Array(row["fresh"] as Data)
        var revisions: [RevisionID] = []
        var i = 0
        while i + 16 <= fresh.count { revisions.append(try RevisionID(bytes: fresh[i..<i + 16])); i += 16 }
        return Node(id: r.node, parent: r.parent, name: r.name.value, revision: r.revision, attributes: r.attributes,
                    content: r.content, deleted: (row["deleted"] as Int64) != 0,
                    modSeq: UInt64(bitPattern: row["mod_seq"] as Int64),
                    modDevice: try DeviceID(bytes: Array(row["mod_device"] as Data)),
                    otherSeq: UInt64(bitPattern: row["other_seq"] as Int64), freshRevisions: revisions,
                    ctime: (row["ctime"] as Int64?).map { Timestamp(nanoseconds: $0) } ?? r.attributes.mtime)
    }

    static func saveNode(_ db: Database, _ n: Node) throws {
        let fresh = n.freshRevisions.flatMap(\.bytes)
        try db.execute(sql: """
                       INSERT OR REPLACE INTO nodes (id, record, deleted, mod_seq, mod_device, other_seq, fresh, ctime)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                       """,
                       arguments: [Data(n.id.bytes), Data(encodeNode(n)), n.deleted ? 1 : 0, Int64(bitPattern: n.modSeq),
                                   Data(n.modDevice.bytes), Int64(bitPattern: n.otherSeq), Data(fresh), n.ctime.nanoseconds])
    }

    // MARK: Applying verified entries

    /// One verified page, applied in one transaction: the changed nodes, the
    /// new heads and cursor, the device stamps, and the local operations that
    /// the page confirmed (removed from the outbox).
    public struct AppliedPage: Sendable {
        public var nodes: [Node]
        public var aliases: [NodeID: NodeID] = [:]
        public var heads: [(UInt64, ChainHead)]
        public var deviceTails: [DeviceID: DeviceTail]
        public var confirmedStamps: [Int64]
        /// Signing keys bound by this page (each device's first signed entry).
        public var signers: [DeviceID: [UInt8]] = [:]
        /// Why entries of this page were ignored (`EntryAuthority`), one line each.
        public var ignored: [String] = []
    }

    public func commit(_ page: AppliedPage) throws {
        try pool.write { db in
            for n in page.nodes { try Self.saveNode(db, n) }
            for (node, target) in page.aliases {
                try db.execute(sql: "INSERT OR REPLACE INTO aliases (node, target) VALUES (?, ?)", arguments: [Data(node.bytes), Data(target.bytes)])
            }
            for (seq, head) in page.heads {
                try db.execute(sql: "INSERT OR REPLACE INTO heads (seq, head) VALUES (?, ?)", arguments: [Int64(seq), Data(head.bytes)])
            }
            if let last = page.heads.last { try Self.setMeta(db, "cursor", ByteOrder.bigEndian(last.0)) }
            for (d, t) in page.deviceTails {
                try db.execute(sql: "INSERT OR REPLACE INTO device_stamps (device, stamp, hash, linked) VALUES (?, ?, ?, ?)",
                               arguments: [Data(d.bytes), t.stamp, t.envelopeHash.map { Data($0) }, t.linked ? 1 : 0])
            }
            for s in page.confirmedStamps {
                try db.execute(sql: "DELETE FROM pending WHERE batch_stamp = ?", arguments: [s])
                try db.execute(sql: "DELETE FROM inflight WHERE stamp = ?", arguments: [s])
            }
            for (device, key) in page.signers {
                try db.execute(sql: "INSERT OR IGNORE INTO signers (device, public_key) VALUES (?, ?)", arguments: [Data(device.bytes), Data(key)])
            }
            if let last = page.ignored.last {
                let before = try Data.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'ignored_entries'")
                    .map { UInt64(bigEndianBytes: Array($0)) } ?? 0
                try Self.setMeta(db, "ignored_entries", ByteOrder.bigEndian(before + UInt64(page.ignored.count)))
                try Self.setMeta(db, "last_ignored_entry", Array(last.utf8))
            }
        }
    }

    // MARK: Pending operations

    static func decodePending(_ row: Row) throws -> PendingOperation {
        let batch = try OperationBatch(decoding: Array(row["op"] as Data))
        guard batch.operations.count == 1 else { throw LockError.invalid("index: bad pending row") }
        return PendingOperation(id: row["id"], operation: batch.operations[0], madeAtSeq: UInt64(row["made_at_seq"] as Int64),
                                madeAt: Timestamp(nanoseconds: row["made_at"]),
                                state: PendingOperation.State(rawValue: row["state"]) ?? .queued, batchStamp: row["batch_stamp"])
    }

    /// Stores a local operation with the small sealed chunks it needs, in
    /// one transaction; returns its outbox id, and the inode number of
    /// `node` when asked to allocate one (a create).
    public func enqueue(_ op: LockWire.Operation, device: DeviceID, madeAtSeq: UInt64, madeAt: Timestamp,
                        chunks: [SealedChunk] = [], allocatingInodeFor node: NodeID? = nil) throws -> (id: Int64, ino: UInt64?) {
        let blob = try OperationBatch(device: device, createdAt: madeAt, operations: [op]).encoded
        return try pool.write { db in
            try Self.insertChunks(db, chunks)
            try db.execute(sql: "INSERT INTO pending (op, made_at_seq, made_at) VALUES (?, ?, ?)",
                           arguments: [Data(blob), Int64(madeAtSeq), madeAt.nanoseconds])
            let id = db.lastInsertedRowID
            guard let node else { return (id, nil) }
            try db.execute(sql: "INSERT OR IGNORE INTO inodes (node) VALUES (?)", arguments: [Data(node.bytes)])
            let ino = try Int64.fetchOne(db, sql: "SELECT ino FROM inodes WHERE node = ?", arguments: [Data(node.bytes)])!
            return (id, UInt64(ino))
        }
    }

    /// Replaces a queued operation in place (coalescing a write into an
    /// earlier create or write of the same file that has not been sent),
    /// with the small sealed chunks the new version needs.
    public func replaceQueued(id: Int64, with op: LockWire.Operation, device: DeviceID, madeAt: Timestamp,
                              chunks: [SealedChunk] = []) throws -> Bool {
        let blob = try OperationBatch(device: device, createdAt: madeAt, operations: [op]).encoded
        return try pool.write { db in
            try db.execute(sql: "UPDATE pending SET op = ? WHERE id = ? AND state = 0", arguments: [Data(blob), id])
            guard db.changesCount == 1 else { return false }
            try Self.insertChunks(db, chunks)
            return true
        }
    }

    // MARK: Small outbox chunks

    static func insertChunks(_ db: Database, _ chunks: [SealedChunk]) throws {
        for c in chunks {
            try db.execute(sql: "INSERT OR IGNORE INTO outbox (id, sealed) VALUES (?, ?)", arguments: [Data(c.id.bytes), Data(c.bytes)])
        }
    }

    /// A small sealed chunk kept in the index, or nil.
    public func outboxChunk(_ id: ChunkID) throws -> [UInt8]? {
        try pool.read { db in try Data.fetchOne(db, sql: "SELECT sealed FROM outbox WHERE id = ?", arguments: [Data(id.bytes)]).map { Array($0) } }
    }

    /// Every small chunk in the index, with its sealed size.
    public func outboxChunkSizes() throws -> [(ChunkID, Int)] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, length(sealed) AS size FROM outbox").map {
                (try ChunkID(bytes: Array($0["id"] as Data)), $0["size"] as Int)
            }
        }
    }

    /// Forgets small chunks the server has and nothing pending needs.
    public func deleteOutboxChunks(_ ids: [ChunkID]) throws {
        guard !ids.isEmpty else { return }
        try pool.write { db in
            for id in ids { try db.execute(sql: "DELETE FROM outbox WHERE id = ?", arguments: [Data(id.bytes)]) }
        }
    }

    /// Records a sealed batch and marks its operations as sending, atomically;
    /// it is this home's chain's new end (`tail`).
    public func recordInflight(_ batch: InflightBatch, operationIDs: [Int64], tail: SealedTail) throws {
        try pool.write { db in
            try db.execute(sql: "INSERT INTO inflight (stamp, entry, refs, appended_seq) VALUES (?, ?, ?, NULL)",
                           arguments: [batch.stamp, Data(batch.entry.encoded), Data(Self.encodeIDs(batch.references))])
            for id in operationIDs {
                try db.execute(sql: "UPDATE pending SET state = 1, batch_stamp = ? WHERE id = ?", arguments: [batch.stamp, id])
            }
            try Self.setMeta(db, "last_stamp", Self.int64Bytes(batch.stamp))
            try Self.setMeta(db, "chain_tail", tail.encoded)
        }
    }

    /// Chunk ids as stored in `inflight.refs`: the ids back to back (no
    /// count limit, unlike the API's id list).
    static func encodeIDs(_ ids: [ChunkID]) -> [UInt8] { ids.flatMap(\.bytes) }

    static func decodeIDs(_ bytes: [UInt8]) throws -> [ChunkID] {
        guard bytes.count % 32 == 0 else { throw LockError.invalid("index: bad reference list") }
        return try stride(from: 0, to: bytes.count, by: 32).map { try ChunkID(bytes: bytes[$0..<$0 + 32]) }
    }

    public func markAppended(stamp: Int64, seq: UInt64, head: ChainHead) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE inflight SET appended_seq = ?, appended_head = ? WHERE stamp = ?",
                           arguments: [Int64(seq), Data(head.bytes), stamp])
        }
    }

    // MARK: Inodes

    /// The inode number of `node`, allocating the next one on first use.
    public func allocateInodes(_ nodes: [NodeID]) throws -> [(NodeID, UInt64)] {
        guard !nodes.isEmpty else { return [] }
        return try pool.write { db in
            try nodes.map { n in
                try db.execute(sql: "INSERT OR IGNORE INTO inodes (node) VALUES (?)", arguments: [Data(n.bytes)])
                let ino = try Int64.fetchOne(db, sql: "SELECT ino FROM inodes WHERE node = ?", arguments: [Data(n.bytes)])!
                return (n, UInt64(ino))
            }
        }
    }

    // MARK: Access times

    /// Stores (or with nil forgets) the access time set on this device for each node.
    public func setAccessTimes(_ times: [(NodeID, Timestamp?)]) throws {
        guard !times.isEmpty else { return }
        try pool.write { db in
            for (node, atime) in times {
                if let atime {
                    try db.execute(sql: "INSERT OR REPLACE INTO atimes (node, atime) VALUES (?, ?)",
                                   arguments: [Data(node.bytes), atime.nanoseconds])
                } else {
                    try db.execute(sql: "DELETE FROM atimes WHERE node = ?", arguments: [Data(node.bytes)])
                }
            }
        }
    }

    // MARK: Local-only nodes

    /// Stores a FIFO or socket of this device; returns its inode number
    /// (allocated on first store, in the same transaction).
    public func saveLocalNode(_ n: LocalNode) throws -> UInt64 {
        try pool.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO local_nodes (id, parent, name, kind, mode, mtime, ctime) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           arguments: [Data(n.id.bytes), Data(n.parent.bytes), n.name, Int64(n.kind.rawValue), Int64(n.mode),
                                       n.mtime.nanoseconds, n.ctime.nanoseconds])
            try db.execute(sql: "INSERT OR IGNORE INTO inodes (node) VALUES (?)", arguments: [Data(n.id.bytes)])
            return UInt64(try Int64.fetchOne(db, sql: "SELECT ino FROM inodes WHERE node = ?", arguments: [Data(n.id.bytes)])!)
        }
    }

    /// Forgets FIFOs and sockets of this device (and their access times).
    public func deleteLocalNodes(_ ids: [NodeID]) throws {
        guard !ids.isEmpty else { return }
        try pool.write { db in
            for id in ids {
                try db.execute(sql: "DELETE FROM local_nodes WHERE id = ?", arguments: [Data(id.bytes)])
                try db.execute(sql: "DELETE FROM atimes WHERE node = ?", arguments: [Data(id.bytes)])
            }
        }
    }

    // MARK: Pins

    public func setPinned(_ node: NodeID, _ pinned: Bool) throws {
        try pool.write { db in
            if pinned {
                try db.execute(sql: "INSERT OR IGNORE INTO pins (node) VALUES (?)", arguments: [Data(node.bytes)])
            } else {
                try db.execute(sql: "DELETE FROM pins WHERE node = ?", arguments: [Data(node.bytes)])
            }
        }
    }

    // MARK: Status (readable by another process while an engine runs)

    public struct Counts: Sendable {
        public var pendingOperations: Int
        public var inflightBatches: Int
        public var cursor: UInt64
    }

    /// What `discardQueue()` dropped.
    public struct DiscardedQueue: Sendable, Equatable {
        /// Local operations dropped (what `lockfs status` counts as queued).
        public var operations: Int
        /// Of those, the ones in an entry the server had acknowledged: they
        /// are in the journal all the same.
        public var onServer: Int
    }

    /// Drops every local change not yet confirmed by the journal: pending
    /// operations, sealed entries in flight and the small sealed chunks they
    /// needed, in one transaction. The engine's next start removes outbox
    /// files nothing needs any more. For `lockfs logout --discard-changes`.
    public func discardQueue() throws -> DiscardedQueue {
        try pool.write { db in
            let operations = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM pending") ?? 0
            let onServer = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM pending WHERE batch_stamp IN (SELECT stamp FROM inflight WHERE appended_seq IS NOT NULL)
                """) ?? 0
            try db.execute(sql: "DELETE FROM pending")
            try db.execute(sql: "DELETE FROM inflight")
            try db.execute(sql: "DELETE FROM outbox")
            return DiscardedQueue(operations: operations, onServer: onServer)
        }
    }

    /// The verified state of a journal rebuilt from its start (`lockfs
    /// repair --server-restored`): it replaces the tree, heads, cursor,
    /// device chains and signers; `operations` replace the queue (sealed
    /// entries in flight are dropped: they were written on the history that
    /// was lost); the alarm is cleared. One transaction. Inode numbers,
    /// pins, access times and small sealed chunks stay (the next start
    /// drops chunks nothing needs).
    public struct RebuiltJournal: Sendable {
        public var nodes: [Node]
        public var aliases: [NodeID: NodeID]
        public var heads: [(UInt64, ChainHead)]
        public var tails: [DeviceID: DeviceTail]
        public var signers: [DeviceID: [UInt8]]
        public var sealedTail: SealedTail?
        public var operations: [LockWire.Operation]
        public var device: DeviceID
        public var madeAt: Timestamp
    }

    public func replace(with rebuilt: RebuiltJournal) throws {
        try pool.write { db in
            for table in ["nodes", "aliases", "heads", "device_stamps", "signers", "pending", "inflight"] {
                try db.execute(sql: "DELETE FROM \(table)")
            }
            for n in rebuilt.nodes { try Self.saveNode(db, n) }
            for (node, target) in rebuilt.aliases {
                try db.execute(sql: "INSERT INTO aliases (node, target) VALUES (?, ?)", arguments: [Data(node.bytes), Data(target.bytes)])
            }
            for (seq, head) in rebuilt.heads {
                try db.execute(sql: "INSERT INTO heads (seq, head) VALUES (?, ?)", arguments: [Int64(seq), Data(head.bytes)])
            }
            try Self.setMeta(db, "cursor", ByteOrder.bigEndian(rebuilt.heads.last?.0 ?? 0))
            for (d, t) in rebuilt.tails {
                try db.execute(sql: "INSERT INTO device_stamps (device, stamp, hash, linked) VALUES (?, ?, ?, ?)",
                               arguments: [Data(d.bytes), t.stamp, t.envelopeHash.map { Data($0) }, t.linked ? 1 : 0])
            }
            for (device, key) in rebuilt.signers {
                try db.execute(sql: "INSERT INTO signers (device, public_key) VALUES (?, ?)", arguments: [Data(device.bytes), Data(key)])
            }
            let cursor = rebuilt.heads.last?.0 ?? 0
            for op in rebuilt.operations {
                let blob = try OperationBatch(device: rebuilt.device, createdAt: rebuilt.madeAt, operations: [op]).encoded
                try db.execute(sql: "INSERT INTO pending (op, made_at_seq, made_at) VALUES (?, ?, ?)",
                               arguments: [Data(blob), Int64(cursor), rebuilt.madeAt.nanoseconds])
                if case .create(let node, _, _, _, _, _) = op {
                    try db.execute(sql: "INSERT OR IGNORE INTO inodes (node) VALUES (?)", arguments: [Data(node.bytes)])
                }
            }
            try Self.setMeta(db, "chain_tail", rebuilt.sealedTail?.encoded)
            for key in ["alarm", "alarm_entry"] { try Self.setMeta(db, key, nil) }
        }
    }

    /// Heads of the quarantined entries, and the envelope hashes of their
    /// batches (a device's next batch names its quarantined one).
    public func quarantined() throws -> (heads: Set<ChainHead>, envelopes: Set<[UInt8]>) {
        try pool.read { db in
            var heads: Set<ChainHead> = [], envelopes: Set<[UInt8]> = []
            for row in try Row.fetchAll(db, sql: "SELECT head, envelope_hash FROM quarantine") {
                heads.insert(try ChainHead(bytes: Array(row["head"] as Data)))
                envelopes.insert(Array(row["envelope_hash"] as Data))
            }
            return (heads, envelopes)
        }
    }

    /// Quarantines an entry and clears the alarm it raised, in one transaction.
    public func quarantine(seq: UInt64, head: ChainHead, envelopeHash: [UInt8]) throws {
        try pool.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO quarantine (head, seq, envelope_hash) VALUES (?, ?, ?)",
                           arguments: [Data(head.bytes), Int64(seq), Data(envelopeHash)])
            for key in ["alarm", "alarm_entry"] { try Self.setMeta(db, key, nil) }
        }
    }

    public func counts() throws -> Counts {
        try pool.read { db in
            Counts(pendingOperations: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM pending") ?? 0,
                   inflightBatches: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM inflight") ?? 0,
                   cursor: try Data.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'cursor'").map { UInt64(bigEndianBytes: Array($0)) } ?? 0)
        }
    }
}

extension UInt64 {
    init(bigEndianBytes b: [UInt8]) { self = b.prefix(8).reduce(0) { $0 << 8 | UInt64($1) } }
}

extension ClientHome {
    /// Local changes in this home's index that the journal has not confirmed
    /// (what `lockfs status` shows as queued); 0 when there is no index.
    public func queuedChanges() throws -> Int {
        guard FileManager.default.fileExists(atPath: indexFile.path) else { return 0 }
        return try Index(path: indexFile.path).counts().pendingOperations
    }

    /// Drops every queued local change (`Index.discardQueue`) and the sealed
    /// chunks waiting for upload in the outbox folder, so that a later login
    /// in this home sends none of them.
    public func discardQueuedChanges() throws -> Index.DiscardedQueue {
        guard FileManager.default.fileExists(atPath: indexFile.path) else { return .init(operations: 0, onServer: 0) }
        let dropped = try Index(path: indexFile.path).discardQueue()
        if FileManager.default.fileExists(atPath: outboxDirectory.path) {
            do { try FileManager.default.removeItem(at: outboxDirectory) } catch {
                throw LockError.io(errno: EIO, "remove \(outboxDirectory.path) (\(error.localizedDescription))")
            }
        }
        return dropped
    }
}
