import CSodium

/// Key generations (docs/design.md, "Key generations and the roster").
///
/// Generation g has its own master key MK_g and so its own subkeys; an
/// envelope's key id names the generation that sealed it. A new generation
/// reaches a device, the password and the recovery key as a **generation
/// seal**: `crypto_box_seal(u32 g (BE) ‖ MK_g)` to an X25519 public key
/// (112 bytes: 48 of ephemeral key and tag, 36 of plaintext). An older
/// generation stays readable through a **link**: MK_{g−1} in an envelope of
/// kind 0x06 under crypto_kdf(MK_g, id 5, "lockfsMK"), with context
/// vault id ‖ u32 (g − 1). So the newest MK opens every older one, and no
/// older one opens a newer: a device revoked at generation g keeps MK_g and
/// learns nothing of MK_{g+1}.
public enum GenerationSeal {
    /// Bytes of a generation seal.
    public static let sealedSize = Int(crypto_box_sealbytes()) + 36

    /// The X25519 public key of a 32-byte secret.
    public static func publicKey<P>(of secret: SecretKey<P>) -> [UInt8] {
        _ = Sodium.ready
        var pk = [UInt8](repeating: 0, count: 32)
        secret.withUnsafeBytes { s in _ = crypto_scalarmult_base(&pk, s.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
        return pk
    }

    /// Seals generation `generation`'s master key to `publicKey` (X25519).
    /// - Throws: `CryptoError.invalidKeySize` for a key that is not 32 bytes.
    public static func seal(_ master: SecretKey<KeyPurposes.Master>, generation: UInt32, to publicKey: [UInt8]) throws -> [UInt8] {
        _ = Sodium.ready
        guard publicKey.count == 32 else { throw CryptoError.invalidKeySize(publicKey.count) }
        var plain = ByteOrder.bigEndian32(generation) + master.withUnsafeBytes { Array($0) }
        defer { wipe(&plain) }
        var out = [UInt8](repeating: 0, count: sealedSize)
        guard crypto_box_seal(&out, plain, UInt64(plain.count), publicKey) == 0 else {
            throw CryptoError.invalidKeySize(publicKey.count)
        }
        return out
    }

    /// Opens a generation seal with the X25519 secret it was sealed to.
    /// - Returns: the generation number and its master key.
    /// - Throws: `CryptoError.authenticationFailed` for a seal to another key,
    ///   or altered bytes.
    public static func open<P>(_ sealed: [UInt8], secret: SecretKey<P>) throws -> (generation: UInt32, master: SecretKey<KeyPurposes.Master>) {
        _ = Sodium.ready
        guard sealed.count == sealedSize else { throw CryptoError.authenticationFailed }
        let pk = publicKey(of: secret)
        var plain = [UInt8](repeating: 0, count: 36)
        defer { wipe(&plain) }
        let ok = secret.withUnsafeBytes { s in
            crypto_box_seal_open(&plain, sealed, UInt64(sealed.count), pk, s.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 0
        }
        guard ok else { throw CryptoError.authenticationFailed }
        let generation = plain.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let master = try plain[4...].withUnsafeBytes { try SecretKey<KeyPurposes.Master>(copying: $0) }
        return (generation, master)
    }
}

extension VaultKeys {
    /// The key that wraps the previous generation's MK (crypto_kdf id 5).
    var linkKey: SecretKey<KeyPurposes.GenerationLink> { master.derive(id: 5, context: .master) }

    /// The link from this generation (`generation`) to `older`, generation
    /// `generation − 1`: older's MK sealed under this one's link key.
    public func link(to older: VaultKeys, generation: UInt32, nonce: [UInt8]? = nil) throws -> [UInt8] {
        precondition(generation >= 2 && older.vaultID == vaultID)
        return try older.master.withUnsafeBytes {
            try Envelope.seal($0, kind: .generationLink, key: linkKey,
                              context: vaultID.bytes + ByteOrder.bigEndian32(generation - 1), nonce: nonce)
        }
    }

    /// Opens the link from this generation (`generation`) to the one before.
    /// - Throws: the envelope errors (`wrongKey` for a link of another generation).
    public func openLink(_ sealed: [UInt8], generation: UInt32) throws -> VaultKeys {
        var mk = try Envelope.open(sealed, kind: .generationLink, key: linkKey,
                                   context: vaultID.bytes + ByteOrder.bigEndian32(generation - 1))
        defer { wipe(&mk) }
        return VaultKeys(vaultID: vaultID, master: try mk.withUnsafeBytes { try SecretKey(copying: $0) })
    }
}

extension ByteOrder {
    /// The 4 bytes of `value`, most significant first.
    public static func bigEndian32(_ value: UInt32) -> [UInt8] {
        (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32($0))) }
    }
}

extension DeviceIdentity {
    static let boxKeyDomain = Array("lockfs box key v1".utf8)

    /// This device's X25519 key signed by its Ed25519 key
    /// (`"lockfs box key v1" ‖ box key`): a rotating client wraps a new
    /// generation only to box keys signed by a signing key the journal bound
    /// to a device (a server cannot add one, nor swap a device's box key).
    /// Made at enrolment, before the device knows its vault id, so it names
    /// no vault: the signing key is made for one enrolment and binds it.
    public func boxKeySignature() -> [UInt8] {
        sign(Self.boxKeyDomain + boxPublicKey)
    }

    /// Whether `signature` is `signingKey`'s signature of `boxKey`.
    public static func verifyBoxKey(_ boxKey: [UInt8], signature: [UInt8], signingKey: [UInt8]) -> Bool {
        boxKey.count == 32 && verify(signature, of: boxKeyDomain + boxKey, publicKey: signingKey)
    }
}
