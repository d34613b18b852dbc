import Foundation
@testable import LockClient
import LockCrypto
import LockWire
import Testing

/// Every lie a server can tell about the journal, against the pure verifier:
/// no server, no engine (issue 14). The end-to-end versions over real HTTP
/// stay in HostileServerTests.
@Suite struct JournalVerifierTests {
    static let keys = VaultKeys.generate()
    static let vault = keys.vaultID
    static let laptop = DeviceIdentity.generate(), phone = DeviceIdentity.generate()
    static let laptopID = DeviceID.random(), phoneID = DeviceID.random()

    /// A signed entry creating `name`, written at (`baseSeq`, `baseHead`):
    /// its device's first batch, or the one after `previous` (that device's).
    static func entry(_ name: String, baseSeq: UInt64, baseHead: ChainHead, by identity: DeviceIdentity = laptop,
                      as device: DeviceID = laptopID, keys: VaultKeys = keys, after previous: JournalEntry? = nil,
                      stamp: Int64? = nil) throws -> JournalEntry {
        let op = Operation.create(node: .random(), parent: .root, name: try Name(name), revision: .random(),
                                  attributes: try NodeAttributes(mode: 0o644, mtime: Timestamp(nanoseconds: 0)), content: .file(.empty))
        let before = try previous.map { try $0.open(keys: keys).createdAt.nanoseconds }
        let link: BatchLink = previous.map { .follows(stamp: before!, envelopeHash: BatchLink.envelopeHash($0.sealedBatch)) } ?? .first
        let batch = try OperationBatch(device: device, createdAt: Timestamp(nanoseconds: stamp ?? (before.map { $0 + 1 } ?? 1_000)),
                                       link: link, operations: [op])
        return try JournalEntry.seal(batch, keys: keys, baseSeq: JournalSeq(baseSeq), baseHead: baseHead)
            .signed(by: identity, device: device, vault: vault)
    }

    /// A faithful journal of `count` entries of the laptop, each written on the one before.
    static func chain(_ count: Int) throws -> [EntryPage.Item] {
        var head = ChainHead.genesis(of: vault)
        var items: [EntryPage.Item] = []
        for seq in 1...UInt64(count) {
            let e = try entry("f\(seq)", baseSeq: seq - 1, baseHead: head, after: items.last?.entry)
            head = head.next(seq: seq, entry: e.encoded)
            items.append(EntryPage.Item(seq: JournalSeq(seq), head: head, entry: e))
        }
        return items
    }

    /// A page asked for after `after` (whose head is `head`), as a server that
    /// says where it starts serves it.
    static func page(_ items: [EntryPage.Item], latest: UInt64? = nil, after: UInt64, head: ChainHead) throws -> EntryPage {
        try EntryPage(start: .init(after: JournalSeq(after), head: head), items: items,
                      latest: JournalSeq(latest ?? items.last.map(\.seq.rawValue) ?? after))
    }

    /// A page for `v` at its cursor.
    static func page(_ items: [EntryPage.Item], latest: UInt64? = nil, for v: JournalVerifier) throws -> EntryPage {
        try page(items, latest: latest, after: v.cursor, head: v.head)
    }

    /// A verifier that has verified `items` (their heads are known, and the
    /// device chains they make).
    static func verifier(after items: [EntryPage.Item], inflight: [InflightBatch] = [],
                         signers: [DeviceID: [UInt8]] = [:]) throws -> JournalVerifier {
        let heads = Dictionary(uniqueKeysWithValues: items.map { ($0.seq.rawValue, $0.head) })
        var tails: [DeviceID: DeviceTail] = [:]
        for item in items {
            let batch = try item.entry.open(keys: keys)
            tails[batch.device] = DeviceTail(stamp: batch.createdAt.nanoseconds, envelopeHash: BatchLink.envelopeHash(item.entry.sealedBatch),
                                             linked: batch.link != nil)
        }
        return JournalVerifier(vault: vault, keys: KeyGenerations([keys]), cursor: items.last?.seq.rawValue ?? 0,
                               head: items.last?.head ?? .genesis(of: vault), signers: signers, tails: tails, inflight: inflight,
                               verifiedHead: { heads[$0] })
    }

