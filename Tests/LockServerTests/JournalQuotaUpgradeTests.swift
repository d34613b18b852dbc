import Foundation
import GRDB
@testable import LockServer
import LockTesting
import LockWire
import Testing

/// Journal bytes count against the quota since issue 15: an SQLite store of
/// before (schema v4, usage of chunks only) is upgraded in place.
@Suite struct JournalQuotaUpgradeTests {
    typealias F = MetadataFixture

    @Test func aStoreOfBeforeCountsItsEntriesAndCheckpointsOnce() async throws {
        let path = try makeTemporaryDirectory("quota-upgrade").appendingPathComponent("metadata.sqlite").path
        let store = try SQLiteMetadataStore(path: path)
        let (alice, keys, _) = try await F.register(store, "alice")
        try await store.recordChunks(account: alice.id, [(F.chunkID(), 1000)])
        let chain = try await F.appendChain(store, alice, keys, count: 3)
        try await store.putCheckpoint(account: alice.id, vault: alice.vaultID, seq: chain[2].seq, head: chain[2].head, bytes: [1, 2, 3, 4])
        let journal = Int64(chain.reduce(0) { $0 + $1.bytes.count }) + 4
        #expect(try await store.account(named: "alice")?.storedBytes == 1000 + journal)

        // As lockfs-server 0.2 left it: chunks only, schema v4.
        let db = try DatabaseQueue(path: path)
        try await db.write { db in
            try db.execute(sql: "UPDATE accounts SET stored_bytes = 1000")
            try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v5'")
        }
        try db.close()
        let upgraded = try SQLiteMetadataStore(path: path)
        #expect(try await upgraded.account(named: "alice")?.storedBytes == 1000 + journal)
        let again = try SQLiteMetadataStore(path: path)
        #expect(try await again.account(named: "alice")?.storedBytes == 1000 + journal)
    }
}
