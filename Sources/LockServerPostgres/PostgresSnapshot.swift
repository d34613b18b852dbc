import Foundation
import LockCrypto
import LockServer
import LockWire
import NIOCore
import PostgresNIO

/// Export and import of every row (`lockfs-server migrate`; docs/design.md,
/// "Migrating between stores").
///
/// Timestamps cross as whole microseconds since 1970 (`bigint`), never as
/// floating-point seconds, so what is exported equals what was imported.
extension PostgresMetadataStore: MetadataExporting, MetadataImporting {
    /// `TIMESTAMPTZ` → microseconds since 1970 (`extract` is exact numeric since PostgreSQL 14).
    private static func micros(_ column: String) -> String { "(extract(epoch from \(column)) * 1000000)::bigint" }
    /// A microseconds parameter or column → `TIMESTAMPTZ` (NULL stays NULL).
    private static func timestamp(micros: String) -> String { "(to_timestamp(0) + (\(micros))::float8 * interval '1 microsecond')" }
    /// A date as a literal `TIMESTAMPTZ` expression of its whole microseconds
    /// (an integer in the SQL text: nothing a caller controls), or NULL.
    private static func timestamp(_ date: Date?) -> String {
        date.map { timestamp(micros: String(MetadataSnapshot.microseconds($0))) } ?? "NULL"
    }