    /// Re-chains `items` from `head` at `from` (what a server that rewrites history does).
    static func rechained(_ entries: [JournalEntry], from seq: UInt64, head: ChainHead) -> [EntryPage.Item] {
        var h = head
        return entries.enumerated().map { i, e in
            let s = seq + UInt64(i)
            h = h.next(seq: s, entry: e.encoded)
            return EntryPage.Item(seq: JournalSeq(s), head: h, entry: e)
        }
    }

    /// The integrity error `body` throws (nil if it throws nothing; any other error fails the test).
    static func integrityError(_ body: () throws -> Void) -> String? {
        do { try body() } catch LockError.integrity(let why) { return why } catch { Issue.record("not an integrity error: \(error)") }
        return nil
    }

    @Test func aFaithfulPageVerifies() throws {
        let items = try Self.chain(4)
        var v = try Self.verifier(after: [])
        let out = try v.verify(try Self.page(items, for: v), requestedAfter: 0)
        #expect(out.entries.map(\.seq) == [1, 2, 3, 4])
        #expect(out.entries.allSatisfy { $0.batch != nil && $0.ignored == nil })
        #expect(v.cursor == 4 && v.head == items[3].head)
        #expect(out.newSigners == [Self.laptopID: Self.laptop.signingPublicKey])
        // Asked for after 2, served from 1: the overlap is the very entries verified.
        var again = try Self.verifier(after: Array(items.prefix(2)))
        #expect(try again.verify(try Self.page(items, after: 0, head: .genesis(of: Self.vault)), requestedAfter: 0).entries.map(\.seq) == [3, 4])
    }

    @Test func everyLieIsAnIntegrityError() throws {
        let items = try Self.chain(4)
        let first2 = Array(items.prefix(2))
        let other = try Self.entry("forged", baseSeq: 1, baseHead: items[0].head, after: items[0].entry)
        let forkAt2 = Self.rechained([other], from: 2, head: items[0].head)
        let unknownBase = try Self.entry("on a fork", baseSeq: 2, baseHead: ChainHead.genesis(of: .random()))
        let futureBase = try Self.entry("from the future", baseSeq: 9, baseHead: items[1].head)
        let wrongKeys = try Self.entry("other vault key", baseSeq: 2, baseHead: items[1].head, keys: VaultKeys(vaultID: Self.vault, master: .random()))
        var tampered = items[2].entry.sealedBatch
        tampered[tampered.count - 1] ^= 1
        let tamperedEntry = try JournalEntry(baseSeq: items[2].entry.baseSeq, baseHead: items[2].entry.baseHead, sealedBatch: tampered)
            .signed(by: Self.laptop, device: Self.laptopID, vault: Self.vault)
        let cases: [(String, [EntryPage.Item], [EntryPage.Item], UInt64?, String)] = [
            ("rolled back (latest below what was verified)", first2, [], 1, "rolled back"),
            ("an entry dropped", first2, [items[3]], nil, "dropped or reordered"),
            ("two entries swapped", first2, [items[3], items[2]], nil, "dropped or reordered"),
            ("a head altered", first2, [EntryPage.Item(seq: items[2].seq, head: items[1].head, entry: items[2].entry)], nil, "does not chain"),
            ("an entry swapped, its head kept", first2, [EntryPage.Item(seq: items[2].seq, head: items[2].head, entry: other)], nil, "does not chain"),
            ("a verified entry served differently", first2, forkAt2 + [items[2]], nil, "two different entries"),
            ("written on a base never seen", first2, Self.rechained([unknownBase], from: 3, head: items[1].head), nil, "never saw"),
            ("a base beyond the cursor", first2, Self.rechained([futureBase], from: 3, head: items[1].head), nil, "never saw"),
            ("sealed under another key", first2, Self.rechained([wrongKeys], from: 3, head: items[1].head), nil, "failed authentication"),
            ("the batch altered, re-chained", first2, Self.rechained([tamperedEntry], from: 3, head: items[1].head), nil, "failed authentication"),
        ]
        for (name, verified, served, latest, expected) in cases {
            var v = try Self.verifier(after: verified, signers: [Self.laptopID: Self.laptop.signingPublicKey])
            // Asked after the cursor, or (another pull meanwhile) before the first entry served.
            let after = min(v.cursor, (served.first?.seq.rawValue ?? v.cursor + 1) - 1)
            let head = after == 0 ? ChainHead.genesis(of: Self.vault) : verified[Int(after) - 1].head
            let why = Self.integrityError {
                _ = try v.verify(try Self.page(served, latest: latest ?? served.last?.seq.rawValue ?? 0, after: after, head: head), requestedAfter: after)
            }
            #expect(why?.contains(expected) == true, "\(name): \(why ?? "accepted")")
        }
    }

