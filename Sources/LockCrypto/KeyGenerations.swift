import Synchronization

/// Every key generation a device holds, newest first (docs/design.md, "Key
/// generations and the roster").
///
/// New chunks, entries and checkpoints are sealed with the newest
/// generation; an envelope is opened with the generation whose key id its
/// header names. A device learns a newer generation from the keyring
/// (`adopt`), which must extend what it holds: every generation it knows,
/// at the same number, with the same master key. So a server cannot swap a
/// generation for one of its own making, nor take one away.
public final class KeyGenerations: Sendable {
    /// Newest first: index 0 is generation `count`.
    private let state: Mutex<[VaultKeys]>
    public let vaultID: VaultID

    /// `keys` newest first, the newest being generation `keys.count`.
    public init(_ keys: [VaultKeys]) {
        precondition(!keys.isEmpty && Set(keys.map(\.vaultID)).count == 1)
        vaultID = keys[0].vaultID
        state = Mutex(keys)
    }

    /// Every generation, newest first.
    public var all: [VaultKeys] { state.withLock { $0 } }
    /// The generation new envelopes are sealed with.
    public var newest: VaultKeys { state.withLock { $0[0] } }
    /// The newest generation's number (generations count from 1).
    public var generation: UInt32 { UInt32(state.withLock { $0.count }) }

    /// The generation whose key sealed `envelope` (by its header's kind and
    /// key id), or nil when this device holds no such key: a generation it
    /// has not learned yet, or an envelope that is not this vault's.
    public func keys(opening envelope: [UInt8]) -> VaultKeys? {
        guard envelope.count >= Envelope.headerSize, let kind = EnvelopeKind(rawValue: envelope[1]) else { return nil }
        let id = (2..<10).reduce(UInt64(0)) { $0 << 8 | UInt64(envelope[$1]) }
        return state.withLock { keys in
            keys.first { k in
                switch kind {
                case .chunk: k.content.id.rawValue == id
                case .journalEntry, .checkpoint: k.metadata.id.rawValue == id
                default: false
                }
            }
        }
    }

    /// Takes `newer` (every generation, newest first, as a keyring gives
    /// them) if it extends the generations held.
    /// - Returns: whether a newer generation was adopted.
    /// - Throws: `CryptoError.generationMismatch` when `newer` lacks a
    ///   generation held here or holds another key under its number.
    @discardableResult
    public func adopt(_ newer: [VaultKeys]) throws -> Bool {
        try state.withLock { held in
            guard newer.count >= held.count else {
                throw CryptoError.generationMismatch("the keyring has \(newer.count) key generations, this device holds \(held.count)")
            }
            guard newer.allSatisfy({ $0.vaultID == vaultID }) else {
                throw CryptoError.generationMismatch("the keyring holds keys of another vault")
            }
            let offset = newer.count - held.count
            for (i, k) in held.enumerated() where !k.sameMaster(as: newer[offset + i]) {
                throw CryptoError.generationMismatch("the keyring's generation \(held.count - i) is not the one this device holds")
            }
            guard offset > 0 else { return false }
            held = newer
            return true
        }
    }
}

extension VaultKeys {
    /// Whether both hold the same master key (compared by key id, which is
    /// derived from the key and reveals nothing).
    public func sameMaster(as other: VaultKeys) -> Bool { master.id == other.master.id }
}
