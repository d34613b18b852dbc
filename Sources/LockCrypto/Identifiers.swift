/// Fixed-size opaque identifiers, stored inline (no heap allocation).
///
/// The bytes live in plain UInt64 words, not SIMD vectors: a Bytes32
/// field projected out of a struct inside an async function corrupts the
/// task allocator with Swift 6.3 on Linux (LLVM gives <32 x i8> a 32-byte
/// alignment that async frames do not honour).

/// Fixed-size inline storage for an identifier's bytes.
public protocol FixedBytes: Hashable, Sendable {
    /// How many bytes the storage holds.
    static var byteCount: Int { get }
    /// All zero bytes.
    init()
}

/// 16 bytes in two words, in memory order.
public struct Bytes16: FixedBytes {
    public var w0: UInt64 = 0, w1: UInt64 = 0
    public static var byteCount: Int { 16 }
    public init() {}
    public static let zero = Bytes16()
}

/// 32 bytes in four words, in memory order.
public struct Bytes32: FixedBytes {
    public var w0: UInt64 = 0, w1: UInt64 = 0, w2: UInt64 = 0, w3: UInt64 = 0
    public static var byteCount: Int { 32 }
    public init() {}
}

/// An identifier of a fixed number of bytes, stored inline.
public protocol BytesIdentifier: Hashable, Sendable, ContiguousBytes, CustomStringConvertible {
    associatedtype Storage: FixedBytes
    /// The raw bytes.
    var storage: Storage { get }
    init(storage: Storage)
}

extension BytesIdentifier {
    /// Byte size on the wire.
    public static var size: Int { Storage.byteCount }

    /// Wraps exactly `size` bytes.
    /// - Throws: `CryptoError.invalidIdentifier` for any other length.
    public init(bytes: some Collection<UInt8>) throws {
        guard bytes.count == Self.size else { throw CryptoError.invalidIdentifier(length: bytes.count) }
        var s = Storage()
        withUnsafeMutableBytes(of: &s) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        self.init(storage: s)
    }

    /// Parses 2 × `size` lowercase or uppercase hex digits.
    public init?(hex: some StringProtocol) {
        guard let bytes = Hex.decode(hex), bytes.count == Self.size else { return nil }
        try? self.init(bytes: bytes)
    }

    /// A fresh random identifier from the CSPRNG.
    public static func random() -> Self { try! Self(bytes: Sodium.randomBytes(size)) }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var s = storage
        return try Swift.withUnsafeBytes(of: &s, body)
    }

    /// The bytes as an array.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
    /// Lowercase hex, 2 × `size` digits.
    public var hex: String { Hex.encode(bytes) }
    public var description: String { hex }
}

/// Identifies a vault. Random, made by `lockfs init`; bound into every
/// envelope's associated data so that blobs cannot move between vaults.
public struct VaultID: BytesIdentifier {
    public let storage: Bytes16
    public init(storage: Bytes16) { self.storage = storage }
}

/// Names a chunk: keyed BLAKE2b-256 of its plaintext (see `ChunkIDKey`).
public struct ChunkID: BytesIdentifier {
    public let storage: Bytes32
    public init(storage: Bytes32) { self.storage = storage }
}

/// Lowercase hexadecimal, for ids in URLs, file names and logs.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// Lowercase hex of `bytes`.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Bytes of an even-length hex string; nil on any other character.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let hi = nibble(utf8[i]), let lo = nibble(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