    /// This device's own entry, acknowledged at a seq: served there as another
    /// entry, or so that it must be ignored, is an alarm (the change would
    /// stay "sending" forever); served as sent, it verifies.
    @Test func anAcknowledgedEntryMustBeServedAsSent() throws {
        let items = try Self.chain(2)
        let mine = try Self.entry("mine", baseSeq: 2, baseHead: items[1].head, after: items[1].entry)
        let inflight = [InflightBatch(stamp: 1, entry: mine.unsigned, references: [], appendedSeq: 3)]
        let signers = [Self.laptopID: Self.laptop.signingPublicKey]
        var ok = try Self.verifier(after: items, inflight: inflight, signers: signers)
        #expect(try ok.verify(try Self.page(Self.rechained([mine], from: 3, head: items[1].head), for: ok), requestedAfter: 2).entries.count == 1)
        let another = try Self.entry("another", baseSeq: 2, baseHead: items[1].head, after: items[1].entry)
        let intruder = mine.unsigned.signed(by: Self.phone, device: Self.laptopID, vault: Self.vault)
        for (name, served, expected) in [("another entry", another, "serves another one"), ("ignorable", intruder, "must be ignored")] {
            var v = try Self.verifier(after: items, inflight: inflight, signers: signers)
            let why = Self.integrityError { _ = try v.verify(try Self.page(Self.rechained([served], from: 3, head: items[1].head), for: v), requestedAfter: 2) }
            #expect(why?.contains(expected) == true, "\(name): \(why ?? "accepted")")
        }
    }

    /// What a faithful server refuses is skipped (the chain advances), not applied.
    @Test func aWronglySignedEntryIsSkipped() throws {
        let items = try Self.chain(2)
        let signers = [Self.laptopID: Self.laptop.signingPublicKey]
        let posing = try Self.entry("posing as the laptop", baseSeq: 2, baseHead: items[1].head, by: Self.phone, as: Self.laptopID)
        let phoneFirst = try Self.entry("the phone's first", baseSeq: 2, baseHead: items[1].head, by: Self.phone, as: Self.phoneID)
        let served = Self.rechained([posing, phoneFirst], from: 3, head: items[1].head)
        var v = try Self.verifier(after: items, signers: signers)
        let out = try v.verify(try Self.page(served, for: v), requestedAfter: 2)
        #expect(out.entries.map { $0.batch == nil } == [true, false])
        #expect(out.entries[0].ignored?.contains("another key") == true)
        #expect(out.newSigners == [Self.phoneID: Self.phone.signingPublicKey])
        #expect(v.cursor == 4 && v.head == served[1].head)
    }

    // MARK: Issue 15: forks of equal length, acknowledgements, device chains

