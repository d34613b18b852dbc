import Foundation
import LockCrypto
import LockServer
import LockServerPostgres
import LockTesting
import LockWire
import Testing

/// Export from SQLite and import into PostgreSQL, in process: every row
/// crosses unchanged, and the imported store works on from there.
@Suite struct MetadataSnapshotTests {
    typealias F = MetadataFixture
    typealias P = PostgresFixture

    @Test func sqliteToPostgresKeepsEveryRow() async throws {
        let dir = try makeTemporaryDirectory("snapshot")
        defer { try? FileManager.default.removeItem(at: dir) }
        let sqlite = try SQLiteMetadataStore(path: dir.appendingPathComponent("metadata.sqlite").path)
        _ = try await sqlite.serverSecret()
        let (alice, keys, _) = try await F.register(sqlite, "alice")
        let (bob, _, _) = try await F.register(sqlite, "bob")
        let spare = F.newDevice("spare")
        try await sqlite.addDevice(spare, account: alice.id, now: F.now.addingTimeInterval(0.123_456_7))
        #expect(try await sqlite.revokeDevice(account: alice.id, id: spare.id))
        _ = try await sqlite.device(tokenHash: spare.tokenHash, now: F.now)  // revoked: no last-seen update
        try await sqlite.createInvite(NewInvite(user: "carol", codeHash: F.hash("invite"), expiresAt: F.now.addingTimeInterval(86400)))
        let chunks = (0..<3).map { _ in F.chunkID() }
        try await sqlite.recordChunks(account: alice.id, chunks.map { ($0, 1000) })
        try await sqlite.recordChunks(account: bob.id, [(chunks[0], 1000)])
        var head = (JournalSeq.start, ChainHead.genesis(of: keys.vaultID))
        for i in 0..<4 {
            let entry = try F.entry(keys, head.0, head.1)
            let stored = try await sqlite.append(account: alice.id, vault: keys.vaultID, entry: entry, bytes: entry.encoded,
                                                 references: [chunks[i % 3]], device: .random(), now: F.now)
            head = (stored.seq, stored.head)
        }
        try await sqlite.putCheckpoint(account: alice.id, vault: keys.vaultID, seq: head.0, head: head.1, bytes: [1, 2, 3])
        let source = try await sqlite.exportSnapshot()
        #expect(source.accounts.count == 2 && source.devices.count == 3 && source.entries.count == 4 && source.chunks.count == 4)
        #expect(source.chainProblems().isEmpty)

        let (server, database, settings) = try await P.freshDatabase("snapshot")
        defer { Task { try? await server.dropDatabase(database) } }
        let pg = try await PostgresMetadataStore.open(settings)
        defer { Task { await pg.close() } }
        try await pg.importSnapshot(source)
        let copy = try await pg.exportSnapshot()
        #expect(source.differences(from: copy) == [])
        #expect(copy == source)
        #expect(try await pg.serverSecret() == (try await sqlite.serverSecret()))

        // A second import finds accounts and refuses, changing nothing.
        let refused = await F.serverError { try await pg.importSnapshot(source) }
        #expect(refused?.code == "not_empty", "\(String(describing: refused))")
        // The copy works on: the chain continues, new accounts get new ids.
        let entry = try F.entry(keys, head.0, head.1)
        let next = try await pg.append(account: alice.id, vault: keys.vaultID, entry: entry, bytes: entry.encoded,
                                       references: [], device: .random(), now: F.now)
        #expect(next.seq == JournalSeq(5))
        let (dave, _, _) = try await F.register(pg, "dave")
        #expect(dave.id.rawValue > bob.id.rawValue)

        // A changed row is named.
        var altered = source
        altered.entries[1].body[0] ^= 1
        #expect(source.differences(from: altered) == ["entries: account \(alice.id) seq 2 differs"])
        #expect(altered.chainProblems().count == 1)
    }
}