    public func exportSnapshot() async throws -> MetadataSnapshot {
        try await transaction { c in
            // One snapshot for every table.
            try await c.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: self.logger)
            func all(_ sql: String) async throws -> [PostgresRow] {
                try await c.query(PostgresQuery(unsafeSQL: sql), logger: self.logger).collect()
            }
            func date(_ micros: Int64) -> Date { MetadataSnapshot.date(microseconds: micros) }
            func bytes(_ b: ByteBuffer) -> [UInt8] { Array(buffer: b) }
            var s = MetadataSnapshot()
            s.settings = try await all("SELECT key, value FROM settings ORDER BY key COLLATE \"C\"").map {
                let (k, v) = try $0.decode((String, ByteBuffer).self)
                return MetadataSnapshot.Setting(key: k, value: bytes(v))
            }
            s.accounts = try await all("SELECT \(Self.accountColumns), \(Self.micros("created_at")) FROM accounts ORDER BY id").map {
                let created = try Array($0)[10].decode(Int64.self)
                return MetadataSnapshot.AccountRow(account: try Self.account(from: $0), createdAt: date(created))
            }
            s.invites = try await all("SELECT name, code_hash, \(Self.micros("expires_at")) FROM invites ORDER BY name COLLATE \"C\"").map {
                let (name, hash, expires) = try $0.decode((String, ByteBuffer, Int64).self)
                return MetadataSnapshot.InviteRow(user: name, codeHash: bytes(hash), expiresAt: date(expires))
            }
            s.devices = try await all("""
                SELECT id, account_id, name, token_hash, \(Self.micros("created_at")), \(Self.micros("last_seen_at")), \(Self.micros("revoked_at")),
                       signing_key, box_key, box_key_signature
                FROM devices ORDER BY id
                """).map {
                let (id, account, name, hash, created, seen, revoked) = try $0.decode((ByteBuffer, Int64, String, ByteBuffer, Int64, Int64?, Int64?).self)
                let cells = Array($0)
                return MetadataSnapshot.DeviceRow(id: try DeviceID(bytes: bytes(id)), account: AccountID(account), name: name, tokenHash: bytes(hash),
                                                  createdAt: date(created), lastSeenAt: seen.map(date), revokedAt: revoked.map(date),
                                                  signingKey: try cells[7].decode(ByteBuffer?.self).map(bytes),
                                                  boxKey: try cells[8].decode(ByteBuffer?.self).map(bytes),
                                                  boxKeySignature: try cells[9].decode(ByteBuffer?.self).map(bytes))
            }
            s.chunks = try await all("SELECT account_id, id, size FROM chunks ORDER BY account_id, id").map {
                let (account, id, size) = try $0.decode((Int64, ByteBuffer, Int64).self)
                return MetadataSnapshot.ChunkRow(account: AccountID(account), id: try ChunkID(bytes: bytes(id)), size: size)
            }
            s.entries = try await all("""
                SELECT account_id, seq, head, body, device_id, \(Self.micros("created_at")) FROM entries ORDER BY account_id, seq
                """).map {
                let (account, seq, head, body, device, created) = try $0.decode((Int64, Int64, ByteBuffer, ByteBuffer, ByteBuffer, Int64).self)
                return MetadataSnapshot.EntryRow(account: AccountID(account), seq: JournalSeq(UInt64(seq)), head: try ChainHead(bytes: bytes(head)),
                                                 body: bytes(body), device: try DeviceID(bytes: bytes(device)), createdAt: date(created))
            }
            s.entryRefs = try await all("SELECT account_id, chunk_id, seq FROM entry_refs ORDER BY account_id, chunk_id, seq").map {
                let (account, chunk, seq) = try $0.decode((Int64, ByteBuffer, Int64).self)
                return MetadataSnapshot.EntryRefRow(account: AccountID(account), chunk: try ChunkID(bytes: bytes(chunk)), seq: JournalSeq(UInt64(seq)))
            }
            s.checkpoints = try await all("SELECT account_id, seq, body FROM checkpoints ORDER BY account_id, seq").map {
                let (account, seq, body) = try $0.decode((Int64, Int64, ByteBuffer).self)
                return MetadataSnapshot.CheckpointRow(account: AccountID(account), seq: JournalSeq(UInt64(seq)), body: bytes(body))
            }
            return s
        }
    }

    public func importSnapshot(_ s: MetadataSnapshot) async throws {
        try await transaction { c in
            let log = self.logger
            // Nobody registers or invites while the rows go in.
            try await c.query("LOCK TABLE accounts, invites IN EXCLUSIVE MODE", logger: log)
            let taken = try await c.query("SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM invites)", logger: log)
                .collect().first?.decode(Int64.self) ?? 0
            guard taken == 0 else {
                throw ServerError.conflict(code: "not_empty", message: "the target database already holds accounts or invites")
            }
            for setting in s.settings {
                try await c.query("""
                    INSERT INTO settings (key, value) VALUES (\(setting.key), \(ByteBuffer(bytes: setting.value)))
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
                    """, logger: log)
            }
            for row in s.accounts {
                let a = row.account
                try await c.query("""
                    INSERT INTO accounts (id, name, vault_id, kdf, keyring, login_salt, login_hash, stored_bytes, quota,
                                          recovery_verifier, created_at)
                    VALUES (\(a.id.rawValue), \(a.name), \(ByteBuffer(bytes: a.vaultID.bytes)), \(ByteBuffer(bytes: a.kdf)),
                            \(ByteBuffer(bytes: a.keyring)), \(ByteBuffer(bytes: a.loginSalt)), \(ByteBuffer(bytes: a.loginHash)),
                            \(a.storedBytes), \(a.quota), \(a.recoveryVerifier.map { ByteBuffer(bytes: $0) }),
                            \(unescaped: Self.timestamp(row.createdAt)))
                    """, logger: log)
            }
            if !s.accounts.isEmpty {
                // Registrations after the migration get ids after the copied ones.
                try await c.query("SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT MAX(id) FROM accounts))", logger: log)
            }
            for i in s.invites {
                try await c.query("""
                    INSERT INTO invites (name, code_hash, expires_at)
                    VALUES (\(i.user), \(ByteBuffer(bytes: i.codeHash)), \(unescaped: Self.timestamp(i.expiresAt)))
                    """, logger: log)
            }
            for d in s.devices {
                try await c.query("""
                    INSERT INTO devices (id, account_id, name, token_hash, created_at, last_seen_at, revoked_at, signing_key, box_key,
                                         box_key_signature)
                    VALUES (\(ByteBuffer(bytes: d.id.bytes)), \(d.account.rawValue), \(d.name), \(ByteBuffer(bytes: d.tokenHash)),
                            \(unescaped: Self.timestamp(d.createdAt)), \(unescaped: Self.timestamp(d.lastSeenAt)),
                            \(unescaped: Self.timestamp(d.revokedAt)), \(d.signingKey.map { ByteBuffer(bytes: $0) }),
                            \(d.boxKey.map { ByteBuffer(bytes: $0) }), \(d.boxKeySignature.map { ByteBuffer(bytes: $0) }))
                    """, logger: log)
            }
            for batch in s.chunks.batches(bytes: { _ in 48 }) {
                try await c.query("""
                    INSERT INTO chunks (account_id, id, size)
                    SELECT * FROM unnest(\(batch.map(\.account.rawValue))::bigint[], \(batch.map { ByteBuffer(bytes: $0.id.bytes) })::bytea[],
                                         \(batch.map(\.size))::bigint[])
                    """, logger: log)
            }
            for batch in s.entries.batches(bytes: { $0.body.count + 64 }) {
                try await c.query("""
                    INSERT INTO entries (account_id, seq, head, body, device_id, created_at)
                    SELECT u.a, u.s, u.h, u.b, u.d, \(unescaped: Self.timestamp(micros: "u.t"))
                    FROM unnest(\(batch.map(\.account.rawValue))::bigint[], \(batch.map { Int64($0.seq.rawValue) })::bigint[],
                                \(batch.map { ByteBuffer(bytes: $0.head.bytes) })::bytea[], \(batch.map { ByteBuffer(bytes: $0.body) })::bytea[],
                                \(batch.map { ByteBuffer(bytes: $0.device.bytes) })::bytea[],
                                \(batch.map { MetadataSnapshot.microseconds($0.createdAt) })::bigint[]) AS u(a, s, h, b, d, t)
                    """, logger: log)
            }
            for batch in s.entryRefs.batches(bytes: { _ in 48 }) {
                try await c.query("""
                    INSERT INTO entry_refs (account_id, chunk_id, seq)
                    SELECT * FROM unnest(\(batch.map(\.account.rawValue))::bigint[], \(batch.map { ByteBuffer(bytes: $0.chunk.bytes) })::bytea[],
                                         \(batch.map { Int64($0.seq.rawValue) })::bigint[])
                    """, logger: log)
            }
            for batch in s.checkpoints.batches(bytes: { $0.body.count + 16 }) {
                try await c.query("""
                    INSERT INTO checkpoints (account_id, seq, body)
                    SELECT * FROM unnest(\(batch.map(\.account.rawValue))::bigint[], \(batch.map { Int64($0.seq.rawValue) })::bigint[],
                                         \(batch.map { ByteBuffer(bytes: $0.body) })::bytea[])
                    """, logger: log)
            }
        }
    }
}

extension Array {
    /// Consecutive slices of at most 5,000 rows and about 8 MiB each (one INSERT each).
    fileprivate func batches(bytes size: (Element) -> Int) -> [ArraySlice<Element>] {
        var out: [ArraySlice<Element>] = []
        var start = startIndex, budget = 0
        for i in indices {
            budget += size(self[i])
            if i - start + 1 >= 5000 || budget >= 8 << 20 {
                out.append(self[start...i])
                start = i + 1
                budget = 0
            }
        }
        if start < endIndex { out.append(self[start...]) }
        return out
    }
}
