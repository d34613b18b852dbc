import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// The check every client makes before it applies an entry (issue 13):
/// table-tested, then played by a hostile server over real HTTP.
@Suite struct EntryAuthorityTests {
    static let keys = VaultKeys.generate()
    static let laptop = DeviceIdentity.generate(), intruder = DeviceIdentity.generate()
    static let laptopID = DeviceID.random()

    static func entry() throws -> JournalEntry {
        let op = Operation.create(node: .random(), parent: .root, name: try Name("a"), revision: .random(),
                                  attributes: try NodeAttributes(mode: 0o644, mtime: Timestamp(nanoseconds: 0)), content: .file(.empty))
        let batch = try OperationBatch(device: laptopID, createdAt: Timestamp(nanoseconds: 1), operations: [op])
        return try JournalEntry.seal(batch, keys: keys, baseSeq: .start, baseHead: .genesis(of: keys.vaultID))
    }

    @Test func verdicts() throws {
        let unsigned = try Self.entry()
        let signed = unsigned.signed(by: Self.laptop, device: Self.laptopID, vault: Self.keys.vaultID)
        var flipped = signed.signer!.signature
        flipped[10] ^= 0x01
        let badSignature = try JournalEntry(baseSeq: signed.baseSeq, baseHead: signed.baseHead, signer: EntrySigner(
            device: Self.laptopID, publicKey: Self.laptop.signingPublicKey, signature: flipped), sealedBatch: signed.sealedBatch)
        let otherKey = unsigned.signed(by: Self.intruder, device: Self.laptopID, vault: Self.keys.vaultID)
        let otherVault = unsigned.signed(by: Self.laptop, device: Self.laptopID, vault: .random())
        let bound = [Self.laptopID: Self.laptop.signingPublicKey]
        let cases: [(String, JournalEntry, [DeviceID: [UInt8]], Bool, [UInt8]?)] = [
            ("unsigned (lockfs 0.1)", unsigned, bound, true, nil),
            ("first signed entry binds", signed, [:], true, Self.laptop.signingPublicKey),
            ("bound key", signed, bound, true, nil),
            ("another key for a bound device", otherKey, bound, false, nil),
            ("a flipped signature bit", badSignature, [:], false, nil),
            ("signed for another vault", otherVault, [:], false, nil),
        ]
        for (what, entry, signers, applies, binds) in cases {
            let verdict = EntryAuthority.check(entry, vault: Self.keys.vaultID, signers: signers)
            switch verdict {
            case .apply(let device, let bind):
                #expect(applies && bind == binds && device == entry.signer?.device, "\(what): \(verdict)")
            case .ignore:
                #expect(!applies, "\(what): \(verdict)")
            }
        }
    }
}

/// Upgrading from lockfs 0.1 (review of issue 13): 0.1 raised the integrity
/// alarm at the first signed entry it met (it could not read version 2). The
/// alarm is persisted; 0.2 must not stay stuck on it, and must keep any
/// other alarm.
@Suite struct UpgradeAlarmTests {
    @Test func theAlarmOfAnOldClientOnASignedEntryIsClearedAndNoOther() throws {
        let (server, devices) = try makeDevices(1)
        _ = server
        let d = devices[0]
        let old = #"the server's answer was malformed: entry page: unsupportedVersion(record: "journal entry", found: 2)"#
        try d.engine.index.setMeta("alarm", Array(old.utf8))
        #expect(try d.reopened().engine.status().integrityAlarm == nil)
        let real = "journal entry 3 failed authentication (authenticationFailed)"
        try d.engine.index.setMeta("alarm", Array(real.utf8))
        #expect(try d.reopened().engine.status().integrityAlarm == real)
    }
}
