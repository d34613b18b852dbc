@testable import LockClient
import LockCrypto
import LockWire
import Testing

/// `DeviceChain`, the pure check of a batch against its device's chain, with
/// the cases the journal tests do not reach: batches of lockfs before 0.3
/// (no link) and tails kept before their hash was.
@Suite struct DeviceChainTests {
    static let device = DeviceID.random()
    static let hash = [UInt8](repeating: 7, count: 32), other = [UInt8](repeating: 8, count: 32)
    /// The envelope hash of an entry `lockfs repair` quarantined.
    static let quarantined = [UInt8](repeating: 9, count: 32)

    static func batch(_ stamp: Int64, _ link: BatchLink?) throws -> OperationBatch {
        let op = Operation.delete(node: .random(), base: .random())
        return try OperationBatch(device: device, createdAt: Timestamp(nanoseconds: stamp), link: link, operations: [op],
                                  version: link == nil ? 2 : 3)
    }

    @Test func verdicts() throws {
        let linked = DeviceTail(stamp: 10, envelopeHash: Self.hash, linked: true)
        let legacy = DeviceTail(stamp: 10, envelopeHash: Self.hash, linked: false)
        let unhashed = DeviceTail(stamp: 10, envelopeHash: nil, linked: false)
        let cases: [(String, OperationBatch, [UInt8], DeviceTail?, String?)] = [
            ("first batch of a new device", try Self.batch(5, .first), Self.other, nil, "apply"),
            ("a 0.2 batch of a new device", try Self.batch(5, nil), Self.other, nil, "apply"),
            ("0.2 batches in stamp order", try Self.batch(11, nil), Self.other, legacy, "apply"),
            ("the first linked batch after 0.2 ones", try Self.batch(11, .first), Self.other, legacy, "apply"),
            ("following the last", try Self.batch(11, .follows(stamp: 10, envelopeHash: Self.hash)), Self.other, linked, "apply"),
            ("following a tail kept without its hash", try Self.batch(11, .follows(stamp: 10, envelopeHash: Self.hash)), Self.other, unhashed, "apply"),
            ("an exact repeat", try Self.batch(10, .follows(stamp: 9, envelopeHash: Self.other)), Self.hash, linked, "repeat"),
            ("a repeat of a tail kept without its hash", try Self.batch(10, nil), Self.other, unhashed, "repeat"),
            ("the same stamp, other bytes", try Self.batch(10, .first), Self.other, linked, "earlier batch"),
            ("an older stamp", try Self.batch(9, nil), Self.other, legacy, "earlier batch"),
            ("a 0.2 batch after linked ones", try Self.batch(11, nil), Self.other, linked, "unlinked"),
            ("a new chain after a linked one", try Self.batch(11, .first), Self.other, linked, "new chain"),
            ("following another batch", try Self.batch(12, .follows(stamp: 11, envelopeHash: Self.hash)), Self.other, linked, "never saw"),
            ("following the right stamp, other bytes", try Self.batch(11, .follows(stamp: 10, envelopeHash: Self.other)), Self.other, linked, "never saw"),
            ("following a batch never seen", try Self.batch(11, .follows(stamp: 10, envelopeHash: Self.hash)), Self.other, nil, "never saw"),
            ("following a quarantined batch", try Self.batch(12, .follows(stamp: 11, envelopeHash: Self.quarantined)), Self.other, linked, "apply"),
        ]
        for (name, batch, hash, last, expected) in cases {
            let verdict = DeviceChain.check(batch, envelopeHash: hash, seq: 3, last: last, skipped: [Self.quarantined])
            switch verdict {
            case .apply(let tail):
                #expect(expected == "apply", "\(name): applied")
                #expect(tail == DeviceTail(stamp: batch.createdAt.nanoseconds, envelopeHash: hash, linked: batch.link != nil), "\(name)")
            case .repeatOfLast: #expect(expected == "repeat", "\(name): a repeat")
            case .broken(let why): #expect(expected.map { why.contains($0) } == true, "\(name): \(why)")
            }
        }
    }
}
