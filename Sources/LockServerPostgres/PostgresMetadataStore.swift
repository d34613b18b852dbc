import Foundation
import LockCrypto
import LockServer
import LockWire
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// The scale-out metadata store: one PostgreSQL database that any number of
/// lockfs-server processes share (docs/design.md, "The PostgreSQL store").
///
/// - A bounded pool (`PostgresClient`) serves the requests; a request that
///   cannot get a connection within `acquireTimeout` (PostgreSQL down or
///   restarting, the pool exhausted) fails with the retryable
///   `ServerError.unavailable`, and so does one whose connection breaks.
///   The pool reconnects by itself: no server restart is needed.
/// - Appends serialise per account with a row lock (`SELECT … FOR UPDATE` on
///   the account) inside one transaction, so concurrent appends through
///   any number of instances get consecutive numbers and one chain.
/// - Each append sends `NOTIFY lockfs_journal, 'ACCOUNT'` in its
///   transaction; `runJournalEvents` keeps one LISTEN connection per process
///   and feeds the in-process `JournalNotifier`.
/// - Schema migrations run at open, numbered in `schema_migrations`, under
///   an advisory lock so that instances starting together apply each once.
public final class PostgresMetadataStore: MetadataStore, JournalEventSource {
    /// The NOTIFY channel of appends; the payload is the account id.
    public static let journalChannel = "lockfs_journal"
    /// The LISTEN connection's application_name (pg_stat_activity).
    public static let listenApplicationName = "lockfs-server listen"
    /// The advisory lock key held while migrating ("lockfs" in ASCII).
    static let migrationLockKey: Int64 = 0x6c6f_636b_6673

    public let settings: PostgresSettings
    private let client: PostgresClient
    private let runTask: Task<Void, Never>
    let logger: Logger
    private let listenConnectionIDs = Atomic<Int>(1_000_000)

