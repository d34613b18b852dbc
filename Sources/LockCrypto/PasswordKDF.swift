import CSodium
import Foundation

/// Argon2id parameters of an account, stored with its salt (in the keyring
/// and at the server for pre-login) so they can be raised later.
///
/// Wire form (29 bytes, part of the keyring and of the password slot's
/// associated data):
///
///     0   1   algorithm: 0x01 = Argon2id v1.3
///     1   4   opslimit, u32 BE (passes)
///     5   8   memlimit, u64 BE (bytes)
///     13  16  salt
public struct KDFParameters: Sendable, Equatable {
    /// Argon2id v1.3, libsodium's `crypto_pwhash_ALG_ARGON2ID13`.
    public static let argon2id13: UInt8 = 0x01
    public static let saltSize = 16
    public static let encodedSize = 29

    public let algorithm: UInt8
    public let opsLimit: UInt32
    public let memLimit: UInt64
    public let salt: [UInt8]

    /// The floor this client accepts from anyone, the server included:
    /// libsodium's INTERACTIVE limits (2 passes, 64 MiB). A hostile server
    /// cannot make a client hash its password cheaply and then brute-force
    /// the login secret (docs/security.md, "Password").
    public static let minimumOpsLimit: UInt32 = 2
    public static let minimumMemLimit: UInt64 = 64 << 20
    /// The ceiling: nothing a legitimate vault needs; refuses memory bombs
    /// (1 GiB is libsodium's SENSITIVE, the most `generate` makes: a hostile
    /// server offering 4 GiB could make a small device swap or be killed).
    public static let maximumOpsLimit: UInt32 = 64
    public static let maximumMemLimit: UInt64 = 1 << 30

    /// Parameters with a checked algorithm, limits and salt.
    /// - Throws: `unsupportedKDF`, `unacceptableKDFParameters`.
    public init(algorithm: UInt8 = argon2id13, opsLimit: UInt32, memLimit: UInt64, salt: [UInt8]) throws {
        guard algorithm == Self.argon2id13 else { throw CryptoError.unsupportedKDF(algorithm) }
        guard salt.count == Self.saltSize else {
            throw CryptoError.unacceptableKDFParameters("salt must be \(Self.saltSize) bytes, not \(salt.count)")
        }
        guard (Self.minimumOpsLimit...Self.maximumOpsLimit).contains(opsLimit) else {
            throw CryptoError.unacceptableKDFParameters("opslimit \(opsLimit) outside \(Self.minimumOpsLimit)…\(Self.maximumOpsLimit)")
        }
        guard (Self.minimumMemLimit...Self.maximumMemLimit).contains(memLimit) else {
            throw CryptoError.unacceptableKDFParameters("memlimit \(memLimit) outside \(Self.minimumMemLimit)…\(Self.maximumMemLimit) bytes")
        }
        self.algorithm = algorithm
        self.opsLimit = opsLimit
        self.memLimit = memLimit
        self.salt = salt
    }

    /// Strength presets (libsodium's named limits).
    public enum Strength: Sendable {
        /// 2 passes, 64 MiB: tests and slow machines.
        case interactive
        /// 3 passes, 256 MiB: the default (about half a second here).
        case moderate
        /// 4 passes, 1 GiB.
        case sensitive
    }

    /// New parameters with a random salt.
    public static func generate(_ strength: Strength = .moderate) -> KDFParameters {
        _ = Sodium.ready
        let (ops, mem): (Int, Int) = switch strength {
        case .interactive: (crypto_pwhash_opslimit_interactive(), crypto_pwhash_memlimit_interactive())
        case .moderate: (crypto_pwhash_opslimit_moderate(), crypto_pwhash_memlimit_moderate())
        case .sensitive: (crypto_pwhash_opslimit_sensitive(), crypto_pwhash_memlimit_sensitive())
        }
        return try! KDFParameters(opsLimit: UInt32(ops), memLimit: UInt64(mem), salt: Sodium.randomBytes(saltSize))
    }

    /// The 29-byte wire form.
    public var encoded: [UInt8] {
        var out = [algorithm]
        out += ByteOrder.bigEndian(UInt64(opsLimit)).suffix(4)
        out += ByteOrder.bigEndian(memLimit)
        out += salt
        return out
    }

    /// Parses the 29-byte wire form (strict: exact length, checked limits).
    public init(encoded bytes: some Collection<UInt8>) throws {
        let b = Array(bytes)
        guard b.count == Self.encodedSize else {
            throw CryptoError.unacceptableKDFParameters("encoded parameters must be \(Self.encodedSize) bytes, not \(b.count)")
        }
        let ops = b[1..<5].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let mem = b[5..<13].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        try self.init(algorithm: b[0], opsLimit: ops, memLimit: mem, salt: Array(b[13..<29]))
    }
}

/// What a password yields: the key-encryption key (stays on the client) and
/// the login secret (sent to the server, which keeps only a slow hash of it).
///
///     out   = Argon2id(password NFC UTF-8, salt, opslimit, memlimit) → 64 bytes
///     KEK   = out[0..<32]
///     login = crypto_kdf(key: out[32..<64], id 1, context "lockfsLG")
///
/// The two halves are independent outputs of Argon2id's BLAKE2b-512, so the
/// server learns nothing about KEK from the login secret; and the login
/// secret costs a full Argon2id per guess to find from a password.
public struct PasswordKeys: Sendable {
    public let keyEncryptionKey: SecretKey<KeyPurposes.KeyEncryption>
    public let loginSecret: SecretKey<KeyPurposes.Login>

    /// Runs Argon2id over `password` (normalised to Unicode NFC first, so the
    /// same password typed on another system gives the same keys).
    ///
    /// - Throws: `CryptoError.kdfFailed` if Argon2id cannot allocate its memory.
    public static func derive(password: String, parameters: KDFParameters) throws -> PasswordKeys {
        _ = Sodium.ready
        // A trailing NUL keeps the pointer valid for an empty password; it is not hashed.
        var pw = Array(password.precomposedStringWithCanonicalMapping.utf8) + [0]
        defer { wipe(&pw) }
        return try withUnsafeTemporaryAllocation(byteCount: 64, alignment: 16) { out in
            defer { wipe(out) }
            let status = pw.withUnsafeBufferPointer { p in
                p.withMemoryRebound(to: CChar.self) { c in
                    crypto_pwhash(
                        out.baseAddress!.assumingMemoryBound(to: UInt8.self), 64,
                        c.baseAddress!, UInt64(c.count - 1), parameters.salt,
                        UInt64(parameters.opsLimit), Int(parameters.memLimit), crypto_pwhash_ALG_ARGON2ID13)
                }
            }
            guard status == 0 else { throw CryptoError.kdfFailed }
            let kek = try SecretKey<KeyPurposes.KeyEncryption>(copying: UnsafeRawBufferPointer(rebasing: out[0..<32]))
            let root = try SecretKey<KeyPurposes.Login>(copying: UnsafeRawBufferPointer(rebasing: out[32..<64]))
            return PasswordKeys(keyEncryptionKey: kek, loginSecret: root.derive(id: 1, context: .login))
        }
    }
}
