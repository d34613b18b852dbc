import CSodium

/// What an envelope holds. The kind is in the clear header and in the
/// associated data, so one kind can never be opened as another.
public enum EnvelopeKind: UInt8, Sendable, CaseIterable {
    /// A chunk of file content (or of a checkpoint's tree state). Content key.
    case chunk = 0x01
    /// A journal entry: a batch of operations. Metadata key.
    case journalEntry = 0x02
    /// A checkpoint record. Metadata key.
    case checkpoint = 0x03
    /// MK wrapped by the password's key-encryption key.
    case passwordSlot = 0x04
    /// MK wrapped by the recovery key's key-encryption key.
    case recoverySlot = 0x05
    /// An older generation's MK wrapped by the link key of the next one
    /// (key generations: the newest MK opens every older one).
    case generationLink = 0x06

    /// The largest plaintext an envelope of this kind may carry.
    public var maxPlaintextSize: Int {
        switch self {
        case .chunk: 4 << 20                 // the chunker's maximum chunk size
        case .journalEntry: 8 << 20          // a batch of operations
        case .checkpoint: 1 << 20            // a checkpoint record (the tree lives in chunks)
        case .passwordSlot, .recoverySlot, .generationLink: 32  // a master key
        }
    }

    /// The largest sealed size of this kind.
    public var maxSealedSize: Int { Envelope.sealedSize(plaintextSize: maxPlaintextSize) }
}

/// The authenticated-encryption envelope of lockfs, version 1.
///
/// Byte layout (docs/design.md, "Envelope"):
///
///     offset  size  field
///     0       1     version: 0x01
///     1       1     kind (EnvelopeKind)
///     2       8     key id of the sealing key (KeyID)
///     10      24    nonce: random, XChaCha20-Poly1305-IETF
///     34      P     ciphertext of  plaintext ‖ 0x80 ‖ 0x00…  where P = Padmé(len + 1)
///     34+P    16    Poly1305 tag
///
/// Associated data = bytes 0..<10 of the header ‖ the caller's context
/// (for a chunk: vault id ‖ chunk id). Binding the header means a flipped
/// version, kind or key id can never yield plaintext; binding the context
/// means an envelope cannot be replayed under another vault or id.
///
/// Padding to a Padmé length hides the exact size (≤ 12 % overhead); the
/// 0x80 marker (ISO/IEC 7816-4) makes unpadding unambiguous. A 192-bit random
/// nonce never repeats in practice, so no counter state is needed.
public enum Envelope {
    /// The only version this build writes and reads.
    public static let version: UInt8 = 0x01
    /// version + kind + key id + nonce.
    public static let headerSize = 34
    /// Poly1305 tag.
    public static let tagSize = 16
    static let nonceSize = 24
    /// Bytes of the header that are authenticated as associated data.
    static let authenticatedHeaderSize = 10
    /// The smallest envelope: an empty plaintext pads to one byte.
    public static let minimumSize = headerSize + 1 + tagSize

    /// The sealed size of a plaintext of `plaintextSize` bytes.
    public static func sealedSize(plaintextSize: Int) -> Int {
        headerSize + Padme.paddedLength(plaintextSize + 1) + tagSize
    }

