import Foundation
@testable import LockClient
import LockCrypto
import LockWire
import Testing

/// `lockfs sync` pulls beside the mount's background puller: two pages
/// fetched from the same cursor may be applied one after the other.
@Suite struct ConcurrentPullTests {
    func pages(_ count: Int) async throws -> (Engine, InMemoryRemote, EntryPage, EntryPage) {
        let (_, d) = try makeDevices(2)
        for i in 0..<count {
            try await d[0].engine.put("f\(i)", "\(i)")
            try await d[0].engine.syncNow()
        }
        let b = d[1]
        let all = try await b.remote.entries(after: JournalSeq(0), limit: 100, wait: .zero)
        let older = try EntryPage(start: all.start, items: Array(all.items.prefix(2)), latest: JournalSeq(2))
        return (b.engine, b.remote, all, older)
    }

    @Test func aPageFetchedBeforeAnotherPullAppliedItChangesNothing() async throws {
        let (e, _, all, older) = try await pages(3)
        try e.applyPage(all, requestedAfter: 0)
        let tree = try await e.tree()
        // The other pull's page, fetched from the same cursor, older: no alarm, no step back.
        try e.applyPage(older, requestedAfter: 0)
        #expect(e.status().integrityAlarm == nil)
        #expect(e.status().cursor == 3)
        #expect(try await e.tree() == tree)
    }

    @Test func anOverlappingPageIsAppliedFromWhereTheOtherPullStopped() async throws {
        let (e, _, all, older) = try await pages(3)
        try e.applyPage(older, requestedAfter: 0)
        try e.applyPage(all, requestedAfter: 0)
        #expect(e.status().cursor == 3)
        #expect(Set(try await e.tree().keys) == ["/f0", "/f1", "/f2"])
    }

    @Test func aDifferentEntryAtAnAppliedPositionIsAFork() async throws {
        let (e, _, all, _) = try await pages(3)
        try e.applyPage(all, requestedAfter: 0)
        // The same positions, other heads: the server forked between the two requests.
        var forged = all.items
        forged[1] = .init(seq: forged[1].seq, head: forged[2].head, entry: forged[1].entry)
        #expect(throws: LockError.self) { try e.applyPage(try EntryPage(start: all.start, items: Array(forged.prefix(2)), latest: JournalSeq(3)), requestedAfter: 0) }
    }

    @Test func aPageEndingBeforeWhatWasRequestedIsARollback() async throws {
        let (e, _, all, older) = try await pages(3)
        try e.applyPage(all, requestedAfter: 0)
        #expect(throws: LockError.integrity("the server's journal ends at 2 but this device verified it up to 3: history was rolled back")) {
            try e.applyPage(try EntryPage(start: .init(after: JournalSeq(3), head: all.items[2].head), items: [], latest: older.latest), requestedAfter: 3)
        }
    }
}
