import Testing
import LockTesting
@testable import LockCrypto

/// Fixed keys for deterministic tests: bytes `seed, seed+1, …`.
func fixedKey<P>(_ seed: UInt8) -> SecretKey<P> {
    let bytes = (0..<32).map { seed &+ UInt8($0) }
    return try! bytes.withUnsafeBytes { try SecretKey<P>(copying: $0) }
}

func fixedVault() -> VaultKeys {
    VaultKeys(vaultID: try! VaultID(bytes: Array(0xA0...0xAF)), master: fixedKey(0x00))
}

let fixedNonce = Array(UInt8(0x10)...UInt8(0x27))

@Suite struct EnvelopeTests {
    let keys = fixedVault()

    @Test(arguments: [0, 1, 2, 15, 100, 4096, 1 << 20, 4 << 20])
    func chunkRoundTrip(size: Int) throws {
        var rng = SeededGenerator(seed: UInt64(size))
        let plain = rng.bytes(size)
        let sealed = try plain.withUnsafeBytes { try keys.sealChunk($0) }
        #expect(sealed.bytes.count == Envelope.sealedSize(plaintextSize: size))
        #expect(sealed.bytes.count - 50 == Padme.paddedLength(size + 1))
        #expect(try keys.openChunk(sealed) == plain)
    }

    @Test func sealingTwiceUsesFreshNonces() throws {
        let a = try [UInt8](repeating: 7, count: 64).withUnsafeBytes { try keys.sealChunk($0) }
        let b = try [UInt8](repeating: 7, count: 64).withUnsafeBytes { try keys.sealChunk($0) }
        #expect(a.id == b.id)
        #expect(a.bytes != b.bytes)
    }