    /// Seals `plaintext` under `key`.
    ///
    /// - Parameters:
    ///   - context: bytes the envelope is bound to (not stored in it).
    ///   - nonce: tests pass a fixed nonce for golden vectors; otherwise random.
    /// - Throws: `CryptoError.tooLarge` past the kind's plaintext limit.
    public static func seal<P>(
        _ plaintext: UnsafeRawBufferPointer, kind: EnvelopeKind, key: SecretKey<P>,
        context: some ContiguousBytes, nonce: [UInt8]? = nil
    ) throws -> [UInt8] {
        _ = Sodium.ready
        guard plaintext.count <= kind.maxPlaintextSize else {
            throw CryptoError.tooLarge(size: plaintext.count, limit: kind.maxPlaintextSize)
        }
        let padded = Padme.paddedLength(plaintext.count + 1)
        let total = headerSize + padded + tagSize
        return [UInt8](unsafeUninitializedCapacity: total) { out, initialized in
            let base = UnsafeMutableRawPointer(out.baseAddress!)
            base.storeBytes(of: version, as: UInt8.self)
            base.storeBytes(of: kind.rawValue, toByteOffset: 1, as: UInt8.self)
            for (i, b) in key.id.bytes.enumerated() { base.storeBytes(of: b, toByteOffset: 2 + i, as: UInt8.self) }
            let noncePtr = base + authenticatedHeaderSize
            if let nonce {
                precondition(nonce.count == nonceSize)
                nonce.withUnsafeBytes { noncePtr.copyMemory(from: $0.baseAddress!, byteCount: nonceSize) }
            } else {
                randombytes_buf(noncePtr, nonceSize)
            }
            let body = base + headerSize
            if plaintext.count > 0 { body.copyMemory(from: plaintext.baseAddress!, byteCount: plaintext.count) }
            body.storeBytes(of: 0x80, toByteOffset: plaintext.count, as: UInt8.self)
            (body + plaintext.count + 1).initializeMemory(as: UInt8.self, repeating: 0, count: padded - plaintext.count - 1)
            withAssociatedData(header: UnsafeRawBufferPointer(start: base, count: authenticatedHeaderSize), context: context) { ad in
                key.withUnsafeBytes { k in
                    _ = crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
                        body.assumingMemoryBound(to: UInt8.self),
                        (body + padded).assumingMemoryBound(to: UInt8.self), nil,
                        body.assumingMemoryBound(to: UInt8.self), UInt64(padded),
                        ad.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(ad.count),
                        nil, noncePtr.assumingMemoryBound(to: UInt8.self),
                        k.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
            initialized = total
        }
    }

    /// Convenience for array plaintexts.
    public static func seal<P>(
        _ plaintext: [UInt8], kind: EnvelopeKind, key: SecretKey<P>,
        context: some ContiguousBytes, nonce: [UInt8]? = nil
    ) throws -> [UInt8] {
        try plaintext.withUnsafeBytes { try seal($0, kind: kind, key: key, context: context, nonce: nonce) }
    }

    /// Checks the framing of `sealed` without a key: size, version, kind.
    ///
    /// - Throws: `truncated`, `tooLarge`, `invalidLength`, `unsupportedVersion`, `wrongKind`.
    public static func validateFraming(_ sealed: UnsafeRawBufferPointer, kind: EnvelopeKind) throws {
        guard sealed.count >= minimumSize else {
            throw CryptoError.truncated(size: sealed.count, minimum: minimumSize)
        }
        guard sealed.count <= kind.maxSealedSize else {
            throw CryptoError.tooLarge(size: sealed.count, limit: kind.maxSealedSize)
        }
        guard sealed[0] == version else { throw CryptoError.unsupportedVersion(sealed[0]) }
        guard sealed[1] == kind.rawValue else {
            throw CryptoError.wrongKind(expected: kind.rawValue, found: sealed[1])
        }
        guard Padme.isPadded(sealed.count - headerSize - tagSize) else {
            throw CryptoError.invalidLength(size: sealed.count)
        }
    }

    /// Opens `sealed`, returning the plaintext.
    ///
    /// Checks run in this order, each with its own error: size
    /// (`truncated`, `tooLarge`, `invalidLength`), `unsupportedVersion`,
    /// `wrongKind`, `wrongKey` (key id), `authenticationFailed` (tag), and
    /// `invalidPadding`. Nothing is returned unless the tag verifies.
    public static func open<P>(
        _ sealed: UnsafeRawBufferPointer, kind: EnvelopeKind, key: SecretKey<P>,
        context: some ContiguousBytes
    ) throws -> [UInt8] {
        _ = Sodium.ready
        try validateFraming(sealed, kind: kind)
        let foundKeyID = (2..<10).reduce(UInt64(0)) { $0 << 8 | UInt64(sealed[$1]) }
        guard foundKeyID == key.id.rawValue else { throw CryptoError.wrongKey }
        let padded = sealed.count - headerSize - tagSize
        let base = sealed.baseAddress!
        var plain = [UInt8](unsafeUninitializedCapacity: padded) { out, initialized in
            let status = withAssociatedData(
                header: UnsafeRawBufferPointer(start: base, count: authenticatedHeaderSize), context: context
            ) { ad in
                key.withUnsafeBytes { k in
                    crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
                        out.baseAddress!, nil,
                        (base + headerSize).assumingMemoryBound(to: UInt8.self), UInt64(padded),
                        (base + headerSize + padded).assumingMemoryBound(to: UInt8.self),
                        ad.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(ad.count),
                        (base + authenticatedHeaderSize).assumingMemoryBound(to: UInt8.self),
                        k.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
            if status == 0 {
                initialized = padded
            } else {
                initialized = 0
            }
        }
        guard plain.count == padded else { throw CryptoError.authenticationFailed }
        // Unpad: zeros, then the 0x80 marker.
        var end = plain.count - 1
        while end >= 0 && plain[end] == 0 { end -= 1 }
        guard end >= 0, plain[end] == 0x80, Padme.paddedLength(end + 1) == padded else {
            wipe(&plain)
            throw CryptoError.invalidPadding
        }
        plain.removeLast(plain.count - end)
        return plain
    }

    /// Convenience for array envelopes.
    public static func open<P>(
        _ sealed: [UInt8], kind: EnvelopeKind, key: SecretKey<P>, context: some ContiguousBytes
    ) throws -> [UInt8] {
        try sealed.withUnsafeBytes { try open($0, kind: kind, key: key, context: context) }
    }

    /// Associated data: the authenticated header bytes followed by `context`.
    private static func withAssociatedData<R>(
        header: UnsafeRawBufferPointer, context: some ContiguousBytes,
        _ body: (UnsafeRawBufferPointer) -> R
    ) -> R {
        context.withUnsafeBytes { ctx in
            withUnsafeTemporaryAllocation(byteCount: header.count + ctx.count, alignment: 1) { ad in
                ad.copyMemory(from: header)
                if ctx.count > 0 {
                    UnsafeMutableRawBufferPointer(rebasing: ad[header.count...]).copyMemory(from: ctx)
                }
                return body(UnsafeRawBufferPointer(ad))
            }
        }
    }
}