    /// Every poll checks the head at the cursor asked after: a server showing
    /// another history of the same length (nothing new to send) is caught
    /// there, and one that will not say is not believed.
    @Test func aPageMustStartAtTheVerifiedHead() throws {
        let items = try Self.chain(3)
        let fork = Self.rechained([try Self.entry("other", baseSeq: 2, baseHead: items[1].head, after: items[1].entry)], from: 3, head: items[1].head)
        var v = try Self.verifier(after: items)
        // Nothing new, but the server's entry 3 is another one.
        #expect(Self.integrityError { _ = try v.verify(try Self.page([], after: 3, head: fork[0].head), requestedAfter: 3) }?
            .contains("another history") == true)
        // A start for another cursor than asked.
        #expect(Self.integrityError { _ = try v.verify(try Self.page([], latest: 3, after: 2, head: items[1].head), requestedAfter: 3) }?
            .contains("another history") == true)
        // No start at all: not applied, not the alarm (an older server), a clear error.
        #expect(throws: LockError.remote("the server's journal page does not say its chain head at this device's position: upgrade lockfs-server to this lockfs's version")) {
            _ = try v.verify(try EntryPage(items: [], latest: JournalSeq(3)), requestedAfter: 3)
        }
        #expect(try v.verify(try Self.page([], after: 3, head: items[2].head), requestedAfter: 3).entries.isEmpty)
    }

    /// The acknowledgement's head is the one the pull must find at that seq.
    @Test func anAcknowledgedEntryMustComeAfterTheHistoryItWasAcknowledgedOn() throws {
        let items = try Self.chain(3)
        let mine = try Self.entry("mine", baseSeq: 2, baseHead: items[1].head, by: Self.phone, as: Self.phoneID)
        // Acknowledged at 4 after the faithful history; served at 4 after a swapped entry 3.
        let acknowledged = Self.rechained([mine], from: 4, head: items[2].head)[0].head
        let inflight = [InflightBatch(stamp: 1_000, entry: mine.unsigned, references: [], appendedSeq: 4, appendedHead: acknowledged)]
        var ok = try Self.verifier(after: items, inflight: inflight)
        #expect(try ok.verify(try Self.page(Self.rechained([mine], from: 4, head: items[2].head), for: ok), requestedAfter: 3).entries.count == 1)
        let other3 = try Self.entry("other", baseSeq: 2, baseHead: items[1].head, after: items[1].entry)
        let served = Self.rechained([other3, mine], from: 3, head: items[1].head)
        var v = try Self.verifier(after: Array(items.prefix(2)), inflight: inflight)
        #expect(Self.integrityError { _ = try v.verify(try Self.page(served, for: v), requestedAfter: 2) }?.contains("another chain head") == true)
    }

    /// A device's batches form a chain: only an exact repeat of its last one
    /// is skipped; a drop, a replay or a reorder of that device's entries is
    /// the alarm, even where the server recomputed the journal's chain.
    @Test func eachDevicesEntriesFormAChain() throws {
        let g = ChainHead.genesis(of: Self.vault)
        let e1 = try Self.entry("one", baseSeq: 0, baseHead: g)
        let e2 = try Self.entry("two", baseSeq: 0, baseHead: g, after: e1)
        let e3 = try Self.entry("three", baseSeq: 0, baseHead: g, after: e2)
        let cases: [(String, [JournalEntry], String?)] = [
            ("faithful", [e1, e2, e3], nil),
            ("a retried append landed twice", [e1, e1, e2, e2, e3], nil),
            ("one dropped, the chain recomputed", [e1, e3], "never saw"),
            ("the first dropped", [e2, e3], "never saw"),
            ("two swapped", [e2, e1, e3], "never saw"),
            ("an older one replayed", [e1, e2, e1], "earlier batch"),
            ("an older one replayed later", [e1, e2, e3, e2], "earlier batch"),
            ("a second first batch", [e1, try Self.entry("again", baseSeq: 0, baseHead: g, stamp: 5_000)], "new chain"),
            ("the same stamp, other bytes", [e1, e2, try Self.entry("twin", baseSeq: 0, baseHead: g, after: e1)], "earlier batch"),
        ]
        for (name, entries, expected) in cases {
            var v = try Self.verifier(after: [])
            do {
                let out = try v.verify(try Self.page(Self.rechained(entries, from: 1, head: g), for: v), requestedAfter: 0)
                #expect(expected == nil, "\(name): accepted")
                #expect(out.entries.filter { !$0.isRepeat }.count == 3, "\(name)")
            } catch LockError.integrity(let why) {
                #expect(expected.map { why.contains($0) } == true, "\(name): \(why)")
            }
        }
    }
}
