import CSodium

/// The vault master key MK and the subkeys derived from it.
///
/// MK is 32 random bytes made once by `lockfs init`; it never leaves the
/// client unwrapped. Subkeys come from `crypto_kdf` with context "lockfsMK":
///
///     id 1  content key    seals chunks
///     id 2  metadata key   seals journal entries and checkpoints
///     id 3  chunk-id key   keys BLAKE2b-256 chunk ids
///     id 4  chunker key    derives the chunker's gear table
///
/// These numbers are part of the format and never change.
public final class VaultKeys: Sendable {
    /// Which vault these keys belong to (bound into every envelope).
    public let vaultID: VaultID
    /// The master key (needed again only to rewrap the keyring).
    public let master: SecretKey<KeyPurposes.Master>
    public let content: SecretKey<KeyPurposes.Content>
    public let metadata: SecretKey<KeyPurposes.Metadata>
    public let chunkID: SecretKey<KeyPurposes.ChunkID>
    public let chunker: SecretKey<KeyPurposes.Chunker>

    /// Derives the subkeys of `master` for the vault `vaultID`.
    public init(vaultID: VaultID, master: SecretKey<KeyPurposes.Master>) {
        self.vaultID = vaultID
        self.master = master
        content = master.derive(id: 1, context: .master)
        metadata = master.derive(id: 2, context: .master)
        chunkID = master.derive(id: 3, context: .master)
        chunker = master.derive(id: 4, context: .master)
    }

    /// A new vault: a random vault id and a random master key.
    public static func generate() -> VaultKeys {
        VaultKeys(vaultID: .random(), master: .random())
    }

    // MARK: Chunks

    /// The id of a chunk: BLAKE2b-256 keyed with the chunk-id key.
    ///
    /// Keyed, so the server cannot test whether a vault holds a known file,
    /// and equal plaintexts inside one vault share one id (dedup).
    public func chunkID(of plaintext: UnsafeRawBufferPointer) -> ChunkID {
        chunkID.withUnsafeBytes { key in
            try! ChunkID(bytes: Hash.blake2b256(plaintext, key: key))
        }
    }

    /// Seals a chunk: computes its id and its envelope (context vault id ‖ chunk id).
    /// - Throws: `CryptoError.tooLarge` past 4 MiB.
    public func sealChunk(_ plaintext: UnsafeRawBufferPointer) throws -> SealedChunk {
        let id = chunkID(of: plaintext)
        let bytes = try Envelope.seal(plaintext, kind: .chunk, key: content, context: chunkContext(id))
        return SealedChunk(id: id, bytes: bytes)
    }

    /// Seals a chunk with a given nonce: golden vectors only.
    func sealChunk(_ plaintext: [UInt8], nonce: [UInt8]) throws -> SealedChunk {
        try plaintext.withUnsafeBytes { p in
            let id = chunkID(of: p)
            return SealedChunk(id: id, bytes: try Envelope.seal(p, kind: .chunk, key: content, context: chunkContext(id), nonce: nonce))
        }
    }

    /// Opens a chunk and checks that its plaintext hashes to its id.
    ///
    /// - Throws: the envelope errors of `Envelope.open`, then
    ///   `CryptoError.chunkIDMismatch` if the plaintext is not that chunk's.
    public func openChunk(_ sealed: SealedChunk) throws -> [UInt8] {
        let plain = try sealed.bytes.withUnsafeBytes {
            try Envelope.open($0, kind: .chunk, key: content, context: chunkContext(sealed.id))
        }
        guard plain.withUnsafeBytes({ chunkID(of: $0) }) == sealed.id else {
            throw CryptoError.chunkIDMismatch
        }
        return plain
    }

    private func chunkContext(_ id: ChunkID) -> [UInt8] { vaultID.bytes + id.bytes }

    // MARK: Journal entries and checkpoints

    /// Seals a journal entry's operation batch, bound to the chain position
    /// its writer had verified: context = vault id ‖ base seq (u64 BE) ‖ base head.
    public func sealEntry(_ batch: [UInt8], baseSeq: UInt64, baseHead: ChainHead, nonce: [UInt8]? = nil) throws -> [UInt8] {
        try Envelope.seal(batch, kind: .journalEntry, key: metadata,
                          context: positionContext(baseSeq, baseHead), nonce: nonce)
    }

    /// Opens a journal entry sealed by `sealEntry` for the same position.
    public func openEntry(_ sealed: [UInt8], baseSeq: UInt64, baseHead: ChainHead) throws -> [UInt8] {
        try Envelope.open(sealed, kind: .journalEntry, key: metadata, context: positionContext(baseSeq, baseHead))
    }

    /// Seals a checkpoint record for the state at `seq`, whose chain head is `head`.
    public func sealCheckpoint(_ record: [UInt8], seq: UInt64, head: ChainHead, nonce: [UInt8]? = nil) throws -> [UInt8] {
        try Envelope.seal(record, kind: .checkpoint, key: metadata,
                          context: positionContext(seq, head), nonce: nonce)
    }

    /// Opens a checkpoint record sealed for `seq` and `head`.
    public func openCheckpoint(_ sealed: [UInt8], seq: UInt64, head: ChainHead) throws -> [UInt8] {
        try Envelope.open(sealed, kind: .checkpoint, key: metadata, context: positionContext(seq, head))
    }

    private func positionContext(_ seq: UInt64, _ head: ChainHead) -> [UInt8] {
        vaultID.bytes + ByteOrder.bigEndian(seq) + head.bytes
    }

    // MARK: Chunker

    /// The 256-entry gear table of the chunker, derived from the chunker key.
    ///
    /// Entry i is bytes 8(i mod 8)..<8(i mod 8)+8, little-endian, of
    /// BLAKE2b-512(key: chunker key, message: "lockfs gear v1" ‖ u8(i / 8)).
    /// Secret gear values keep chunk boundaries (and so chunk sizes) from
    /// fingerprinting known files (docs/security.md, "Chunk sizes").
    public func gearTable() -> [UInt64] {
        var table = [UInt64]()
        table.reserveCapacity(256)
        chunker.withUnsafeBytes { key in
            for block in 0..<32 {
                var out = [UInt8](repeating: 0, count: 64)
                let message = Array("lockfs gear v1".utf8) + [UInt8(block)]
                _ = crypto_generichash(&out, 64, message, UInt64(message.count),
                                       key.baseAddress!.assumingMemoryBound(to: UInt8.self), key.count)
                for j in 0..<8 {
                    table.append((0..<8).reduce(UInt64(0)) { $0 | UInt64(out[8 * j + $1]) << (8 * UInt64($1)) })
                }
            }
        }
        return table
    }
}

/// A chunk as stored on the server: its id and its envelope.
public struct SealedChunk: Sendable, Hashable {
    public let id: ChunkID
    public let bytes: [UInt8]
    public init(id: ChunkID, bytes: [UInt8]) {
        self.id = id
        self.bytes = bytes
    }
}

/// Big-endian integer bytes.
public enum ByteOrder {
    /// The 8 bytes of `value`, most significant first.
    public static func bigEndian(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
    }
}
