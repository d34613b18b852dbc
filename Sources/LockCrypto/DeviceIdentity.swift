import CSodium

/// A device's own keys, made at enrolment and kept in its device.json:
/// an Ed25519 signing key (it signs every journal entry the device writes;
/// the server checks the signature against the public key registered for
/// the device, and every client against the key the chain bound to the
/// device id) and an X25519 key (for wrapping key generations to the device).
///
/// Only the public halves ever leave the device. The seeds live in guarded
/// memory (`SecretKey`).
public final class DeviceIdentity: Sendable {
    /// The Ed25519 seed (crypto_sign_seed_keypair).
    public let signingSeed: SecretKey<KeyPurposes.DeviceSigning>
    /// The X25519 secret key.
    public let boxSecret: SecretKey<KeyPurposes.DeviceBox>
    /// The Ed25519 public key (32 bytes).
    public let signingPublicKey: [UInt8]
    /// The X25519 public key (32 bytes).
    public let boxPublicKey: [UInt8]

    public static let publicKeySize = 32
    public static let signatureSize = 64

    /// The identity from its two 32-byte secrets.
    public init(signingSeed: SecretKey<KeyPurposes.DeviceSigning>, boxSecret: SecretKey<KeyPurposes.DeviceBox>) {
        _ = Sodium.ready
        self.signingSeed = signingSeed
        self.boxSecret = boxSecret
        var pk = [UInt8](repeating: 0, count: 32)
        var sk = [UInt8](repeating: 0, count: 64)
        signingSeed.withUnsafeBytes { seed in
            _ = crypto_sign_seed_keypair(&pk, &sk, seed.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        wipe(&sk)
        signingPublicKey = pk
        var bpk = [UInt8](repeating: 0, count: 32)
        boxSecret.withUnsafeBytes { secret in
            _ = crypto_scalarmult_base(&bpk, secret.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        boxPublicKey = bpk
    }

    /// A new identity from the CSPRNG.
    public static func generate() -> DeviceIdentity {
        DeviceIdentity(signingSeed: .random(), boxSecret: .random())
    }

    /// The Ed25519 signature (64 bytes) of `message`.
    public func sign(_ message: [UInt8]) -> [UInt8] {
        var pk = [UInt8](repeating: 0, count: 32)
        var sk = [UInt8](repeating: 0, count: 64)
        defer { wipe(&sk) }
        signingSeed.withUnsafeBytes { seed in
            _ = crypto_sign_seed_keypair(&pk, &sk, seed.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        var signature = [UInt8](repeating: 0, count: 64)
        _ = crypto_sign_detached(&signature, nil, message, UInt64(message.count), sk)
        return signature
    }

    /// Whether `signature` is `publicKey`'s Ed25519 signature of `message`
    /// (libsodium's strict verification: canonical encodings, no small-order keys).
    public static func verify(_ signature: [UInt8], of message: [UInt8], publicKey: [UInt8]) -> Bool {
        _ = Sodium.ready
        guard signature.count == signatureSize, publicKey.count == publicKeySize else { return false }
        return crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey) == 0
    }
}
