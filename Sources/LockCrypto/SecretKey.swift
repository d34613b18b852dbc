import CSodium

/// What a key is for. Each purpose is its own type, so a content key can
/// never be passed where a metadata key is expected.
public protocol KeyPurpose: Sendable {
    /// A short name for diagnostics ("content", "metadata", …). Never the key.
    static var name: String { get }
}

/// Key purposes of the lockfs key hierarchy (docs/design.md, "Keys").
public enum KeyPurposes {
    /// The vault master key MK: random, wrapped in the keyring.
    public enum Master: KeyPurpose { public static let name = "master" }
    /// Encrypts chunk contents.
    public enum Content: KeyPurpose { public static let name = "content" }
    /// Encrypts journal entries and checkpoints.
    public enum Metadata: KeyPurpose { public static let name = "metadata" }
    /// Keys the BLAKE2b hash that names chunks.
    public enum ChunkID: KeyPurpose { public static let name = "chunk-id" }
    /// Derives the chunker's gear table.
    public enum Chunker: KeyPurpose { public static let name = "chunker" }
    /// Wraps MK in a keyring slot (from a password or a recovery key).
    public enum KeyEncryption: KeyPurpose { public static let name = "key-encryption" }
    /// Proves knowledge of the password to the server; it is sent there.
    public enum Login: KeyPurpose { public static let name = "login" }
    /// The secret behind a printed recovery key.
    public enum Recovery: KeyPurpose { public static let name = "recovery" }
    /// Proves knowledge of the recovery key to the server; it is sent there
    /// (the server keeps a salted hash, like the login secret's).
    public enum RecoveryProof: KeyPurpose { public static let name = "recovery-proof" }
    /// The seed of a device's Ed25519 signing key (made at enrolment, never sent).
    public enum DeviceSigning: KeyPurpose { public static let name = "device-signing" }
    /// A device's X25519 secret key (made at enrolment, never sent).
    public enum DeviceBox: KeyPurpose { public static let name = "device-box" }
    /// The recovery key's X25519 secret (key generations are sealed to its public half).
    public enum RecoveryBox: KeyPurpose { public static let name = "recovery-box" }
    /// Wraps the previous generation's MK (a link of the key generations).
    public enum GenerationLink: KeyPurpose { public static let name = "generation-link" }
}

/// A 256-bit secret key in guarded memory, wiped when released.
///
/// The bytes live in `sodium_malloc` memory (guard pages, `mlock` where the
/// system allows it) and are zeroed by `sodium_free` on deinit. The type is
/// immutable after creation, never `Codable`, and prints as redacted, so a
/// key cannot leak through logging or serialisation by accident.
public final class SecretKey<Purpose: KeyPurpose>: @unchecked Sendable, CustomStringConvertible {
    /// Every lockfs key is 32 bytes.
    public static var size: Int { 32 }

    private let pointer: UnsafeMutableRawPointer

    /// The key's public identifier (docs/design.md, "Envelope").
    public let id: KeyID

    /// Creates a key by copying `bytes`, which must be exactly 32 bytes long.
    ///
    /// The caller remains responsible for wiping its own copy.
    /// - Throws: `CryptoError.invalidKeySize` for any other length.
    public init(copying bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count == Self.size else { throw CryptoError.invalidKeySize(bytes.count) }
        _ = Sodium.ready
        guard let p = sodium_malloc(Self.size) else {
            fatalError("sodium_malloc failed: out of memory for a 32-byte key")
        }
        p.copyMemory(from: bytes.baseAddress!, byteCount: Self.size)
        pointer = p
        id = KeyID(deriving: UnsafeRawBufferPointer(start: p, count: Self.size))
    }

    /// Creates a key from 32 bytes produced by `fill`, written directly into guarded memory.
    init(filling fill: (UnsafeMutableRawBufferPointer) -> Void) {
        _ = Sodium.ready
        guard let p = sodium_malloc(Self.size) else {
            fatalError("sodium_malloc failed: out of memory for a 32-byte key")
        }
        fill(UnsafeMutableRawBufferPointer(start: p, count: Self.size))
        pointer = p
        id = KeyID(deriving: UnsafeRawBufferPointer(start: p, count: Self.size))
    }

    /// A new key from the operating system's CSPRNG.
    public static func random() -> SecretKey {
        SecretKey { randombytes_buf($0.baseAddress!, $0.count) }
    }

    deinit { sodium_free(pointer) }

    /// Calls `body` with the key bytes. Do not let them escape `body`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: Self.size))
    }

    /// Derives a subkey with `crypto_kdf` (BLAKE2b keyed with this key, the
    /// subkey id and the 8-byte context as salt and personalisation).
    func derive<P>(id subkeyID: UInt64, context: KDFContext) -> SecretKey<P> {
        SecretKey<P> { out in
            withUnsafeBytes { key in
                context.bytes.withUnsafeBufferPointer { ctx in
                    ctx.withMemoryRebound(to: CChar.self) { c in
                        _ = crypto_kdf_derive_from_key(
                            out.baseAddress!.assumingMemoryBound(to: UInt8.self), Self.size,
                            subkeyID, c.baseAddress!, key.baseAddress!.assumingMemoryBound(to: UInt8.self))
                    }
                }
            }
        }
    }

    public var description: String { "SecretKey<\(Purpose.name)>(id: \(id), bytes redacted)" }
}

/// An 8-byte crypto_kdf context; each one names a branch of the key tree.
///
/// These strings are part of the format: they never change once released.
struct KDFContext: Sendable {
    let bytes: [UInt8]
    private init(_ text: StaticString) {
        precondition(text.utf8CodeUnitCount == 8)
        bytes = Array(UnsafeBufferPointer(start: text.utf8Start, count: 8))
    }
    /// Subkeys of the master key (content, metadata, chunk-id, chunker).
    static let master = KDFContext("lockfsMK")
    /// The login secret, from the second half of the Argon2id output.
    static let login = KDFContext("lockfsLG")
    /// The recovery wrapping key, from the recovery secret.
    static let recovery = KDFContext("lockfsRK")
}

/// The public 8-byte identifier of a key, carried in every envelope.
///
/// `id = BLAKE2b-256(key: K, message: "lockfs key id v1")[0..<8]`. It lets
/// an opener tell "sealed under another key" (`CryptoError.wrongKey`) from
/// "tampered" (`CryptoError.authenticationFailed`), and lets a later version
/// rotate keys and select the right one. It reveals nothing about K.
public struct KeyID: Hashable, Sendable, CustomStringConvertible {
    /// Size on the wire.
    public static let size = 8
    /// The identifier as a big-endian integer of its 8 bytes.
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    init(deriving key: UnsafeRawBufferPointer) {
        let digest = Hash.blake2b256(Array("lockfs key id v1".utf8), key: key)
        rawValue = digest.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The 8 bytes, big-endian.
    public var bytes: [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: rawValue >> (56 - 8 * $0)) } }

    public var description: String {
        let hex = String(rawValue, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// Zeroes a buffer with `sodium_memzero`, which the compiler may not elide.
@inline(__always)
func wipe(_ buffer: UnsafeMutableRawBufferPointer) {
    if let base = buffer.baseAddress { sodium_memzero(base, buffer.count) }
}

/// Zeroes an array in place.
func wipe(_ array: inout [UInt8]) {
    array.withUnsafeMutableBytes { wipe($0) }
}

extension Sodium {
    /// Zeroes an array in place with `sodium_memzero` (for key material
    /// that had to pass through an ordinary buffer).
    public static func wipe(_ array: inout [UInt8]) {
        array.withUnsafeMutableBytes { LockCrypto.wipe($0) }
    }
}
