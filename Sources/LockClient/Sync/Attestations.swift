import Foundation
import LockCrypto
import LockWire

/// When a device attests the head it verified, and which devices have gone
/// silent (docs/design.md, "Attestations"). Pure, table-tested
/// (AttestationTests).
///
/// Every entry already attests its base: the (seq, head) its writer had
/// verified, signed. A device that only reads never writes one, so a server
/// could keep it on a history of its own unseen; and a device that stops
/// hearing from another cannot tell "offline" from "hidden". So a device
/// that applied other devices' changes and wrote nothing on top attests the
/// head it reached (an entry with no operation) after `after`, and a
/// running device that wrote nothing for `heartbeat` attests anyway.
/// Attestations never call for attestations (no echo between devices).
public struct AttestationPolicy: Sendable {
    public var after: Duration
    public var heartbeat: Duration

    public init(after: Duration, heartbeat: Duration) {
        self.after = after
        self.heartbeat = heartbeat
    }

    /// Whether to attest now.
    /// - Parameters:
    ///   - wantedSince: when this device applied another device's change that
    ///     no batch of its own is based on yet (nil: none).
    ///   - lastSealed: when it last sealed a batch (or started).
    ///   - idle: nothing queued or in flight, and no alarm.
    public func isDue(now: ContinuousClock.Instant, wantedSince: ContinuousClock.Instant?,
                      lastSealed: ContinuousClock.Instant, idle: Bool) -> Bool {
        guard idle else { return false }
        if let wantedSince, now - wantedSince >= after { return true }
        return now - lastSealed >= heartbeat
    }

    /// The devices of `roster` (the server's list; not this one) that the
    /// journal has not heard from for longer than `limit`: their last batch
    /// (`tails`), or their enrolment if they never wrote. Each as "name
    /// (N days)", oldest first.
    public static func silentDevices(roster: [DeviceInfo], tails: [DeviceID: DeviceTail], now: Date, limit: Duration) -> [String] {
        let limitSeconds = Double(limit.components.seconds) + Double(limit.components.attoseconds) / 1e18
        var silent: [(TimeInterval, String)] = []
        for d in roster where !d.current {
            let heard = DeviceID(hex: d.id).flatMap { tails[$0] }.map { Double($0.stamp) / 1e9 } ?? d.createdAt
            // The server's times are not trusted to be sane: at most a century of silence.
            let quiet = min(now.timeIntervalSince1970 - heard, 100 * 365 * 86_400)
            guard quiet.isFinite, quiet > limitSeconds else { continue }
            let days = Int(quiet / 86_400)
            let age = days >= 1 ? "\(days) day\(days == 1 ? "" : "s")" : "\(max(1, Int(quiet / 3600))) h"
            silent.append((quiet, "\(d.name) (\(age))"))
        }
        return silent.sorted { $0.0 > $1.0 }.map(\.1)
    }
}

/// A short form of a chain head that people can read out and compare
/// between devices at the same journal entry: the first 8 bytes, in groups.
public func headFingerprint(_ head: ChainHead) -> String {
    let hex = head.hex.prefix(16)
    return stride(from: 0, to: hex.count, by: 4).map { i in
        String(hex[hex.index(hex.startIndex, offsetBy: i)..<hex.index(hex.startIndex, offsetBy: i + 4)])
    }.joined(separator: " ")
}
