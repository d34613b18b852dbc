import LockCrypto

/// Appends fixed-width big-endian integers and length-prefixed byte strings.
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(truncatingIfNeeded: v)) }
    public mutating func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
    public mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func raw(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
    public mutating func id(_ i: some ContiguousBytes) { i.withUnsafeBytes { bytes.append(contentsOf: $0) } }
    /// u16 length ‖ bytes.
    public mutating func bytes16(_ b: [UInt8]) { precondition(b.count <= UInt16.max); u16(UInt16(b.count)); raw(b) }
    /// u32 length ‖ bytes.
    public mutating func bytes32(_ b: [UInt8]) { precondition(b.count <= UInt32.max); u32(UInt32(b.count)); raw(b) }
}

/// Reads what `WireWriter` writes, refusing anything out of bounds.
///
/// Every length is checked against both its field's limit and the bytes
/// that actually remain, before anything is allocated, so a hostile length
/// field can neither crash the reader nor make it allocate gigabytes.
public struct WireReader {
    private let bytes: [UInt8]
    private var offset: Int
    private let end: Int
    /// The record being read, for error messages.
    public let record: String

    public init(_ bytes: [UInt8], record: String) {
        self.bytes = bytes
        self.offset = 0
        self.end = bytes.count
        self.record = record
    }

    public var remaining: Int { end - offset }
    public var isAtEnd: Bool { offset == end }

    private mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, n <= remaining else { throw WireError.truncated(record: record, needed: n, available: remaining) }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }

    public mutating func u8() throws -> UInt8 { try take(1).first! }
    public mutating func u16() throws -> UInt16 { try take(2).reduce(0) { $0 << 8 | UInt16($1) } }
    public mutating func u32() throws -> UInt32 { try take(4).reduce(0) { $0 << 8 | UInt32($1) } }
    public mutating func u64() throws -> UInt64 { try take(8).reduce(0) { $0 << 8 | UInt64($1) } }
    public mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    public mutating func raw(_ n: Int) throws -> [UInt8] { Array(try take(n)) }
    /// An identifier of the inferred type (its size decides how many bytes).
    public mutating func id<T: BytesIdentifier>(_: T.Type = T.self) throws -> T { try T(bytes: take(T.size)) }

    /// Reads the version byte and checks it.
    public mutating func version(_ expected: UInt8) throws {
        let v = try u8()
        guard v == expected else { throw WireError.unsupportedVersion(record: record, found: v) }
    }

    /// Reads a version byte that must be one of `accepted`, and returns it.
    public mutating func version(in accepted: ClosedRange<UInt8>) throws -> UInt8 {
        let v = try u8()
        guard accepted.contains(v) else { throw WireError.unsupportedVersion(record: record, found: v) }
        return v
    }

    /// u16 length ‖ bytes, with `range` the allowed lengths.
    public mutating func bytes16(field: String, allowed range: ClosedRange<Int>) throws -> [UInt8] {
        let n = Int(try u16())
        try check(field: field, n, range)
        return try raw(n)
    }

    /// u32 length ‖ bytes, with `range` the allowed lengths.
    public mutating func bytes32(field: String, allowed range: ClosedRange<Int>) throws -> [UInt8] {
        let n = Int(try u32())
        try check(field: field, n, range)
        return try raw(n)
    }

    /// A u32 count of items at least `itemSize` bytes each, within `limit`
    /// and within what the remaining bytes could hold.
    public mutating func count(field: String, limit: Int, minimumItemSize: Int) throws -> Int {
        let n = Int(try u32())
        guard n <= limit else { throw WireError.lengthOutOfRange(field: field, length: n, limit: limit) }
        let fits = minimumItemSize == 0 ? limit : remaining / minimumItemSize
        guard n <= fits else { throw WireError.lengthOutOfRange(field: field, length: n, limit: fits) }
        return n
    }

    private func check(field: String, _ n: Int, _ range: ClosedRange<Int>) throws {
        guard range.contains(n) else {
            throw WireError.lengthOutOfRange(field: field, length: n, limit: n < range.lowerBound ? range.lowerBound : range.upperBound)
        }
        guard n <= remaining else { throw WireError.truncated(record: record, needed: n, available: remaining) }
    }

    /// Everything that remains (for a record's last, self-delimiting field).
    public mutating func rest() -> [UInt8] {
        defer { offset = end }
        return Array(bytes[offset..<end])
    }

    /// Ends the record: trailing bytes are an error.
    public func finish() throws {
        guard isAtEnd else { throw WireError.trailingBytes(record: record, count: remaining) }
    }
}

/// A record with a byte encoding of its own version.
public protocol WireRecord: Sendable, Equatable {
    /// The version byte this build writes and reads.
    static var wireVersion: UInt8 { get }
    /// The record's name in errors and docs.
    static var recordName: String { get }
    /// Appends the record (version byte first) to `writer`.
    func encode(to writer: inout WireWriter)
    /// Reads one record (version byte first) from `reader`.
    init(from reader: inout WireReader) throws
}

extension WireRecord {
    /// The record's bytes.
    public var encoded: [UInt8] {
        var w = WireWriter()
        encode(to: &w)
        return w.bytes
    }

    /// Decodes exactly one record: trailing bytes are an error.
    public init(decoding bytes: [UInt8]) throws {
        var r = WireReader(bytes, record: Self.recordName)
        try self.init(from: &r)
        try r.finish()
    }
}