    /// Every single-byte change of an envelope is rejected with the error of
    /// the field it hits: version, kind, key id, or the tag for the rest.
    @Test func everySingleByteFlipIsRejected() throws {
        let plain = Array("a short chunk of file content, 48 bytes long...".utf8)
        let sealed = try keys.sealChunk(plain, nonce: fixedNonce)
        for position in 0..<sealed.bytes.count {
            for mask: UInt8 in [0x01, 0x80, 0xFF] {
                var bytes = sealed.bytes
                bytes[position] ^= mask
                let expected: CryptoError = switch position {
                case 0: .unsupportedVersion(bytes[0])
                case 1: .wrongKind(expected: EnvelopeKind.chunk.rawValue, found: bytes[1])
                case 2..<10: .wrongKey
                default: .authenticationFailed
                }
                #expect(throws: expected, "byte \(position) ^ \(mask)") {
                    try keys.openChunk(SealedChunk(id: sealed.id, bytes: bytes))
                }
            }
        }
    }

    @Test func everyTruncationIsRejected() throws {
        let sealed = try keys.sealChunk(Array(repeating: 0x42, count: 300), nonce: fixedNonce)
        for length in 0..<sealed.bytes.count {
            let cut = Array(sealed.bytes.prefix(length))
            do {
                _ = try keys.openChunk(SealedChunk(id: sealed.id, bytes: cut))
                Issue.record("a blob cut to \(length) bytes opened")
            } catch let error as CryptoError {
                let ok: Bool = switch error {
                case .truncated: length < Envelope.minimumSize
                case .invalidLength, .authenticationFailed: length >= Envelope.minimumSize
                default: false
                }
                #expect(ok, "cut to \(length): unexpected \(error)")
            }
        }
    }

    @Test func everyExtensionIsRejected() throws {
        let sealed = try keys.sealChunk(Array(repeating: 0x42, count: 300), nonce: fixedNonce)
        for extra in 1...400 {
            let long = sealed.bytes + [UInt8](repeating: 0, count: extra)
            #expect(throws: CryptoError.self) { try keys.openChunk(SealedChunk(id: sealed.id, bytes: long)) }
        }
        // Past the kind's limit, the size alone rejects it, before any crypto.
        let huge = [UInt8](repeating: 1, count: EnvelopeKind.chunk.maxSealedSize + 1)
        #expect(throws: CryptoError.tooLarge(size: huge.count, limit: EnvelopeKind.chunk.maxSealedSize)) {
            try keys.openChunk(SealedChunk(id: sealed.id, bytes: huge))
        }
    }

    @Test func plaintextOverTheLimitIsRefused() {
        let big = [UInt8](repeating: 0, count: (4 << 20) + 1)
        #expect(throws: CryptoError.tooLarge(size: big.count, limit: 4 << 20)) {
            try big.withUnsafeBytes { try keys.sealChunk($0) }
        }
    }

    @Test func anotherVaultsKeyIsAWrongKey() throws {
        let sealed = try keys.sealChunk(Array("hello".utf8), nonce: fixedNonce)
        let other = VaultKeys(vaultID: keys.vaultID, master: fixedKey(0x55))
        #expect(throws: CryptoError.wrongKey) { try other.openChunk(sealed) }
    }

    @Test func aSwappedChunkIsRejected() throws {
        let a = try keys.sealChunk(Array("chunk A".utf8), nonce: fixedNonce)
        let b = try keys.sealChunk(Array("chunk B".utf8), nonce: fixedNonce)
        // The server answers a request for A with B's bytes: the AD (chunk id) differs.
        #expect(throws: CryptoError.authenticationFailed) { try keys.openChunk(SealedChunk(id: a.id, bytes: b.bytes)) }
    }

    @Test func anotherVaultIDIsRejected() throws {
        let sealed = try keys.sealChunk(Array("hello".utf8), nonce: fixedNonce)
        let moved = VaultKeys(vaultID: try VaultID(bytes: Array(0xB0...0xBF)), master: fixedKey(0x00))
        #expect(throws: CryptoError.authenticationFailed) { try moved.openChunk(sealed) }
    }

    @Test func plaintextNotMatchingItsIDIsRejected() throws {
        // Only a holder of the content key can make this (a bug or mixed-up keys),
        // but the opener must still never return bytes under the wrong id.
        let claimed = keys.chunkID(of: UnsafeRawBufferPointer(start: nil, count: 0))
        let sealed = try Envelope.seal(Array("not empty".utf8), kind: .chunk, key: keys.content,
                                       context: keys.vaultID.bytes + claimed.bytes)
        #expect(throws: CryptoError.chunkIDMismatch) { try keys.openChunk(SealedChunk(id: claimed, bytes: sealed)) }
    }

    @Test func kindsCannotBeConfused() throws {
        let head = ChainHead.genesis(of: keys.vaultID)
        let entry = try keys.sealEntry(Array("ops".utf8), baseSeq: 0, baseHead: head)
        #expect(throws: CryptoError.wrongKind(expected: EnvelopeKind.checkpoint.rawValue, found: EnvelopeKind.journalEntry.rawValue)) {
            try keys.openCheckpoint(entry, seq: 0, head: head)
        }
        #expect(try keys.openEntry(entry, baseSeq: 0, baseHead: head) == Array("ops".utf8))
        // An entry replayed at another chain position does not open.
        #expect(throws: CryptoError.authenticationFailed) { try keys.openEntry(entry, baseSeq: 1, baseHead: head) }
        #expect(throws: CryptoError.authenticationFailed) {
            try keys.openEntry(entry, baseSeq: 0, baseHead: head.next(seq: 1, entry: [1]))
        }
    }

    @Test func unknownVersionIsReported() throws {
        var sealed = try keys.sealChunk(Array("v".utf8), nonce: fixedNonce).bytes
        sealed[0] = 0x02
        #expect(throws: CryptoError.unsupportedVersion(2)) {
            try Envelope.open(sealed, kind: .chunk, key: keys.content, context: [UInt8]())
        }
    }

    @Test func keysPrintRedacted() {
        let key: SecretKey<KeyPurposes.Content> = fixedKey(1)
        #expect(!key.description.contains("0102"))
        #expect(key.description.contains("redacted"))
    }
}
