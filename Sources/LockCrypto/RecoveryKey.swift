/// A recovery key: 256 random bits a person writes down at `lockfs init`.
///
/// Printed form: 56 characters of Crockford base32 in 14 groups of 4,
/// encoding 35 bytes:
///
///     0   32  secret (random)
///     32  3   checksum = BLAKE2b-256("lockfs recovery key v1" ‖ secret)[0..<3]
///
/// The 24-bit checksum catches a typo with probability 1 − 2⁻²⁴ before any
/// slow work. Parsing ignores case, spaces and hyphens, and reads O as 0 and
/// I or L as 1 (Crockford's rules). The wrapping key is
/// crypto_kdf(key: secret, id 1, context "lockfsRK"); no password stretching
/// is needed for 256 random bits. The recovery proof sent to the server
/// (`lockfs recover` on a machine that was never enrolled) is
/// crypto_kdf(key: secret, id 2, context "lockfsRK"): it opens nothing.
public struct RecoveryKey: Sendable, CustomStringConvertible {
    let secret: SecretKey<KeyPurposes.Recovery>

    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)
    static let characterCount = 56
    static let domain = Array("lockfs recovery key v1".utf8)

    init(secret: SecretKey<KeyPurposes.Recovery>) { self.secret = secret }

    /// A new random recovery key.
    public static func generate() -> RecoveryKey { RecoveryKey(secret: .random()) }

    /// Parses a written-down key.
    /// - Throws: `malformedRecoveryKey` (characters, length), `recoveryKeyTypo` (checksum).
    public init(parsing text: String) throws {
        var values = [UInt8]()
        for c in text.uppercased().utf8 {
            switch c {
            case UInt8(ascii: " "), UInt8(ascii: "-"), UInt8(ascii: "\t"), UInt8(ascii: "\n"): continue
            case UInt8(ascii: "O"): values.append(0)
            case UInt8(ascii: "I"), UInt8(ascii: "L"): values.append(1)
            default:
                guard let v = Self.alphabet.firstIndex(of: c) else {
                    throw CryptoError.malformedRecoveryKey("character “\(Character(Unicode.Scalar(c)))” is not used in recovery keys")
                }
                values.append(UInt8(v))
            }
        }
        guard values.count == Self.characterCount else {
            throw CryptoError.malformedRecoveryKey("a recovery key has \(Self.characterCount) characters, this has \(values.count)")
        }
        // 56 × 5 bits = 280 bits = 35 bytes.
        var bytes = [UInt8]()
        var acc: UInt32 = 0, bits = 0
        for v in values {
            acc = acc << 5 | UInt32(v)
            bits += 5
            if bits >= 8 {
                bits -= 8
                bytes.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        defer { wipe(&bytes); acc = 0 }
        let secretBytes = Array(bytes[0..<32])
        let expected = Array(Hash.blake2b256(parts: [Self.domain, secretBytes]).prefix(3))
        var copy = secretBytes
        defer { wipe(&copy) }
        guard Sodium.constantTimeEqual(expected, Array(bytes[32..<35])) else { throw CryptoError.recoveryKeyTypo }
        secret = try copy.withUnsafeBytes { try SecretKey(copying: $0) }
    }

    /// The printed form, e.g. "7K3M-…" (14 groups of 4).
    ///
    /// Show it once; it is as powerful as the password.
    public var displayString: String {
        var bytes = secret.withUnsafeBytes { Array($0) }
        defer { wipe(&bytes) }
        bytes += Hash.blake2b256(parts: [Self.domain, bytes]).prefix(3)
        var chars = [UInt8]()
        var acc: UInt32 = 0, bits = 0
        for b in bytes {
            acc = acc << 8 | UInt32(b)
            bits += 8
            while bits >= 5 {
                bits -= 5
                chars.append(Self.alphabet[Int(acc >> UInt32(bits) & 31)])
            }
        }
        var out = ""
        for (i, c) in chars.enumerated() {
            if i > 0 && i % 4 == 0 { out.append("-") }
            out.append(Character(Unicode.Scalar(c)))
        }
        return out
    }

    /// The key that wraps MK in the recovery slot.
    var keyEncryptionKey: SecretKey<KeyPurposes.KeyEncryption> { secret.derive(id: 1, context: .recovery) }

    /// The secret that proves this key to the server (registered hashed at
    /// `init`); knowing it does not help to open the recovery slot.
    public var proof: SecretKey<KeyPurposes.RecoveryProof> { secret.derive(id: 2, context: .recovery) }

    /// The X25519 secret new key generations are sealed to (crypto_kdf id 3):
    /// a rotation needs only its public half, not the recovery key.
    public var boxSecret: SecretKey<KeyPurposes.RecoveryBox> { secret.derive(id: 3, context: .recovery) }

    /// The public half of `boxSecret`, kept in the clear in the keyring.
    public var boxPublicKey: [UInt8] { GenerationSeal.publicKey(of: boxSecret) }

    public var description: String { "RecoveryKey(redacted)" }
}

/// Wrapping and unwrapping the master key in keyring slots.
///
/// A slot is an envelope (kind 0x04 password or 0x05 recovery) holding MK's
/// 32 bytes. Password slot context: vault id ‖ the 29-byte KDF parameters,
/// so a server that swaps the parameters makes the slot fail to open.
/// Recovery slot context: vault id. The envelope's key id doubles as the
/// check that tells a wrong password from a tampered slot.
extension VaultKeys {
    /// MK wrapped for `password` keys made with `parameters`.
    public func passwordSlot(_ keys: PasswordKeys, parameters: KDFParameters, nonce: [UInt8]? = nil) throws -> [UInt8] {
        try master.withUnsafeBytes {
            try Envelope.seal($0, kind: .passwordSlot, key: keys.keyEncryptionKey,
                              context: vaultID.bytes + parameters.encoded, nonce: nonce)
        }
    }

    /// MK of generation `generation` wrapped for `password` keys: as
    /// `passwordSlot(_:parameters:)` for generation 1, and with u32 g
    /// appended to the context after it (docs/design.md, keyring v2).
    public func passwordSlot(_ keys: PasswordKeys, parameters: KDFParameters, generation: UInt32, nonce: [UInt8]? = nil) throws -> [UInt8] {
        try master.withUnsafeBytes {
            try Envelope.seal($0, kind: .passwordSlot, key: keys.keyEncryptionKey,
                              context: Self.passwordContext(vaultID, parameters, generation), nonce: nonce)
        }
    }

    /// Unlocks generation `generation` from its password slot.
    /// - Throws: `wrongPassword`, `authenticationFailed` (also for a slot of another generation).
    public static func unlock(vaultID: VaultID, passwordSlot: [UInt8], parameters: KDFParameters, generation: UInt32,
                              keys: PasswordKeys) throws -> VaultKeys {
        try unwrap(slot: passwordSlot, kind: .passwordSlot, key: keys.keyEncryptionKey,
                   context: passwordContext(vaultID, parameters, generation), vaultID: vaultID, wrongKey: .wrongPassword)
    }

    static func passwordContext(_ vaultID: VaultID, _ parameters: KDFParameters, _ generation: UInt32) -> [UInt8] {
        vaultID.bytes + parameters.encoded + (generation == 1 ? [] : ByteOrder.bigEndian32(generation))
    }

    /// MK wrapped for `recovery`.
    public func recoverySlot(_ recovery: RecoveryKey, nonce: [UInt8]? = nil) throws -> [UInt8] {
        try master.withUnsafeBytes {
            try Envelope.seal($0, kind: .recoverySlot, key: recovery.keyEncryptionKey, context: vaultID.bytes, nonce: nonce)
        }
    }

    /// Unlocks a vault from its password slot.
    /// - Throws: `wrongPassword` when the keys do not match the slot;
    ///   `authenticationFailed` when the slot was altered; framing errors.
    public static func unlock(vaultID: VaultID, passwordSlot: [UInt8], parameters: KDFParameters,
                              keys: PasswordKeys) throws -> VaultKeys {
        try unwrap(slot: passwordSlot, kind: .passwordSlot, key: keys.keyEncryptionKey,
                   context: vaultID.bytes + parameters.encoded, vaultID: vaultID, wrongKey: .wrongPassword)
    }

    /// Unlocks a vault from its recovery slot.
    /// - Throws: `wrongRecoveryKey`, `authenticationFailed`, framing errors.
    public static func unlock(vaultID: VaultID, recoverySlot: [UInt8], recovery: RecoveryKey) throws -> VaultKeys {
        try unwrap(slot: recoverySlot, kind: .recoverySlot, key: recovery.keyEncryptionKey,
                   context: vaultID.bytes, vaultID: vaultID, wrongKey: .wrongRecoveryKey)
    }

    private static func unwrap(slot: [UInt8], kind: EnvelopeKind, key: SecretKey<KeyPurposes.KeyEncryption>,
                               context: [UInt8], vaultID: VaultID, wrongKey: CryptoError) throws -> VaultKeys {
        var mk: [UInt8]
        do {
            mk = try Envelope.open(slot, kind: kind, key: key, context: context)
        } catch CryptoError.wrongKey {
            throw wrongKey
        }
        defer { wipe(&mk) }
        let master = try mk.withUnsafeBytes { try SecretKey<KeyPurposes.Master>(copying: $0) }
        return VaultKeys(vaultID: vaultID, master: master)
    }
}
