import LockCrypto
import LockWire

/// The last batch of a device that this device applied: where that
/// device's own chain stands (docs/design.md, "Device chains").
public struct DeviceTail: Sendable, Equatable {
    /// Its createdAt (ns): stamps of one device only grow.
    public var stamp: Int64
    /// `BatchLink.envelopeHash` of its entry; nil for one applied before
    /// lockfs 0.3 kept it.
    public var envelopeHash: [UInt8]?
    /// Whether it was linked (batch version 3): from then on every batch of
    /// that device names its previous one.
    public var linked: Bool

    public init(stamp: Int64, envelopeHash: [UInt8]?, linked: Bool) {
        self.stamp = stamp
        self.envelopeHash = envelopeHash
        self.linked = linked
    }
}

/// The check of one batch against its device's chain: a pure function,
/// table-tested (DeviceChainTests).
///
/// A device sends its entries one after the other, each after the server
/// acknowledged the one before, and a retried append lands as an exact
/// copy right after the first. So a faithful server shows every device's
/// batches in the order they were made, each naming the one before, with at
/// most exact repeats of the last. Anything else means the server dropped,
/// replayed or reordered that device's entries, even when it recomputed the
/// journal's hash chain around the change.
public enum DeviceChain {
    public enum Verdict: Equatable, Sendable {
        /// Apply it; the device's chain now ends there.
        case apply(DeviceTail)
        /// An exact copy of the device's last batch (a retried append that
        /// landed twice): skip it.
        case repeatOfLast
        /// What a faithful server cannot show: the integrity alarm.
        case broken(String)
    }

    /// The verdict on `batch`, whose entry's envelope hashes to
    /// `envelopeHash`, found at `seq`, given the device's chain so far.
    /// - Parameter skipped: envelope hashes of entries `lockfs repair`
    ///   quarantined: a batch may follow one of those (it never opened here).
    public static func check(_ batch: OperationBatch, envelopeHash: [UInt8], seq: UInt64, last: DeviceTail?,
                             skipped: Set<[UInt8]> = []) -> Verdict {
        let stamp = batch.createdAt.nanoseconds
        let who = "device \(batch.device.hex.prefix(8))"
        if let last, stamp <= last.stamp {
            if stamp == last.stamp, last.envelopeHash == nil || last.envelopeHash == envelopeHash { return .repeatOfLast }
            return .broken("journal entry \(seq) goes back to an earlier batch of \(who) than the last one seen (and is not an exact repeat of it): the server replayed or reordered that device's entries")
        }
        let tail = DeviceTail(stamp: stamp, envelopeHash: envelopeHash, linked: batch.link != nil)
        switch batch.link {
        case nil:
            if last?.linked == true {
                return .broken("journal entry \(seq) is an unlinked batch of \(who), which links its batches: an old entry was replayed")
            }
        case .first:
            if last?.linked == true {
                return .broken("journal entry \(seq) starts a new chain of \(who), which had one: entries of that device were dropped")
            }
        case .follows(_, let hash) where skipped.contains(hash):
            break
        case .follows(let previous, let hash):
            guard let last, last.stamp == previous, last.envelopeHash.map({ $0 == hash }) ?? true else {
                return .broken("journal entry \(seq) follows a batch of \(who) that this device never saw: the server dropped that device's entry, or showed it to other devices only")
            }
        }
        return .apply(tail)
    }
}
