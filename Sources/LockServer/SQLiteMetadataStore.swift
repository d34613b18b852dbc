import Foundation
import GRDB
import LockCrypto
import LockWire

/// The embedded metadata store: one SQLite database in WAL mode with
/// `synchronous = FULL`, so a committed transaction survives power loss.
///
/// GRDB's pool serialises writes on its own queue and runs reads in
/// parallel, off the event loops. Several processes may open the same file
/// (the admin commands do while the server runs); SQLite's locking and a
/// busy timeout keep them consistent.
public final class SQLiteMetadataStore: MetadataStore {
    private let pool: DatabasePool

    /// The linked SQLite library's version, e.g. "3.40.1".
    public static var sqliteVersion: String {
        (try? DatabaseQueue().read { try String.fetchOne($0, sql: "SELECT sqlite_version()") }) ?? "unknown"
    }

    /// Opens (creating and migrating if needed) the database at `path`.
    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        pool = try DatabasePool(path: path, configuration: config)
        // Only now: GRDB's WAL set-up runs `PRAGMA synchronous = NORMAL` on
        // the writer after prepareDatabase, and NORMAL does not fsync at
        // commit in WAL mode. FULL makes an acknowledged commit survive power loss.
        try pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
        try Self.migrator.migrate(pool)
    }

    /// Versioned schema migrations; applied in order at open, each once.
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE accounts (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    vault_id BLOB NOT NULL UNIQUE,
                    kdf BLOB NOT NULL,
                    keyring BLOB NOT NULL,
                    login_salt BLOB NOT NULL,
                    login_hash BLOB NOT NULL,
                    stored_bytes INTEGER NOT NULL DEFAULT 0,
                    quota INTEGER,
                    created_at REAL NOT NULL
                );
                CREATE TABLE settings (
                    key TEXT PRIMARY KEY,
                    value BLOB NOT NULL
                );
                CREATE TABLE invites (
                    user TEXT PRIMARY KEY,
                    code_hash BLOB NOT NULL,
                    expires_at REAL NOT NULL
                );
                CREATE TABLE devices (
                    id BLOB PRIMARY KEY,
                    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                    name TEXT NOT NULL,
                    token_hash BLOB NOT NULL UNIQUE,
                    created_at REAL NOT NULL,
                    last_seen_at REAL,
                    revoked_at REAL
                );
                CREATE INDEX devices_account ON devices(account_id);
                CREATE TABLE chunks (
                    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                    id BLOB NOT NULL,
                    size INTEGER NOT NULL,
                    PRIMARY KEY (account_id, id)
                ) WITHOUT ROWID;
                CREATE TABLE entries (
                    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    head BLOB NOT NULL,
                    body BLOB NOT NULL,
                    device_id BLOB NOT NULL,
                    created_at REAL NOT NULL,
                    PRIMARY KEY (account_id, seq)
                ) WITHOUT ROWID;
                CREATE TABLE entry_refs (
                    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                    chunk_id BLOB NOT NULL,
                    seq INTEGER NOT NULL,
                    PRIMARY KEY (account_id, chunk_id, seq)
                ) WITHOUT ROWID;
                CREATE TABLE checkpoints (
                    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    body BLOB NOT NULL,
                    PRIMARY KEY (account_id, seq)
                ) WITHOUT ROWID;
                """)
        }
        // The recovery verifier (issue 13): NULL for accounts made before.
        m.registerMigration("v2") { db in
            try db.execute(sql: "ALTER TABLE accounts ADD COLUMN recovery_verifier BLOB")
        }
        // Device keys (issue 13): NULL for devices enrolled before.
        m.registerMigration("v3") { db in
            try db.execute(sql: "ALTER TABLE devices ADD COLUMN signing_key BLOB")
            try db.execute(sql: "ALTER TABLE devices ADD COLUMN box_key BLOB")
        }
        // The box key's signature (issue 13, key generations): NULL for devices enrolled before.
        m.registerMigration("v4") { db in
            try db.execute(sql: "ALTER TABLE devices ADD COLUMN box_key_signature BLOB")
        }
        // Journal entries and checkpoints count against the quota (issue 15): what is stored already.
        m.registerMigration("v5") { db in
            try db.execute(sql: """
                UPDATE accounts SET stored_bytes = stored_bytes
                    + COALESCE((SELECT SUM(length(body)) FROM entries WHERE account_id = accounts.id), 0)
                    + COALESCE((SELECT SUM(length(body)) FROM checkpoints WHERE account_id = accounts.id), 0)
                """)
        }
        return m
    }

    /// The writer connection's `PRAGMA synchronous` (2 = FULL): for tests.
    public func writerSynchronousMode() throws -> Int {
        try pool.writeWithoutTransaction { try Int.fetchOne($0, sql: "PRAGMA synchronous") ?? -1 }
    }

    // MARK: Deployment

    public func serverSecret() async throws -> [UInt8] {
        try await pool.write { db in
            if let v = try Data.fetchOne(db, sql: "SELECT value FROM settings WHERE key = 'server_secret'") { return Array(v) }
            let secret = Sodium.randomBytes(32)
            try db.execute(sql: "INSERT INTO settings (key, value) VALUES ('server_secret', ?)", arguments: [Data(secret)])
            return secret
        }
    }

    public func totalStoredBytes() async throws -> Int64 {
        try await pool.read { db in try Int64.fetchOne(db, sql: "SELECT COALESCE(SUM(stored_bytes), 0) FROM accounts") ?? 0 }
    }

    // MARK: Accounts

    public func createInvite(_ invite: NewInvite) async throws {
        try await pool.write { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE name = ?", arguments: [invite.user]) == true {
                throw ServerError.conflict(code: "user_exists", message: "an account named \(invite.user) exists already")
            }
            try db.execute(sql: "INSERT OR REPLACE INTO invites (user, code_hash, expires_at) VALUES (?, ?, ?)",
                           arguments: [invite.user, Data(invite.codeHash), invite.expiresAt.timeIntervalSince1970])
        }
    }

    public func register(_ a: NewAccount, inviteHash: [UInt8]?, device: NewDevice, now: Date) async throws -> Account {
        try await pool.write { db in
            // The invite is checked before the name, so that without a valid
            // invite for NAME nobody learns whether NAME exists.
            if let inviteHash {
                let row = try Row.fetchOne(db, sql: "SELECT code_hash, expires_at FROM invites WHERE user = ?", arguments: [a.name])
                guard let row, Sodium.constantTimeEqual(Array(row["code_hash"] as Data), inviteHash),
                      (row["expires_at"] as Double) > now.timeIntervalSince1970 else {
                    throw ServerError.forbidden("the invite code is wrong, used or expired (ask the admin for a new one: lockfs-server user add NAME)")
                }
                try db.execute(sql: "DELETE FROM invites WHERE user = ?", arguments: [a.name])
            }
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE name = ?", arguments: [a.name]) == true {
                throw ServerError.conflict(code: "user_exists", message: "an account with this name exists already")
            }
            // Blobs are stored per vault id: a vault id belongs to one account only.
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE vault_id = ?", arguments: [Data(a.vaultID.bytes)]) == true {
                throw ServerError.conflict(code: "vault_exists", message: "this vault id is taken; a new vault needs a new random id")
            }
            try db.execute(sql: """
                INSERT INTO accounts (name, vault_id, kdf, keyring, login_salt, login_hash, recovery_verifier, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [a.name, Data(a.vaultID.bytes), Data(a.kdf), Data(a.keyring), Data(a.loginSalt),
                                 Data(a.loginHash), a.recoveryVerifier.map { Data($0) }, now.timeIntervalSince1970])
            let id = AccountID(db.lastInsertedRowID)
            try Self.insertDevice(db, device, account: id, now: now)
            return try Self.account(db, id: id)!
        }
    }

    public func account(named name: String) async throws -> Account? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM accounts WHERE name = ?", arguments: [name]).map(Self.account(from:))
        }
    }

    public func accounts() async throws -> [AccountSummary] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT name, stored_bytes,
                       (SELECT COUNT(*) FROM devices d WHERE d.account_id = a.id AND d.revoked_at IS NULL) AS devices,
                       (SELECT COUNT(*) FROM entries e WHERE e.account_id = a.id) AS entries
                FROM accounts a ORDER BY name
                """).map {
                AccountSummary(name: $0["name"], devices: $0["devices"], storedBytes: $0["stored_bytes"], entries: $0["entries"])
            }
        }
    }

    public func removeAccount(named name: String) async throws -> VaultID? {
        try await pool.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT id, vault_id FROM accounts WHERE name = ?", arguments: [name]) else {
                try db.execute(sql: "DELETE FROM invites WHERE user = ?", arguments: [name])
                return nil
            }
            try db.execute(sql: "DELETE FROM accounts WHERE id = ?", arguments: [row["id"] as Int64])
            try db.execute(sql: "DELETE FROM invites WHERE user = ?", arguments: [name])
            return try VaultID(bytes: Array(row["vault_id"] as Data))
        }
    }

    public func replaceKeyring(account: AccountID, _ c: KeyringChange, now: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: """
                UPDATE accounts SET keyring = ?, kdf = ?, login_salt = ?, login_hash = ?,
                       recovery_verifier = COALESCE(?, recovery_verifier)
                WHERE id = ? AND (? IS NULL OR login_hash = ?)
                """, arguments: [Data(c.keyring), Data(c.kdf), Data(c.loginSalt), Data(c.loginHash),
                                 c.recoveryVerifier.map { Data($0) }, account.rawValue,
                                 c.expectedLoginHash.map { Data($0) }, c.expectedLoginHash.map { Data($0) }])
            guard db.changesCount == 1 else {
                throw ServerError.conflict(code: "keyring_changed", message: "the keyring changed meanwhile (another password change or recovery); try again")
            }
            if let keep = c.revokeAllBut {
                try db.execute(sql: "UPDATE devices SET revoked_at = ? WHERE account_id = ? AND id != ? AND revoked_at IS NULL",
                               arguments: [now.timeIntervalSince1970, account.rawValue, Data(keep.bytes)])
            }
        }
    }

    // MARK: Devices

    public func addDevice(_ device: NewDevice, account: AccountID, now: Date, ifLoginHash: [UInt8]?) async throws {
        try await pool.write { db in
            if let ifLoginHash {
                guard try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE id = ? AND login_hash = ?",
                                        arguments: [account.rawValue, Data(ifLoginHash)]) == true else {
                    throw ServerError.forbidden("wrong user name or password")
                }
            }
            try Self.insertDevice(db, device, account: account, now: now)
        }
    }

    public func device(tokenHash: [UInt8], now: Date) async throws -> (Account, DeviceRecord)? {
        let found: (Account, DeviceRecord)? = try await pool.read { db in
            guard let d = try Row.fetchOne(db, sql: "SELECT * FROM devices WHERE token_hash = ? AND revoked_at IS NULL",
                                           arguments: [Data(tokenHash)]) else { return nil }
            let device = try Self.device(from: d)
            guard let account = try Self.account(db, id: device.account) else { return nil }
            return (account, device)
        }
        // Last-seen is advisory: refresh it at most once a minute per device.
        if let (_, device) = found, device.lastSeenAt.map({ now.timeIntervalSince($0) > 60 }) ?? true {
            try? await pool.write { db in
                try db.execute(sql: "UPDATE devices SET last_seen_at = ? WHERE id = ?",
                               arguments: [now.timeIntervalSince1970, Data(device.id.bytes)])
            }
        }
        return found
    }

    public func devices(account: AccountID) async throws -> [DeviceRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM devices WHERE account_id = ? AND revoked_at IS NULL ORDER BY created_at",
                             arguments: [account.rawValue]).map(Self.device(from:))
        }
    }

    public func revokeDevice(account: AccountID, id: DeviceID) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: "UPDATE devices SET revoked_at = ? WHERE id = ? AND account_id = ? AND revoked_at IS NULL",
                           arguments: [Date().timeIntervalSince1970, Data(id.bytes), account.rawValue])
            return db.changesCount > 0
        }
    }

    public func bindSigningKey(account: AccountID, device: DeviceID, key: [UInt8]) async throws -> [UInt8]? {
        try await pool.write { db in
            try db.execute(sql: "UPDATE devices SET signing_key = ? WHERE id = ? AND account_id = ? AND signing_key IS NULL",
                           arguments: [Data(key), Data(device.bytes), account.rawValue])
            return try Data.fetchOne(db, sql: "SELECT signing_key FROM devices WHERE id = ? AND account_id = ?",
                                     arguments: [Data(device.bytes), account.rawValue]).map { Array($0) }
        }
    }

    // MARK: Chunks

    public func missingChunks(account: AccountID, ids: [ChunkID]) async throws -> [ChunkID] {
        try await pool.read { db in
            let stmt = try db.cachedStatement(sql: "SELECT 1 FROM chunks WHERE account_id = ? AND id = ?")
            return try ids.filter { id in
                try Bool.fetchOne(stmt, arguments: [account.rawValue, Data(id.bytes)]) != true
            }
        }
    }

    public func recordChunks(account: AccountID, _ chunks: [(id: ChunkID, size: Int)]) async throws {
        try await pool.write { db in
            let stmt = try db.cachedStatement(sql: "INSERT OR IGNORE INTO chunks (account_id, id, size) VALUES (?, ?, ?)")
            var added: Int64 = 0
            for c in chunks {
                try stmt.execute(arguments: [account.rawValue, Data(c.id.bytes), c.size])
                if db.changesCount > 0 { added += Int64(c.size) }
            }
            if added > 0 {
                try db.execute(sql: "UPDATE accounts SET stored_bytes = stored_bytes + ? WHERE id = ?",
                               arguments: [added, account.rawValue])
            }
        }
    }

    // MARK: Journal

    public func append(account: AccountID, vault: VaultID, entry: JournalEntry, bytes: [UInt8],
                       references: [ChunkID], device: DeviceID, now: Date) async throws -> StoredEntry {
        // References are checked in a read, before the write transaction: one
        // SQLite writer serves every account, and an append naming many chunks
        // must not hold it. Chunks are never deleted, so what exists now exists
        // at the commit (garbage collection must keep that true).
        if !references.isEmpty {
            let missing = try await pool.read { db in
                let check = try db.cachedStatement(sql: "SELECT 1 FROM chunks WHERE account_id = ? AND id = ?")
                return try references.filter { try Bool.fetchOne(check, arguments: [account.rawValue, Data($0.bytes)]) != true }
            }
            guard missing.isEmpty else { throw ServerError.missingChunks(missing) }
        }
        return try await pool.write { db in
            let (latest, head) = try Self.head(db, account: account, vault: vault)
            let base = try AppendRule.baseLookup(entry, latest: latest).flatMap { try Self.head(db, account: account, vault: vault, at: $0) }
            let (seq, newHead) = try AppendRule.position(of: entry, bytes: bytes, latest: latest, head: head, headAtBase: base)
            try db.execute(sql: "INSERT INTO entries (account_id, seq, head, body, device_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [account.rawValue, Int64(seq.rawValue), Data(newHead.bytes), Data(bytes),
                                       Data(device.bytes), now.timeIntervalSince1970])
            // Journal bytes count against the quota like chunks.
            try db.execute(sql: "UPDATE accounts SET stored_bytes = stored_bytes + ? WHERE id = ?", arguments: [bytes.count, account.rawValue])
            let ref = try db.cachedStatement(sql: "INSERT OR IGNORE INTO entry_refs (account_id, chunk_id, seq) VALUES (?, ?, ?)")
            for id in references { try ref.execute(arguments: [account.rawValue, Data(id.bytes), Int64(seq.rawValue)]) }
            return StoredEntry(seq: seq, head: newHead, bytes: bytes)
        }
    }

    public func entries(account: AccountID, after: JournalSeq, limit: Int, maxBytes: Int) async throws -> (items: [StoredEntry], latest: JournalSeq) {
        try await pool.read { db in
            let rows = try Row.fetchCursor(db, sql: "SELECT seq, head, body FROM entries WHERE account_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                                           arguments: [account.rawValue, Int64(clamping: after.rawValue), limit])
            var items: [StoredEntry] = []
            var total = 0
            while total < maxBytes, let row = try rows.next() {
                let body = Array(row["body"] as Data)
                total += body.count
                items.append(StoredEntry(seq: JournalSeq(UInt64(row["seq"] as Int64)), head: try ChainHead(bytes: Array(row["head"] as Data)),
                                         bytes: body))
            }
            let latest = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM entries WHERE account_id = ?", arguments: [account.rawValue]) ?? 0
            return (items, JournalSeq(UInt64(latest)))
        }
    }

    public func head(account: AccountID, vault: VaultID, at seq: JournalSeq) async throws -> ChainHead? {
        guard seq.rawValue <= UInt64(Int64.max) else { return nil }
        return try await pool.read { db in try Self.head(db, account: account, vault: vault, at: seq) }
    }

    // MARK: Checkpoints

    public func putCheckpoint(account: AccountID, vault: VaultID, seq: JournalSeq, head: ChainHead, bytes: [UInt8]) async throws {
        try await pool.write { db in
            let (latest, _) = try Self.head(db, account: account, vault: vault)
            guard seq <= latest, try Self.head(db, account: account, vault: vault, at: seq) == head else {
                throw ServerError.conflict(code: "bad_checkpoint", message: "the checkpoint's position (seq \(seq)) is not in this vault's journal")
            }
            let replaced = try Int.fetchOne(db, sql: "SELECT length(body) FROM checkpoints WHERE account_id = ? AND seq = ?",
                                            arguments: [account.rawValue, Int64(seq.rawValue)]) ?? 0
            try db.execute(sql: "INSERT OR REPLACE INTO checkpoints (account_id, seq, body) VALUES (?, ?, ?)",
                           arguments: [account.rawValue, Int64(seq.rawValue), Data(bytes)])
            try db.execute(sql: "UPDATE accounts SET stored_bytes = stored_bytes + ? WHERE id = ?",
                           arguments: [bytes.count - replaced, account.rawValue])
        }
    }

    public func latestCheckpoint(account: AccountID) async throws -> [UInt8]? {
        try await pool.read { db in
            try Data.fetchOne(db, sql: "SELECT body FROM checkpoints WHERE account_id = ? ORDER BY seq DESC LIMIT 1",
                              arguments: [account.rawValue]).map { Array($0) }
        }
    }

    // MARK: Helpers

    private static func head(_ db: Database, account: AccountID, vault: VaultID) throws -> (JournalSeq, ChainHead) {
        guard let row = try Row.fetchOne(db, sql: "SELECT seq, head FROM entries WHERE account_id = ? ORDER BY seq DESC LIMIT 1",
                                         arguments: [account.rawValue]) else {
            return (.start, ChainHead.genesis(of: vault))
        }
        return (JournalSeq(UInt64(row["seq"] as Int64)), try ChainHead(bytes: Array(row["head"] as Data)))
    }

    private static func head(_ db: Database, account: AccountID, vault: VaultID, at seq: JournalSeq) throws -> ChainHead? {
        if seq == .start { return ChainHead.genesis(of: vault) }
        return try Data.fetchOne(db, sql: "SELECT head FROM entries WHERE account_id = ? AND seq = ?",
                                 arguments: [account.rawValue, Int64(seq.rawValue)]).map { try ChainHead(bytes: Array($0)) }
    }

    private static func insertDevice(_ db: Database, _ d: NewDevice, account: AccountID, now: Date) throws {
        try db.execute(sql: "INSERT INTO devices (id, account_id, name, token_hash, created_at, signing_key, box_key, box_key_signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       arguments: [Data(d.id.bytes), account.rawValue, d.name, Data(d.tokenHash), now.timeIntervalSince1970,
                                   d.signingKey.map { Data($0) }, d.boxKey.map { Data($0) }, d.boxKeySignature.map { Data($0) }])
    }

    private static func account(_ db: Database, id: AccountID) throws -> Account? {
        try Row.fetchOne(db, sql: "SELECT * FROM accounts WHERE id = ?", arguments: [id.rawValue]).map(account(from:))
    }

    private static func account(from r: Row) throws -> Account {
        Account(id: AccountID(r["id"]), name: r["name"], vaultID: try VaultID(bytes: Array(r["vault_id"] as Data)),
                kdf: Array(r["kdf"] as Data), keyring: Array(r["keyring"] as Data),
                loginSalt: Array(r["login_salt"] as Data), loginHash: Array(r["login_hash"] as Data),
                storedBytes: r["stored_bytes"], quota: r["quota"],
                recoveryVerifier: (r["recovery_verifier"] as Data?).map { Array($0) })
    }

    private static func device(from r: Row) throws -> DeviceRecord {
        DeviceRecord(id: try DeviceID(bytes: Array(r["id"] as Data)), account: AccountID(r["account_id"]), name: r["name"],
                     createdAt: Date(timeIntervalSince1970: r["created_at"]),
                     lastSeenAt: (r["last_seen_at"] as Double?).map { Date(timeIntervalSince1970: $0) },
                     signingKey: (r["signing_key"] as Data?).map { Array($0) }, boxKey: (r["box_key"] as Data?).map { Array($0) },
                     boxKeySignature: (r["box_key_signature"] as Data?).map { Array($0) })
    }
}

// MARK: - Export (lockfs-server migrate)

extension SQLiteMetadataStore: MetadataExporting {
    /// Every row from one read transaction (a consistent snapshot even if
    /// another process writes meanwhile).
    public func exportSnapshot() async throws -> MetadataSnapshot {
        try await pool.read { db in
            func date(_ value: Double) -> Date { MetadataSnapshot.date(microseconds: Int64((value * 1_000_000).rounded())) }
            func bytes(_ row: Row, _ column: String) -> [UInt8] { Array(row[column] as Data) }
            var s = MetadataSnapshot()
            s.settings = try Row.fetchAll(db, sql: "SELECT key, value FROM settings ORDER BY key").map {
                MetadataSnapshot.Setting(key: $0["key"], value: bytes($0, "value"))
            }
            s.accounts = try Row.fetchAll(db, sql: "SELECT * FROM accounts ORDER BY id").map {
                MetadataSnapshot.AccountRow(account: try Self.account(from: $0), createdAt: date($0["created_at"]))
            }
            s.invites = try Row.fetchAll(db, sql: "SELECT user, code_hash, expires_at FROM invites ORDER BY user").map {
                MetadataSnapshot.InviteRow(user: $0["user"], codeHash: bytes($0, "code_hash"), expiresAt: date($0["expires_at"]))
            }
            s.devices = try Row.fetchAll(db, sql: "SELECT * FROM devices ORDER BY id").map {
                MetadataSnapshot.DeviceRow(id: try DeviceID(bytes: bytes($0, "id")), account: AccountID($0["account_id"]), name: $0["name"],
                                           tokenHash: bytes($0, "token_hash"), createdAt: date($0["created_at"]),
                                           lastSeenAt: ($0["last_seen_at"] as Double?).map(date), revokedAt: ($0["revoked_at"] as Double?).map(date),
                                           signingKey: ($0["signing_key"] as Data?).map { Array($0) }, boxKey: ($0["box_key"] as Data?).map { Array($0) },
                                           boxKeySignature: ($0["box_key_signature"] as Data?).map { Array($0) })
            }
            s.chunks = try Row.fetchAll(db, sql: "SELECT account_id, id, size FROM chunks ORDER BY account_id, id").map {
                MetadataSnapshot.ChunkRow(account: AccountID($0["account_id"]), id: try ChunkID(bytes: bytes($0, "id")), size: $0["size"])
            }
            s.entries = try Row.fetchAll(db, sql: "SELECT * FROM entries ORDER BY account_id, seq").map {
                MetadataSnapshot.EntryRow(account: AccountID($0["account_id"]), seq: JournalSeq(UInt64($0["seq"] as Int64)),
                                          head: try ChainHead(bytes: bytes($0, "head")), body: bytes($0, "body"),
                                          device: try DeviceID(bytes: bytes($0, "device_id")), createdAt: date($0["created_at"]))
            }
            s.entryRefs = try Row.fetchAll(db, sql: "SELECT account_id, chunk_id, seq FROM entry_refs ORDER BY account_id, chunk_id, seq").map {
                MetadataSnapshot.EntryRefRow(account: AccountID($0["account_id"]), chunk: try ChunkID(bytes: bytes($0, "chunk_id")),
                                             seq: JournalSeq(UInt64($0["seq"] as Int64)))
            }
            s.checkpoints = try Row.fetchAll(db, sql: "SELECT account_id, seq, body FROM checkpoints ORDER BY account_id, seq").map {
                MetadataSnapshot.CheckpointRow(account: AccountID($0["account_id"]), seq: JournalSeq(UInt64($0["seq"] as Int64)), body: bytes($0, "body"))
            }
            return s
        }
    }
}
