import LockCrypto

/// Identifies a node (file, folder or symlink) for its whole life, across
/// renames. Random 128 bits; the root folder is all zeros.
public struct NodeID: BytesIdentifier {
    public let storage: Bytes16
    public init(storage: Bytes16) { self.storage = storage }
    /// The vault's root folder.
    public static let root = NodeID(storage: .zero)
}

/// Identifies an enrolled device (in journal entries: who wrote a batch).
public struct DeviceID: BytesIdentifier {
    public let storage: Bytes16
    public init(storage: Bytes16) { self.storage = storage }
}

/// Identifies one version of a node's content or attributes.
///
/// A writer names the revision it started from (`base`) and the one it
/// makes (`new`); on replay, a stale base is a conflict (docs/design.md).
public struct RevisionID: BytesIdentifier {
    public let storage: Bytes16
    public init(storage: Bytes16) { self.storage = storage }
}

/// A journal sequence number: the server numbers entries 1, 2, 3… per vault;
/// 0 is the position before the first entry.
public struct JournalSeq: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { rawValue = value }
    public static let start = JournalSeq(0)
    public var next: JournalSeq { JournalSeq(rawValue + 1) }
    public static func < (a: JournalSeq, b: JournalSeq) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// What a node is. Values are part of the format.
public enum NodeKind: UInt8, Sendable, CaseIterable {
    case file = 1
    case directory = 2
    case symlink = 3
}

/// Nanoseconds since the Unix epoch (UTC), as in `struct timespec`.
public struct Timestamp: Hashable, Comparable, Sendable {
    public let nanoseconds: Int64
    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.nanoseconds < b.nanoseconds }
}

/// Limits of the formats; each is checked on decode.
public enum WireLimits {
    /// A file name: 1…255 bytes of UTF-8 (Linux NAME_MAX).
    public static let nameBytes = 1...255
    /// A symlink target: 1…4095 bytes (PATH_MAX − 1).
    public static let symlinkTargetBytes = 1...4095
    /// An extended attribute name (XATTR_NAME_MAX) and value (XATTR_SIZE_MAX).
    public static let xattrNameBytes = 1...255
    public static let xattrValueBytes = 0...65_536
    /// Extended attributes per node.
    public static let xattrCount = 128
    /// Chunks in one manifest: 2²⁴ chunks of up to 4 MiB is 64 TiB.
    public static let manifestChunks = 1 << 24
    /// A chunk's plaintext length.
    public static let chunkBytes = 1...(4 << 20)
    /// Operations in one journal entry.
    public static let operationsPerEntry = 100_000
    /// Permission bits a node may carry (no file-type bits).
    public static let modeMask: UInt32 = 0o7777
}

/// A validated file name: UTF-8, 1…255 bytes, no "/" or NUL, not "." or "..".
public struct Name: Hashable, Sendable, CustomStringConvertible {
    public let value: String

    /// - Throws: `WireError.invalidValue` or `lengthOutOfRange` for a name no file system allows.
    public init(_ value: String) throws {
        let utf8 = Array(value.utf8)
        guard WireLimits.nameBytes.contains(utf8.count) else {
            throw WireError.lengthOutOfRange(field: "name", length: utf8.count, limit: WireLimits.nameBytes.upperBound)
        }
        guard !utf8.contains(UInt8(ascii: "/")), !utf8.contains(0) else {
            throw WireError.invalidValue(field: "name", reason: "contains “/” or NUL")
        }
        guard value != ".", value != ".." else { throw WireError.invalidValue(field: "name", reason: "“.” and “..” are not names") }
        self.value = value
    }

    public var description: String { value }

    func encode(to w: inout WireWriter) { w.bytes16(Array(value.utf8)) }

    init(from r: inout WireReader) throws {
        let bytes = try r.bytes16(field: "name", allowed: WireLimits.nameBytes)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw WireError.invalidValue(field: "name", reason: "not UTF-8")
        }
        try self.init(text)
    }
}

/// An extended attribute (user namespace; stored encrypted with the node).
public struct ExtendedAttribute: Hashable, Sendable {
    public let name: String
    public let value: [UInt8]

    public init(name: String, value: [UInt8]) throws {
        let n = Array(name.utf8)
        guard WireLimits.xattrNameBytes.contains(n.count), !n.contains(0) else {
            throw WireError.invalidValue(field: "xattr name", reason: "must be 1…255 bytes without NUL")
        }
        guard WireLimits.xattrValueBytes.contains(value.count) else {
            throw WireError.lengthOutOfRange(field: "xattr value", length: value.count, limit: WireLimits.xattrValueBytes.upperBound)
        }
        self.name = name
        self.value = value
    }

    static func encode(_ list: [ExtendedAttribute], to w: inout WireWriter) {
        w.u32(UInt32(list.count))
        for x in canonical(list) {
            w.bytes16(Array(x.name.utf8))
            w.bytes32(x.value)
        }
    }

    /// Reads a list; names must be unique and in ascending byte order, so
    /// every list has exactly one encoding.
    static func decodeList(from r: inout WireReader) throws -> [ExtendedAttribute] {
        let n = try r.count(field: "xattr count", limit: WireLimits.xattrCount, minimumItemSize: 7)
        var out: [ExtendedAttribute] = []
        for _ in 0..<n {
            let name = try r.bytes16(field: "xattr name", allowed: WireLimits.xattrNameBytes)
            let value = try r.bytes32(field: "xattr value", allowed: WireLimits.xattrValueBytes)
            guard let text = String(validating: name, as: UTF8.self) else {
                throw WireError.invalidValue(field: "xattr name", reason: "not UTF-8")
            }
            if let last = out.last, !Array(last.name.utf8).lexicographicallyPrecedes(name) {
                throw WireError.invalidValue(field: "xattr names", reason: "not unique and ascending")
            }
            out.append(try ExtendedAttribute(name: text, value: value))
        }
        return out
    }

    /// Sorts by name bytes, the canonical order.
    public static func canonical(_ list: [ExtendedAttribute]) -> [ExtendedAttribute] {
        list.sorted { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }
    }
}
