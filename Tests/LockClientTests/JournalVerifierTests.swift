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

    /// A signed entry creating `name`, written at (`baseSeq`, `baseHead`).
    static func entry(_ name: String, baseSeq: UInt64, baseHead: ChainHead, by identity: DeviceIdentity = laptop,
                      as device: DeviceID = laptopID, keys: VaultKeys = keys, version: UInt8? = nil) throws -> JournalEntry {
        let op = Operation.create(node: .random(), parent: .root, name: try Name(name), revision: .random(),
                                  attributes: try NodeAttributes(mode: 0o644, mtime: Timestamp(nanoseconds: 0)), content: .file(.empty))
        let batch = try OperationBatch(device: device, createdAt: Timestamp(nanoseconds: Int64.random(in: 1...1 << 60)), operations: [op])
        return try JournalEntry.seal(batch, keys: keys, baseSeq: JournalSeq(baseSeq), baseHead: baseHead)
            .signed(by: identity, device: device, vault: vault)
    }

    /// A faithful journal of `count` entries, each written on the one before.
    static func chain(_ count: Int) throws -> [EntryPage.Item] {
        var head = ChainHead.genesis(of: vault)
        var items: [EntryPage.Item] = []
        for seq in 1...UInt64(count) {
            let e = try entry("f\(seq)", baseSeq: seq - 1, baseHead: head)
            head = head.next(seq: seq, entry: e.encoded)
            items.append(EntryPage.Item(seq: JournalSeq(seq), head: head, entry: e))
        }
        return items
    }

    static func page(_ items: [EntryPage.Item], latest: UInt64? = nil) throws -> EntryPage {
        try EntryPage(items: items, latest: JournalSeq(latest ?? items.last.map(\.seq.rawValue) ?? 0))
    }

    /// A verifier that has verified `items` (their heads are known).
    static func verifier(after items: [EntryPage.Item], inflight: [InflightBatch] = [],
                         signers: [DeviceID: [UInt8]] = [:]) -> JournalVerifier {
        let heads = Dictionary(uniqueKeysWithValues: items.map { ($0.seq.rawValue, $0.head) })
        return JournalVerifier(vault: vault, keys: KeyGenerations([keys]), cursor: items.last?.seq.rawValue ?? 0,
                               head: items.last?.head ?? .genesis(of: vault), signers: signers, inflight: inflight,
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
        var v = Self.verifier(after: [])
        let out = try v.verify(try Self.page(items), requestedAfter: 0)
        #expect(out.entries.map(\.seq) == [1, 2, 3, 4])
        #expect(out.entries.allSatisfy { $0.batch != nil && $0.ignored == nil })
        #expect(v.cursor == 4 && v.head == items[3].head)
        #expect(out.newSigners == [Self.laptopID: Self.laptop.signingPublicKey])
        // Asked for after 2, served from 1: the overlap is the very entries verified.
        var again = Self.verifier(after: Array(items.prefix(2)))
        #expect(try again.verify(try Self.page(items), requestedAfter: 0).entries.map(\.seq) == [3, 4])
    }

    @Test func everyLieIsAnIntegrityError() throws {
        let items = try Self.chain(4)
        let first2 = Array(items.prefix(2))
        let other = try Self.entry("forged", baseSeq: 1, baseHead: items[0].head)
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
            var v = Self.verifier(after: verified, signers: [Self.laptopID: Self.laptop.signingPublicKey])
            let cursor = v.cursor
            let why = Self.integrityError {
                _ = try v.verify(try Self.page(served, latest: latest ?? served.last?.seq.rawValue ?? 0), requestedAfter: cursor)
            }
            #expect(why?.contains(expected) == true, "\(name): \(why ?? "accepted")")
        }
    }

    /// This device's own entry, acknowledged at a seq: served there as another
    /// entry, or so that it must be ignored, is an alarm (the change would
    /// stay "sending" forever); served as sent, it verifies.
    @Test func anAcknowledgedEntryMustBeServedAsSent() throws {
        let items = try Self.chain(2)
        let mine = try Self.entry("mine", baseSeq: 2, baseHead: items[1].head)
        let inflight = [InflightBatch(stamp: 1, entry: mine.unsigned, references: [], appendedSeq: 3)]
        let signers = [Self.laptopID: Self.laptop.signingPublicKey]
        var ok = Self.verifier(after: items, inflight: inflight, signers: signers)
        #expect(try ok.verify(try Self.page(Self.rechained([mine], from: 3, head: items[1].head)), requestedAfter: 2).entries.count == 1)
        let another = try Self.entry("another", baseSeq: 2, baseHead: items[1].head)
        let intruder = mine.unsigned.signed(by: Self.phone, device: Self.laptopID, vault: Self.vault)
        for (name, served, expected) in [("another entry", another, "serves another one"), ("ignorable", intruder, "must be ignored")] {
            var v = Self.verifier(after: items, inflight: inflight, signers: signers)
            let why = Self.integrityError { _ = try v.verify(try Self.page(Self.rechained([served], from: 3, head: items[1].head)), requestedAfter: 2) }
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
        var v = Self.verifier(after: items, signers: signers)
        let out = try v.verify(try Self.page(served), requestedAfter: 2)
        #expect(out.entries.map { $0.batch == nil } == [true, false])
        #expect(out.entries[0].ignored?.contains("another key") == true)
        #expect(out.newSigners == [Self.phoneID: Self.phone.signingPublicKey])
        #expect(v.cursor == 4 && v.head == served[1].head)
    }
}
