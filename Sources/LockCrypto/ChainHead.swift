/// The hash chain over a vault's journal.
///
///     h(0) = BLAKE2b-256("lockfs journal genesis v1" ‖ vault id)
///     h(n) = BLAKE2b-256(h(n-1) ‖ u64 BE n ‖ entry n's bytes as stored)
///
/// The server computes it on append; every client recomputes it on pull from
/// the last head it trusts, so a dropped, reordered, altered or rolled-back
/// entry breaks the chain. Binding n makes renumbering detectable too.
public struct ChainHead: BytesIdentifier {
    public let storage: Bytes32
    public init(storage: Bytes32) { self.storage = storage }

    /// The head before the first entry of `vault` (sequence number 0).
    public static func genesis(of vault: VaultID) -> ChainHead {
        try! ChainHead(bytes: Hash.blake2b256(parts: [Array("lockfs journal genesis v1".utf8), vault.bytes]))
    }

    /// The head after appending `entry` as sequence number `seq`.
    public func next(seq: UInt64, entry: some ContiguousBytes) -> ChainHead {
        try! ChainHead(bytes: Hash.blake2b256(parts: [bytes, ByteOrder.bigEndian(seq), entry]))
    }
}