    /// Connects, migrates the schema to the current version, and starts the pool.
    ///
    /// The first connection is made directly, so a wrong password, a missing
    /// database or an unreachable host gives its own message here.
    /// - Throws: `PostgresSettingsError` with a readable message.
    public static func open(_ settings: PostgresSettings, logger: Logger = defaultLogger) async throws -> PostgresMetadataStore {
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration: settings.connectionConfiguration(), id: 0, logger: logger)
        } catch {
            throw PostgresSettingsError("cannot connect to PostgreSQL at \(settings): \(Self.describe(error))")
        }
        do {
            try await Migrations.run(on: connection, logger: logger)
            try? await connection.close()
        } catch {
            try? await connection.close()
            if let e = error as? PostgresSettingsError { throw e }
            throw PostgresSettingsError("cannot migrate the lockfs schema in \(settings): \(Self.describe(error))")
        }
        return try PostgresMetadataStore(settings: settings, logger: logger)
    }

    /// Warnings and errors only.
    public static var defaultLogger: Logger {
        var logger = Logger(label: "lockfs.postgres")
        logger.logLevel = .warning
        return logger
    }

    private init(settings: PostgresSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        let client = PostgresClient(configuration: try settings.clientConfiguration(), backgroundLogger: logger)
        self.client = client
        runTask = Task { await client.run() }
    }

    /// Closes the pool; later calls fail with `ServerError.unavailable`.
    public func close() async {
        runTask.cancel()
        await runTask.value
    }

    deinit { runTask.cancel() }

    // MARK: Deployment

    public func serverSecret() async throws -> [UInt8] {
        let candidate = ByteBuffer(bytes: Sodium.randomBytes(32))
        return try await withConnection { c in
            // Concurrent first calls (from any instance) agree: the first insert wins.
            try await c.query("INSERT INTO settings (key, value) VALUES ('server_secret', \(candidate)) ON CONFLICT (key) DO NOTHING",
                              logger: self.logger)
            let rows = try await c.query("SELECT value FROM settings WHERE key = 'server_secret'", logger: self.logger).collect()
            guard let value = try rows.first?.decode(ByteBuffer.self) else { throw ServerError.internalError("server secret missing") }
            return Array(buffer: value)
        }
    }

    public func totalStoredBytes() async throws -> Int64 {
        try await withConnection { c in
            try await c.query("SELECT COALESCE(SUM(stored_bytes), 0)::bigint FROM accounts", logger: self.logger)
                .collect().first?.decode(Int64.self) ?? 0
        }
    }

    // MARK: Accounts

    public func createInvite(_ invite: NewInvite) async throws {
        try await transaction { c in
            if try await Self.exists(c, "SELECT 1 FROM accounts WHERE name = \(invite.user)", self.logger) {
                throw ServerError.conflict(code: "user_exists", message: "an account named \(invite.user) exists already")
            }
            try await c.query("""
                INSERT INTO invites (name, code_hash, expires_at) VALUES (\(invite.user), \(ByteBuffer(bytes: invite.codeHash)), \(invite.expiresAt))
                ON CONFLICT (name) DO UPDATE SET code_hash = EXCLUDED.code_hash, expires_at = EXCLUDED.expires_at
                """, logger: self.logger)
        }
    }

    public func register(_ a: NewAccount, inviteHash: [UInt8]?, device: NewDevice, now: Date) async throws -> Account {
        try await transaction { c in
            // The invite is checked before the name, so that without a valid
            // invite for NAME nobody learns whether NAME exists.
            if let inviteHash {
                let rows = try await c.query("SELECT code_hash, expires_at FROM invites WHERE name = \(a.name) FOR UPDATE",
                                             logger: self.logger).collect()
                guard let (hash, expires) = try rows.first?.decode((ByteBuffer, Date).self),
                      Sodium.constantTimeEqual(Array(buffer: hash), inviteHash), expires > now else {
                    throw ServerError.forbidden("the invite code is wrong, used or expired (ask the admin for a new one: lockfs-server user add NAME)")
                }
                try await c.query("DELETE FROM invites WHERE name = \(a.name)", logger: self.logger)
            }
            if try await Self.exists(c, "SELECT 1 FROM accounts WHERE name = \(a.name)", self.logger) {
                throw ServerError.conflict(code: "user_exists", message: "an account with this name exists already")
            }
            // Blobs are stored per vault id: a vault id belongs to one account only.
            if try await Self.exists(c, "SELECT 1 FROM accounts WHERE vault_id = \(ByteBuffer(bytes: a.vaultID.bytes))", self.logger) {
                throw ServerError.conflict(code: "vault_exists", message: "this vault id is taken; a new vault needs a new random id")
            }
            let rows = try await c.query("""
                INSERT INTO accounts (name, vault_id, kdf, keyring, login_salt, login_hash, recovery_verifier, created_at)
                VALUES (\(a.name), \(ByteBuffer(bytes: a.vaultID.bytes)), \(ByteBuffer(bytes: a.kdf)), \(ByteBuffer(bytes: a.keyring)),
                        \(ByteBuffer(bytes: a.loginSalt)), \(ByteBuffer(bytes: a.loginHash)),
                        \(a.recoveryVerifier.map { ByteBuffer(bytes: $0) }), \(now))
                RETURNING \(unescaped: Self.accountColumns)
                """, logger: self.logger).collect()
            guard let row = rows.first else { throw ServerError.internalError("insert returned no account") }
            let account = try Self.account(from: row)
            try await Self.insertDevice(c, device, account: account.id, now: now, self.logger)
            return account
        }
    }

    public func account(named name: String) async throws -> Account? {
        try await withConnection { c in
            try await c.query("SELECT \(unescaped: Self.accountColumns) FROM accounts WHERE name = \(name)", logger: self.logger)
                .collect().first.map(Self.account(from:))
        }
    }

    public func accounts() async throws -> [AccountSummary] {
        try await withConnection { c in
            try await c.query("""
                SELECT name, stored_bytes,
                       (SELECT COUNT(*) FROM devices d WHERE d.account_id = a.id AND d.revoked_at IS NULL),
                       (SELECT COUNT(*) FROM entries e WHERE e.account_id = a.id)
                FROM accounts a ORDER BY name
                """, logger: self.logger).collect().map { row in
                let (name, stored, devices, entries) = try row.decode((String, Int64, Int64, Int64).self)
                return AccountSummary(name: name, devices: Int(devices), storedBytes: stored, entries: entries)
            }
        }
    }

    public func removeAccount(named name: String) async throws -> VaultID? {
        try await transaction { c in
            let rows = try await c.query("DELETE FROM accounts WHERE name = \(name) RETURNING vault_id", logger: self.logger).collect()
            try await c.query("DELETE FROM invites WHERE name = \(name)", logger: self.logger)
            return try rows.first.map { try VaultID(bytes: Array(buffer: try $0.decode(ByteBuffer.self))) }
        }
    }

    public func replaceKeyring(account: AccountID, _ k: KeyringChange, now: Date) async throws {
        try await transaction { c in
            let expected = k.expectedLoginHash.map { ByteBuffer(bytes: $0) }
            let updated = try await c.query("""
                UPDATE accounts SET keyring = \(ByteBuffer(bytes: k.keyring)), kdf = \(ByteBuffer(bytes: k.kdf)),
                       login_salt = \(ByteBuffer(bytes: k.loginSalt)), login_hash = \(ByteBuffer(bytes: k.loginHash)),
                       recovery_verifier = COALESCE(\(k.recoveryVerifier.map { ByteBuffer(bytes: $0) }), recovery_verifier)
                WHERE id = \(account.rawValue) AND (\(expected)::bytea IS NULL OR login_hash = \(expected))
                RETURNING id
                """, logger: self.logger).collect()
            guard updated.count == 1 else {
                throw ServerError.conflict(code: "keyring_changed", message: "the keyring changed meanwhile (another password change or recovery); try again")
            }
            if let keep = k.revokeAllBut {
                try await c.query("""
                    UPDATE devices SET revoked_at = \(now)
                    WHERE account_id = \(account.rawValue) AND id != \(ByteBuffer(bytes: keep.bytes)) AND revoked_at IS NULL
                    """, logger: self.logger)
            }
        }
    }

    // MARK: Devices

    public func addDevice(_ device: NewDevice, account: AccountID, now: Date, ifLoginHash: [UInt8]?) async throws {
        guard let ifLoginHash else {
            try await withConnection { c in try await Self.insertDevice(c, device, account: account, now: now, self.logger) }
            return
        }
        try await transaction { c in
            // FOR SHARE: a keyring change waits for this enrolment (and its
            // "revoke every other device" then covers it), or came first.
            let rows = try await c.query("""
                SELECT 1 FROM accounts WHERE id = \(account.rawValue) AND login_hash = \(ByteBuffer(bytes: ifLoginHash)) FOR SHARE
                """, logger: self.logger).collect()
            guard !rows.isEmpty else { throw ServerError.forbidden("wrong user name or password") }
            try await Self.insertDevice(c, device, account: account, now: now, self.logger)
        }
    }

    public func device(tokenHash: [UInt8], now: Date) async throws -> (Account, DeviceRecord)? {
        let found: (Account, DeviceRecord)? = try await withConnection { c in
            let rows = try await c.query("""
                SELECT \(unescaped: Self.deviceColumns("d")), \(unescaped: Self.accountColumns("a"))
                FROM devices d JOIN accounts a ON a.id = d.account_id
                WHERE d.token_hash = \(ByteBuffer(bytes: tokenHash)) AND d.revoked_at IS NULL
                """, logger: self.logger).collect()
            guard let row = rows.first else { return nil }
            return (try Self.account(from: row, offset: 8), try Self.device(from: row))
        }
        // Last-seen is advisory: refresh it at most once a minute per device.
        if let (_, device) = found, device.lastSeenAt.map({ now.timeIntervalSince($0) > 60 }) ?? true {
            try? await withConnection { c in
                try await c.query("UPDATE devices SET last_seen_at = \(now) WHERE id = \(ByteBuffer(bytes: device.id.bytes))",
                                  logger: self.logger)
            }
        }
        return found
    }

    public func devices(account: AccountID) async throws -> [DeviceRecord] {
        try await withConnection { c in
            try await c.query("""
                SELECT \(unescaped: Self.deviceColumns("devices")) FROM devices
                WHERE account_id = \(account.rawValue) AND revoked_at IS NULL ORDER BY created_at, id
                """, logger: self.logger).collect().map(Self.device(from:))
        }
    }

    public func revokeDevice(account: AccountID, id: DeviceID) async throws -> Bool {
        try await withConnection { c in
            let rows = try await c.query("""
                UPDATE devices SET revoked_at = \(Date())
                WHERE id = \(ByteBuffer(bytes: id.bytes)) AND account_id = \(account.rawValue) AND revoked_at IS NULL
                RETURNING id
                """, logger: self.logger).collect()
            return !rows.isEmpty
        }
    }

    public func bindSigningKey(account: AccountID, device: DeviceID, key: [UInt8]) async throws -> [UInt8]? {
        try await withConnection { c in
            try await c.query("""
                UPDATE devices SET signing_key = \(ByteBuffer(bytes: key))
                WHERE id = \(ByteBuffer(bytes: device.bytes)) AND account_id = \(account.rawValue) AND signing_key IS NULL
                """, logger: self.logger)
            let rows = try await c.query("""
                SELECT signing_key FROM devices WHERE id = \(ByteBuffer(bytes: device.bytes)) AND account_id = \(account.rawValue)
                """, logger: self.logger).collect()
            return try rows.first?.decode(ByteBuffer?.self).map { Array(buffer: $0) }
        }
    }

    // MARK: Chunks

    public func missingChunks(account: AccountID, ids: [ChunkID]) async throws -> [ChunkID] {
        if ids.isEmpty { return [] }
        return try await withConnection { c in try await Self.missing(c, account: account, ids: ids, self.logger) }
    }

    public func recordChunks(account: AccountID, _ chunks: [(id: ChunkID, size: Int)]) async throws {
        if chunks.isEmpty { return }
        let ids = chunks.map { ByteBuffer(bytes: $0.id.bytes) }, sizes = chunks.map { Int64($0.size) }
        try await withConnection { c in
            // One statement: the chunks not yet recorded are inserted (a
            // repeat within the batch too is skipped), and only their sizes count.
            try await c.query("""
                WITH added AS (
                    INSERT INTO chunks (account_id, id, size)
                    SELECT \(account.rawValue), u.id, u.size FROM unnest(\(ids)::bytea[], \(sizes)::bigint[]) AS u(id, size)
                    ON CONFLICT (account_id, id) DO NOTHING
                    RETURNING size
                )
                UPDATE accounts SET stored_bytes = stored_bytes + (SELECT COALESCE(SUM(size), 0)::bigint FROM added)
                WHERE id = \(account.rawValue)
                """, logger: self.logger)
        }
    }

    // MARK: Journal

    public func append(account: AccountID, vault: VaultID, entry: JournalEntry, bytes: [UInt8],
                       references: [ChunkID], device: DeviceID, now: Date) async throws -> StoredEntry {
        try await transaction { c in
            // The account's row lock serialises appends to this vault across
            // every connection and instance; it is held until COMMIT.
            let locked = try await c.query("SELECT 1 FROM accounts WHERE id = \(account.rawValue) FOR UPDATE", logger: self.logger).collect()
            guard !locked.isEmpty else { throw ServerError.notFound("no such account") }
            // Read committed: this statement sees every append committed before the lock was granted.
            let (latest, head) = try await Self.head(c, account: account, vault: vault, self.logger)
            var base: ChainHead?
            if let at = AppendRule.baseLookup(entry, latest: latest) { base = try await Self.head(c, account: account, vault: vault, at: at, self.logger) }
            let (seq, newHead) = try AppendRule.position(of: entry, bytes: bytes, latest: latest, head: head, headAtBase: base)
            if !references.isEmpty {
                let missing = try await Self.missing(c, account: account, ids: references, self.logger)
                guard missing.isEmpty else { throw ServerError.missingChunks(missing) }
            }
            try await c.query("""
                INSERT INTO entries (account_id, seq, head, body, device_id, created_at)
                VALUES (\(account.rawValue), \(Int64(seq.rawValue)), \(ByteBuffer(bytes: newHead.bytes)), \(ByteBuffer(bytes: bytes)),
                        \(ByteBuffer(bytes: device.bytes)), \(now))
                """, logger: self.logger)
            // Journal bytes count against the quota like chunks.
            try await c.query("UPDATE accounts SET stored_bytes = stored_bytes + \(Int64(bytes.count)) WHERE id = \(account.rawValue)",
                              logger: self.logger)
            if !references.isEmpty {
                let refs = references.map { ByteBuffer(bytes: $0.bytes) }
                try await c.query("""
                    INSERT INTO entry_refs (account_id, chunk_id, seq)
                    SELECT \(account.rawValue), r, \(Int64(seq.rawValue)) FROM unnest(\(refs)::bytea[]) AS r
                    ON CONFLICT DO NOTHING
                    """, logger: self.logger)
            }
            // Delivered to every listening instance when (and only if) this commits.
            try await c.query("SELECT pg_notify(\(Self.journalChannel), \(String(account.rawValue)))", logger: self.logger)
            return StoredEntry(seq: seq, head: newHead, bytes: bytes)
        }
    }

    public func entries(account: AccountID, after: JournalSeq, limit: Int, maxBytes: Int) async throws -> (items: [StoredEntry], latest: JournalSeq) {
        try await withConnection { c in
            // One statement, one snapshot: the page and the latest number agree. An
            // entry is in the page while the ones before it hold less than maxBytes.
            let rows = try await c.query("""
                SELECT e.seq, e.head, e.body, m.latest
                FROM (SELECT COALESCE(MAX(seq), 0)::bigint AS latest FROM entries WHERE account_id = \(account.rawValue)) m
                LEFT JOIN LATERAL (
                    SELECT seq, head, body FROM (
                        SELECT seq, head, body, SUM(octet_length(body)) OVER (ORDER BY seq) - octet_length(body) AS before
                        FROM entries
                        WHERE account_id = \(account.rawValue) AND seq > \(Int64(clamping: after.rawValue))
                        ORDER BY seq LIMIT \(Int64(limit))
                    ) w WHERE before < \(Int64(clamping: maxBytes))
                ) e ON true
                ORDER BY e.seq
                """, logger: self.logger).collect()
            var items: [StoredEntry] = []
            var latest: Int64 = 0
            for row in rows {
                let (seq, head, body, l) = try row.decode((Int64?, ByteBuffer?, ByteBuffer?, Int64).self)
                latest = l
                if let seq, let head, let body {
                    items.append(StoredEntry(seq: JournalSeq(UInt64(seq)), head: try ChainHead(bytes: Array(buffer: head)),
                                             bytes: Array(buffer: body)))
                }
            }
            return (items, JournalSeq(UInt64(latest)))
        }
    }

    public func head(account: AccountID, vault: VaultID, at seq: JournalSeq) async throws -> ChainHead? {
        try await withConnection { c in try await Self.head(c, account: account, vault: vault, at: seq, self.logger) }
    }

    // MARK: Checkpoints

    public func putCheckpoint(account: AccountID, vault: VaultID, seq: JournalSeq, head: ChainHead, bytes: [UInt8]) async throws {
        try await transaction { c in
            let (latest, _) = try await Self.head(c, account: account, vault: vault, self.logger)
            guard seq <= latest, try await Self.head(c, account: account, vault: vault, at: seq, self.logger) == head else {
                throw ServerError.conflict(code: "bad_checkpoint", message: "the checkpoint's position (seq \(seq)) is not in this vault's journal")
            }
            let replaced = try await c.query("""
                SELECT octet_length(body)::bigint FROM checkpoints WHERE account_id = \(account.rawValue) AND seq = \(Int64(seq.rawValue)) FOR UPDATE
                """, logger: self.logger).collect().first.map { try $0.decode(Int64.self) } ?? 0
            try await c.query("""
                INSERT INTO checkpoints (account_id, seq, body) VALUES (\(account.rawValue), \(Int64(seq.rawValue)), \(ByteBuffer(bytes: bytes)))
                ON CONFLICT (account_id, seq) DO UPDATE SET body = EXCLUDED.body
                """, logger: self.logger)
            // Checkpoint bytes count against the quota like chunks.
            try await c.query("UPDATE accounts SET stored_bytes = stored_bytes + \(Int64(bytes.count) - replaced) WHERE id = \(account.rawValue)",
                              logger: self.logger)
        }
    }

    public func latestCheckpoint(account: AccountID) async throws -> [UInt8]? {
        try await withConnection { c in
            try await c.query("SELECT body FROM checkpoints WHERE account_id = \(account.rawValue) ORDER BY seq DESC LIMIT 1",
                              logger: self.logger).collect().first.map { Array(buffer: try $0.decode(ByteBuffer.self)) }
        }
    }

    // MARK: Cross-instance wake-ups

    /// One dedicated LISTEN connection for this process; reconnects with a
    /// short backoff (at most 1 s) and wakes every waiter after each
    /// (re)connect, since appends in between were not heard.
    public func runJournalEvents(into notifier: JournalNotifier) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                let connection = try await PostgresConnection.connect(
                    configuration: settings.connectionConfiguration(name: Self.listenApplicationName),
                    id: listenConnectionIDs.add(1, ordering: .relaxed).newValue, logger: logger)
                do {
                    try await connection.listen(on: Self.journalChannel) { notifications in
                        // Listening now: anything appended while we were not is re-queried.
                        notifier.notifyAll()
                        failures = 0
                        try await Self.consume(notifications, on: connection, into: notifier, logger: self.logger)
                    }
                } catch {
                    if !Task.isCancelled {
                        logger.warning("PostgreSQL LISTEN connection lost; reconnecting", metadata: ["error": "\(Self.describe(error))"])
                    }
                }
                try? await connection.close()
            } catch {
                if !Task.isCancelled && failures == 0 {
                    logger.warning("PostgreSQL LISTEN connection failed; retrying", metadata: ["error": "\(Self.describe(error))"])
                }
            }
            if Task.isCancelled { break }
            failures += 1
            let backoff = min(1000, 50 << min(failures, 5))
            try? await Task.sleep(for: .milliseconds(backoff))
        }
    }

    /// Feeds notifications into `notifier` until the connection ends; a
    /// heartbeat query every 5 s finds a connection that died silently.
    private static func consume(_ notifications: PostgresNotificationSequence, on connection: PostgresConnection,
                                into notifier: JournalNotifier, logger: Logger) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await n in notifications {
                    if let id = Int64(n.payload) { notifier.notify(AccountID(id)) } else { notifier.notifyAll() }
                }
                throw PostgresSettingsError("the LISTEN connection ended")
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: .seconds(5))
                    try await connection.query("SELECT 1", logger: logger)
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    // MARK: Connections, transactions, errors

    /// Runs `body` on a pooled connection. Waiting for the connection is
    /// bounded by `acquireTimeout`; once `body` has started it is never
    /// abandoned (its outcome is reported, not guessed).
    func withConnection<R: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        try await Self.withDeadline(settings.acquireTimeout + settings.operationTimeout) {
            try await self.leasedConnection(body)
        }
    }

    /// Runs `operation` in a task of its own and returns its result, or throws
    /// `unavailable` once `limit` has passed without one — without waiting for
    /// it (a task group would wait for a child stuck in a query that never
    /// completes; this one is cancelled and left behind).
    static func withDeadline<R: Sendable>(_ limit: Duration, _ operation: @escaping @Sendable () async throws -> R) async throws -> R {
        let once = LeaseRace()
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<R, any Error>) in
            let work = Task {
                do {
                    let r = try await operation()
                    if once.claim(.started) { continuation.resume(returning: r) }
                } catch {
                    if once.claim(.started) { continuation.resume(throwing: error) }
                }
            }
            Task {
                try? await Task.sleep(for: limit)
                if once.claim(.timedOut) {
                    work.cancel()
                    continuation.resume(throwing: ServerError.unavailable("the metadata database did not answer within \(limit); try again"))
                }
            }
        }
    }

    private func leasedConnection<R: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        let race = LeaseRace()
        do {
            return try await withThrowingTaskGroup(of: R?.self) { group in
                group.addTask {
                    try await self.client.withConnection { connection in
                        guard race.claim(.started) else { throw CancellationError() }
                        return try await body(connection)
                    }
                }
                group.addTask {
                    try? await Task.sleep(for: self.settings.acquireTimeout)
                    return nil
                }
                while let result = try await group.next() {
                    if let result {
                        group.cancelAll()
                        return result
                    }
                    if race.claim(.timedOut) {
                        group.cancelAll()
                        throw ServerError.unavailable("the metadata database is unavailable (no connection within \(self.settings.acquireTimeout)); try again")
                    }
                }
                throw ServerError.internalError("connection lease ended without a result")
            }
        } catch let error as ServerError {
            throw error
        } catch {
            throw mapped(error)
        }
    }

    /// Runs `body` in a transaction (read committed): COMMIT if it returns,
    /// ROLLBACK if it throws; the error thrown is `body`'s own.
    func transaction<R: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        try await withConnection { c in
            try await c.query("BEGIN", logger: self.logger)
            do {
                let result = try await body(c)
                try await c.query("COMMIT", logger: self.logger)
                return result
            } catch {
                do {
                    try await c.query("ROLLBACK", logger: self.logger)
                } catch {
                    // A connection that cannot roll back must not go back to the pool in a transaction.
                    try? await c.close()
                }
                throw error
            }
        }
    }

    /// Connection trouble becomes the retryable 503; anything else is a 500
    /// whose detail stays in the log.
    private func mapped(_ error: any Error) -> ServerError {
        if let e = error as? PSQLError, e.code == .server, let state = e.serverInfo?[.sqlState], !Self.isTransient(sqlState: state) {
            logger.error("PostgreSQL error", metadata: ["sqlstate": "\(state)", "message": "\(e.serverInfo?[.message] ?? "")"])
            return .internalError("PostgreSQL error \(state)")
        }
        if error is PostgresDecodingError {
            logger.error("PostgreSQL decoding error", metadata: ["error": "\(String(reflecting: error))"])
            return .internalError("PostgreSQL decoding error")
        }
        // Closed or refused connections, shutdown and restart states, a tripped pool:
        // the request did not get an answer from the database, so the client may retry.
        logger.warning("PostgreSQL unavailable", metadata: ["error": "\(Self.describe(error))"])
        return .unavailable("the metadata database is unavailable; try again")
    }

    /// SQLSTATE classes where the database, not the request, failed:
    /// connection exceptions (08), insufficient resources (53), operator
    /// intervention such as shutdown or restart (57), system errors (58),
    /// and serialization failures and deadlocks (40001, 40P01).
    static func isTransient(sqlState: String) -> Bool {
        ["08", "53", "57", "58"].contains(String(sqlState.prefix(2))) || sqlState == "40001" || sqlState == "40P01"
    }

    /// A readable, secret-free description of a PostgresNIO error.
    static func describe(_ error: any Error) -> String {
        if let e = error as? PSQLError {
            if let message = e.serverInfo?[.message] {
                return "\(message) (SQLSTATE \(e.serverInfo?[.sqlState] ?? "?"))"
            }
            if e.code == .authMechanismRequiresPassword {
                return "PostgreSQL asks for a password; give it in PGPASSWORD or a passfile (--pg-passfile, PGPASSFILE or ~/.pgpass)"
            }
            if let underlying = e.underlying { return "\(e.code): \(underlying)" }
            return "\(e.code)"
        }
        return "\(error)"
    }

    // MARK: Row helpers

    static let accountColumns = accountColumns(nil)
    static func accountColumns(_ table: String?) -> String {
        let p = table.map { "\($0)." } ?? ""
        return ["id", "name", "vault_id", "kdf", "keyring", "login_salt", "login_hash", "stored_bytes", "quota", "recovery_verifier"]
            .map { p + $0 }.joined(separator: ", ")
    }

    static func deviceColumns(_ table: String) -> String {
        ["id", "account_id", "name", "created_at", "last_seen_at", "signing_key", "box_key", "box_key_signature"].map { "\(table).\($0)" }.joined(separator: ", ")
    }

    static func account(from row: PostgresRow) throws -> Account { try account(from: row, offset: 0) }

    /// An account from ten columns starting at `offset` (`accountColumns`' order).
    static func account(from row: PostgresRow, offset: Int) throws -> Account {
        let cells = Array(Array(row).dropFirst(offset).prefix(10))
        guard cells.count == 10 else { throw ServerError.internalError("account row has \(cells.count) columns") }
        return Account(
            id: AccountID(try cells[0].decode(Int64.self)), name: try cells[1].decode(String.self),
            vaultID: try VaultID(bytes: Array(buffer: try cells[2].decode(ByteBuffer.self))),
            kdf: Array(buffer: try cells[3].decode(ByteBuffer.self)), keyring: Array(buffer: try cells[4].decode(ByteBuffer.self)),
            loginSalt: Array(buffer: try cells[5].decode(ByteBuffer.self)), loginHash: Array(buffer: try cells[6].decode(ByteBuffer.self)),
            storedBytes: try cells[7].decode(Int64.self), quota: try cells[8].decode(Int64?.self),
            recoveryVerifier: try cells[9].decode(ByteBuffer?.self).map { Array(buffer: $0) })
    }

    /// A device from `deviceColumns`' eight columns at the start of `row`.
    static func device(from row: PostgresRow) throws -> DeviceRecord {
        let cells = Array(Array(row).prefix(8))
        return DeviceRecord(
            id: try DeviceID(bytes: Array(buffer: try cells[0].decode(ByteBuffer.self))),
            account: AccountID(try cells[1].decode(Int64.self)), name: try cells[2].decode(String.self),
            createdAt: try cells[3].decode(Date.self), lastSeenAt: try cells[4].decode(Date?.self),
            signingKey: try cells[5].decode(ByteBuffer?.self).map { Array(buffer: $0) },
            boxKey: try cells[6].decode(ByteBuffer?.self).map { Array(buffer: $0) },
            boxKeySignature: try cells[7].decode(ByteBuffer?.self).map { Array(buffer: $0) })
    }

    private static func exists(_ c: PostgresConnection, _ query: PostgresQuery, _ logger: Logger) async throws -> Bool {
        !(try await c.query(query, logger: logger).collect().isEmpty)
    }

    private static func insertDevice(_ c: PostgresConnection, _ d: NewDevice, account: AccountID, now: Date, _ logger: Logger) async throws {
        try await c.query("""
            INSERT INTO devices (id, account_id, name, token_hash, created_at, signing_key, box_key, box_key_signature)
            VALUES (\(ByteBuffer(bytes: d.id.bytes)), \(account.rawValue), \(d.name), \(ByteBuffer(bytes: d.tokenHash)), \(now),
                    \(d.signingKey.map { ByteBuffer(bytes: $0) }), \(d.boxKey.map { ByteBuffer(bytes: $0) }),
                    \(d.boxKeySignature.map { ByteBuffer(bytes: $0) }))
            """, logger: logger)
    }

    /// The ids among `ids` that the account lacks, in the order given.
    private static func missing(_ c: PostgresConnection, account: AccountID, ids: [ChunkID], _ logger: Logger) async throws -> [ChunkID] {
        let wanted = ids.map { ByteBuffer(bytes: $0.bytes) }
        let rows = try await c.query("SELECT id FROM chunks WHERE account_id = \(account.rawValue) AND id = ANY(\(wanted)::bytea[])",
                                     logger: logger).collect()
        let present = Set(try rows.map { Array(buffer: try $0.decode(ByteBuffer.self)) })
        return ids.filter { !present.contains($0.bytes) }
    }

    /// The latest sequence number and head (genesis when empty).
    private static func head(_ c: PostgresConnection, account: AccountID, vault: VaultID, _ logger: Logger) async throws -> (JournalSeq, ChainHead) {
        let rows = try await c.query("SELECT seq, head FROM entries WHERE account_id = \(account.rawValue) ORDER BY seq DESC LIMIT 1",
                                     logger: logger).collect()
        guard let row = rows.first else { return (.start, ChainHead.genesis(of: vault)) }
        let (seq, head) = try row.decode((Int64, ByteBuffer).self)
        return (JournalSeq(UInt64(seq)), try ChainHead(bytes: Array(buffer: head)))
    }

    /// The head after entry `seq` (genesis for 0); nil if there is no such entry.
    private static func head(_ c: PostgresConnection, account: AccountID, vault: VaultID, at seq: JournalSeq, _ logger: Logger) async throws -> ChainHead? {
        if seq == .start { return ChainHead.genesis(of: vault) }
        guard seq.rawValue <= UInt64(Int64.max) else { return nil }
        let rows = try await c.query("SELECT head FROM entries WHERE account_id = \(account.rawValue) AND seq = \(Int64(seq.rawValue))",
                                     logger: logger).collect()
        return try rows.first.map { try ChainHead(bytes: Array(buffer: try $0.decode(ByteBuffer.self))) }
    }
}

/// Who won between a lease that started its work and the acquire timeout:
/// exactly one of them, so a timed-out request never runs afterwards.
private final class LeaseRace: Sendable {
    enum State { case waiting, started, timedOut }
    private let state = Mutex(State.waiting)
    func claim(_ to: State) -> Bool {
        state.withLock { s in
            guard s == .waiting else { return false }
            s = to
            return true
        }
    }
}
