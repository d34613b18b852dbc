import LockCrypto
import LockWire

/// Who may have written a journal entry: the check every client makes
/// before it applies one (docs/security.md, "Device keys"). Pure, so that
/// it is table-tested.
///
/// The roster is the chain's own: the first signed entry of a device binds
/// the key it carries to the device id (the server checked that key was
/// the one registered for the device, and only a holder of the vault key
/// can make an entry that opens). Every later entry signed as that device
/// must carry the same key. Each client replays the same chain, so each
/// binds the same keys.
public enum EntryAuthority {
    public enum Verdict: Equatable, Sendable {
        /// Apply it as written by `device` (nil: unsigned, lockfs 0.1, the
        /// device named inside the batch); `bind` is a key to record.
        case apply(device: DeviceID?, bind: [UInt8]?)
        /// Skip it (the chain still advances over it): the server accepted
        /// what a faithful server refuses.
        case ignore(String)
    }

    /// The verdict on `entry` of vault `vault`, given the keys bound so far.
    public static func check(_ entry: JournalEntry, vault: VaultID, signers: [DeviceID: [UInt8]]) -> Verdict {
        guard let signer = entry.signer else { return .apply(device: nil, bind: nil) }
        guard entry.hasValidSignature(vault: vault) else {
            return .ignore("its signature does not verify")
        }
        switch signers[signer.device] {
        case nil: return .apply(device: signer.device, bind: signer.publicKey)
        case let key? where key == signer.publicKey: return .apply(device: signer.device, bind: nil)
        default: return .ignore("it is signed as device \(signer.device.hex.prefix(8)) with another key than that device's")
        }
    }
}
