/// Every way a LockWire decoder refuses bytes. Decoding is strict: nothing
/// is guessed, skipped or truncated silently.
public enum WireError: Error, Equatable, Sendable {
    /// The record's version byte is not one this build reads.
    case unsupportedVersion(record: String, found: UInt8)
    /// The bytes end before the record does.
    case truncated(record: String, needed: Int, available: Int)
    /// Bytes remain after a complete record.
    case trailingBytes(record: String, count: Int)
    /// A length or count field exceeds its limit (or the bytes that remain).
    case lengthOutOfRange(field: String, length: Int, limit: Int)
    /// A field holds a value the format does not allow.
    case invalidValue(field: String, reason: String)
}
