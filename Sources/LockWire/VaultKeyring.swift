import LockCrypto

/// The keyring a server holds, in either version: a vault made before key
/// generations keeps a version 1 `Keyring` (generation 1) until its first
/// rotation writes a version 2 `GenerationKeyring`; `lockfs init` writes
/// version 2 from the start. Everything that reads a keyring goes through
/// this type, so both are read the same way: every way in yields every
/// generation, newest first.
public enum VaultKeyring: WireRecord {
    case v1(Keyring)
    case v2(GenerationKeyring)

    public static let wireVersion: UInt8 = GenerationKeyring.wireVersion
    public static let recordName = "keyring"

    public var vaultID: VaultID {
        switch self { case .v1(let k): k.vaultID; case .v2(let k): k.vaultID }
    }
    public var parameters: KDFParameters {
        switch self { case .v1(let k): k.parameters; case .v2(let k): k.parameters }
    }
    /// The newest generation (1 for a version 1 keyring).
    public var generation: UInt32 {
        switch self { case .v1: 1; case .v2(let k): k.generation }
    }
    /// The generation of an encoded keyring read from its header alone (1
    /// for version 1; bytes 46..<50 of version 2), for a server that checked
    /// the whole record when it stored it; nil for bytes of neither version.
    public static func generation(ofEncoded bytes: [UInt8]) -> UInt32? {
        switch bytes.first {
        case Keyring.wireVersion: return 1
        case GenerationKeyring.wireVersion where bytes.count >= 50: return bytes[46..<50].reduce(0) { $0 << 8 | UInt32($1) }
        default: return nil
        }
    }

    /// The recovery key's X25519 public key, which a rotation seals the new
    /// generation to; nil in a version 1 keyring (a rotation then needs the
    /// recovery key itself once).
    public var recoveryBoxKey: [UInt8]? {
        switch self { case .v1: nil; case .v2(let k): k.recoveryBoxKey }
    }

    /// Every generation, newest first, from the password.
    /// - Throws: `CryptoError.wrongPassword`, `.authenticationFailed`.
    public func unlock(password: PasswordKeys) throws -> [VaultKeys] {
        switch self {
        case .v1(let k): [try k.unlock(password: password)]
        case .v2(let k): try k.unlock(password: password)
        }
    }

    /// Every generation, newest first, from the recovery key.
    /// - Throws: `CryptoError.wrongRecoveryKey` for another vault's key,
    ///   `.authenticationFailed` for altered bytes.
    public func unlock(recovery: RecoveryKey) throws -> [VaultKeys] {
        switch self {
        case .v1(let k): return [try k.unlock(recovery: recovery)]
        case .v2(let k):
            // A seal to another key fails like an altered one: tell them apart first.
            guard Sodium.constantTimeEqual(recovery.boxPublicKey, k.recoveryBoxKey) else { throw CryptoError.wrongRecoveryKey }
            return try k.unlock(recovery: recovery)
        }
    }

    /// Every generation, newest first, for an enrolled device with its own
    /// X25519 secret (how a device learns a rotation).
    /// - Throws: `CryptoError.authenticationFailed` when the keyring holds no
    ///   seal that opens for the device (version 1 holds none).
    public func unlock(device: DeviceID, identity: DeviceIdentity) throws -> [VaultKeys] {
        switch self {
        case .v1: throw CryptoError.authenticationFailed
        case .v2(let k): try k.unlock(device: device, identity: identity)
        }
    }

    /// The same keyring with the newest generation rewrapped for a new
    /// password (and parameters): a password change or a recovery.
    /// `generations` are every generation, newest first, as opened.
    public func rewrapped(generations: [VaultKeys], password: PasswordKeys, parameters: KDFParameters) throws -> VaultKeyring {
        switch self {
        case .v1(let k): .v1(try k.rewrapped(keys: generations[0], password: password, parameters: parameters))
        case .v2(let k): .v2(try k.rewrapped(newest: generations[0], password: password, parameters: parameters))
        }
    }

    public func encode(to w: inout WireWriter) {
        switch self {
        case .v1(let k): k.encode(to: &w)
        case .v2(let k): k.encode(to: &w)
        }
    }

    public init(from r: inout WireReader) throws {
        var peek = r
        switch try peek.u8() {
        case Keyring.wireVersion: self = .v1(try Keyring(from: &r))
        default: self = .v2(try GenerationKeyring(from: &r))
        }
    }
}

extension GenerationKeyring {
    /// The same keyring with the password slot made again for `password`
    /// (`newest` is generation `generation`'s keys).
    public func rewrapped(newest: VaultKeys, password: PasswordKeys, parameters: KDFParameters) throws -> GenerationKeyring {
        GenerationKeyring(vaultID: vaultID, parameters: parameters, generation: generation, recoveryBoxKey: recoveryBoxKey,
                          passwordSlot: try newest.passwordSlot(password, parameters: parameters, generation: generation),
                          recoverySeal: recoverySeal, links: links, deviceSeals: deviceSeals)
    }
}
