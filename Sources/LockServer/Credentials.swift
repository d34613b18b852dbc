import Foundation
import LockCrypto

/// Tokens, login hashes and invite codes: the server's only secrets, none
/// of which can decrypt anything (docs/security.md, "Server credentials").
public enum Credentials {
    /// A new device token: 32 random bytes, base64url without padding, and
    /// the hash the server stores. A stolen database yields no usable token.
    public static func newToken() -> (token: String, hash: [UInt8]) {
        let raw = Sodium.randomBytes(32)
        return (Base64URL.encode(raw), tokenHash(raw))
    }

    /// The stored hash of a presented token; nil if it is not 32 base64url bytes.
    public static func tokenHash(_ token: String) -> [UInt8]? {
        guard let raw = Base64URL.decode(token), raw.count == 32 else { return nil }
        return tokenHash(raw)
    }

    /// BLAKE2b-256("lockfs device token v1" ‖ token).
    static func tokenHash(_ raw: [UInt8]) -> [UInt8] {
        Hash.blake2b256(parts: [Array("lockfs device token v1".utf8), raw])
    }

    /// The stored form of a login secret: BLAKE2b-256 keyed with a random
    /// 16-byte salt over "lockfs login v1" ‖ secret.
    ///
    /// Not a slow hash on purpose: the login secret is itself the output of
    /// Argon2id (MODERATE) on the client, 256 bits that cost a full Argon2id
    /// per password guess to find; a second slow hash here would add nothing
    /// for an attacker holding the database (who also holds the keyring, an
    /// equally good guess checker) and would hand anyone a cheap way to make
    /// the server burn 64 MiB of memory per login attempt.
    public static func loginHash(secret: [UInt8], salt: [UInt8]) -> [UInt8] {
        salt.withUnsafeBytes { Hash.blake2b256(Array("lockfs login v1".utf8) + secret, key: $0) }
    }

    /// Whether `secret` matches a stored salt and hash, in constant time.
    public static func verifyLogin(secret: [UInt8], salt: [UInt8], hash: [UInt8]) -> Bool {
        Sodium.constantTimeEqual(loginHash(secret: secret, salt: salt), hash)
    }

    /// The stored form of a recovery proof: a random 16-byte salt ‖
    /// BLAKE2b-256 keyed with the salt over "lockfs recovery v1" ‖ proof.
    /// Fast for the same reason as `loginHash`: the proof is derived from 256
    /// random bits, so a stolen verifier cannot be brute-forced.
    public static func recoveryVerifier(proof: [UInt8]) -> [UInt8] {
        let salt = Sodium.randomBytes(16)
        return salt + recoveryHash(proof: proof, salt: salt)
    }

    /// Whether `proof` matches a stored recovery verifier, in constant time.
    public static func verifyRecovery(proof: [UInt8], verifier: [UInt8]) -> Bool {
        guard verifier.count == 48 else { return false }
        return Sodium.constantTimeEqual(recoveryHash(proof: proof, salt: Array(verifier.prefix(16))), Array(verifier.suffix(32)))
    }

    private static func recoveryHash(proof: [UInt8], salt: [UInt8]) -> [UInt8] {
        salt.withUnsafeBytes { Hash.blake2b256(Array("lockfs recovery v1".utf8) + proof, key: $0) }
    }

    private static let inviteAlphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    /// A one-time invite: 80 random bits as 16 Crockford base32 characters
    /// in groups of 4 ("7K3M-Q8ZD-…"), and the hash the server stores.
    public static func newInvite() -> (code: String, hash: [UInt8]) {
        let raw = Sodium.randomBytes(10)
        var bits: UInt128 = 0
        for b in raw { bits = bits << 8 | UInt128(b) }
        var chars = ""
        for i in 0..<16 {
            if i > 0 && i % 4 == 0 { chars.append("-") }
            chars.append(Character(Unicode.Scalar(inviteAlphabet[Int(bits >> UInt128(5 * (15 - i)) & 31)])))
        }
        return (chars, inviteHash(chars)!)
    }

    /// The stored hash of an invite code as typed (case, hyphens and spaces
    /// ignored; O read as 0, I and L as 1); nil if it cannot be a code.
    public static func inviteHash(_ code: String) -> [UInt8]? {
        var normal = [UInt8]()
        for c in code.uppercased().utf8 {
            switch c {
            case UInt8(ascii: "-"), UInt8(ascii: " "): continue
            case UInt8(ascii: "O"): normal.append(UInt8(ascii: "0"))
            case UInt8(ascii: "I"), UInt8(ascii: "L"): normal.append(UInt8(ascii: "1"))
            default:
                guard inviteAlphabet.contains(c) else { return nil }
                normal.append(c)
            }
        }
        guard normal.count == 16 else { return nil }
        return Hash.blake2b256(parts: [Array("lockfs invite v1".utf8), normal])
    }
}

/// Base64url without padding (RFC 4648 §5), for tokens in headers.
public enum Base64URL {
    public static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func decode(_ text: String) -> [UInt8]? {
        guard text.utf8.allSatisfy({ c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F
        }) else { return nil }
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s.append("=") }
        return Data(base64Encoded: s).map { Array($0) }
    }
}
