/// Streaming content-defined chunker (FastCDC with normalized chunking, level 2).
///
/// Chunk boundaries depend only on the bytes of the current chunk, the gear
/// table and the ``ChunkerParameters``, never on how the stream is split into
/// buffers: feeding a stream in any split reports exactly the boundaries that
/// ``boundaries(of:)`` reports for the whole stream at once. The chunker keeps
/// no input bytes (only a hash, a length and an offset), so a stream of any
/// size passes through in O(1) memory.
///
/// ## Algorithm (part of the stored format, see ``formatVersion``)
///
/// For each chunk, starting with `hash = 0`, at chunk offset `i` (0-based):
/// - bytes at `i < minimumSize` are skipped without hashing (cut-point
///   skipping);
/// - otherwise `hash = (hash << 1) &+ gear[byte]` (wrapping, 64-bit), and the
///   chunk ends *after* this byte (its length is `i + 1`) if
///   `hash & mask == 0`, where `mask` is ``ChunkerParameters/smallMask`` for
///   `i < averageSize` and ``ChunkerParameters/largeMask`` for
///   `i >= averageSize`;
/// - a chunk that reaches `maximumSize` bytes ends there.
///
/// The next chunk starts right after, with the hash reset to 0. The last
/// chunk of a stream ends where the stream ends, whatever its length. So
/// every chunk but the last has a length in `minimumSize + 1 ... maximumSize`,
/// and the last in `1 ... maximumSize`.
///
/// The gear table is supplied by the caller (derived from a secret key
/// elsewhere, so that boundaries do not fingerprint file contents); it is
/// deliberately not shown by ``description``.
public struct Chunker: Sendable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// Version of the boundary algorithm (this type plus the mask
    /// construction in ``ChunkerParameters``). Bump it whenever any boundary
    /// for any input could change, and update the golden vectors and docs.
    public static let formatVersion = 1

    /// The number of entries a gear table must have: one per byte value.
    public static let gearTableCount = 256

    /// The chunk-size limits and masks this chunker applies.
    public let parameters: ChunkerParameters

    /// The gear table, exactly ``gearTableCount`` entries (checked in `init`,
    /// which is what makes the unchecked table lookup in ``scan`` safe).
    private let gear: [UInt64]

    /// Absolute stream offset of the next byte to be fed: the number of
    /// bytes fed since creation or since the last ``finish()``.
    public private(set) var offset: Int = 0

    /// Bytes of the current (unfinished) chunk fed so far.
    private var chunkLength: Int = 0

    /// Gear hash over the hashed bytes of the current chunk.
    private var hash: UInt64 = 0

    /// Creates a chunker at the start of an empty stream.
    ///
    /// The gear table is copied (it is small); it should come from a keyed
    /// derivation so that boundaries reveal nothing about file contents to
    /// someone without the key.
    ///
    /// - Parameters:
    ///   - gear: The 256-entry gear table, indexed by byte value.
    ///   - parameters: Chunk-size limits; ``ChunkerParameters/standard`` by default.
    /// - Throws: ``ChunkerError/invalidGearTableCount(_:)`` if `gear` does not
    ///   have exactly ``gearTableCount`` entries.
    public init(gear: [UInt64], parameters: ChunkerParameters = .standard) throws(ChunkerError) {
        guard gear.count == Self.gearTableCount else {
            throw .invalidGearTableCount(gear.count)
        }
        self.gear = gear
        self.parameters = parameters
    }

    /// Feeds the next bytes of the stream, reporting each chunk that ends in them.
    ///
    /// Boundaries are reported in increasing order as absolute stream offsets
    /// (the end of a chunk, exclusive: the first chunk is `0 ..< first`). A
    /// boundary never depends on bytes after it, so it is reported as soon as
    /// its last byte is fed, and the split of the stream into buffers does
    /// not matter. The bytes are only read during this call, never retained.
    ///
    /// - Parameters:
    ///   - bytes: The next bytes of the stream; may be empty.
    ///   - onBoundary: Called with the absolute end offset of each chunk
    ///     completed within `bytes`, in order.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, onBoundary: (Int) -> Void) {
        guard let input = bytes.baseAddress, !bytes.isEmpty else { return }
        let count = bytes.count
        let start = offset
        let minimumSize = parameters.minimumSize
        let averageSize = parameters.averageSize
        let maximumSize = parameters.maximumSize
        let smallMask = parameters.smallMask
        let largeMask = parameters.largeMask
        var chunkLength = self.chunkLength
        var hash = self.hash
        let gear = self.gear

        gear.withUnsafeBufferPointer { table in
            // Non-nil: the table has exactly 256 entries.
            let table = table.baseAddress!
            var index = 0
            while index < count {
                let remaining = count - index
                if chunkLength < minimumSize {
                    // Cut-point skipping: the first minimumSize bytes are not hashed.
                    let skip = min(minimumSize - chunkLength, remaining)
                    chunkLength += skip
                    index += skip
                    continue
                }
                // Every branch below scans at least one byte, because
                // remaining > 0 and minimumSize < averageSize < maximumSize.
                let mask: UInt64
                let end: Int
                if chunkLength < averageSize {
                    mask = smallMask
                    end = index + min(averageSize - chunkLength, remaining)
                } else {
                    mask = largeMask
                    end = index + min(maximumSize - chunkLength, remaining)
                }
                let stop = Self.scan(input, from: index, to: end, hash: &hash,
                                     mask: mask, gear: table)
                chunkLength += stop - index
                index = stop
                // scan stops early only on a match, and otherwise the last
                // hash it computed did not match, so this tells them apart.
                if hash & mask == 0 || chunkLength == maximumSize {
                    onBoundary(start + index)
                    chunkLength = 0
                    hash = 0
                }
            }
        }

        self.chunkLength = chunkLength
        self.hash = hash
        self.offset = start + count
    }

    /// Ends the stream, reporting the end of its last, partial chunk.
    ///
    /// Afterwards the chunker is back at the start of a new, empty stream
    /// (offset 0), so it can be reused.
    ///
    /// - Returns: The absolute end offset of the last chunk (which is the
    ///   stream length), or `nil` if no bytes were fed after the last
    ///   reported boundary (including an empty stream).
    public mutating func finish() -> Int? {
        let end = chunkLength > 0 ? offset : nil
        offset = 0
        chunkLength = 0
        hash = 0
        return end
    }

    /// Chunks a whole, independent stream at once.
    ///
    /// Uses a fresh chunker with the same gear table and parameters, so the
    /// state of `self` is neither used nor changed. The result equals the
    /// boundaries reported by ``feed(_:onBoundary:)`` followed by
    /// ``finish()`` for the same bytes, under any split. Contiguous
    /// collections are read in place; others are streamed through a small
    /// fixed buffer.
    ///
    /// - Parameter data: The entire stream.
    /// - Returns: The absolute end offset of every chunk, in increasing
    ///   order; the last equals `data.count`. Empty if `data` is empty.
    public func boundaries(of data: some Collection<UInt8>) -> [Int] {
        var chunker = self
        _ = chunker.finish()  // reset to the start of a stream
        var result: [Int] = []
        result.reserveCapacity(data.count / parameters.averageSize + 1)
        let contiguous: Void? = data.withContiguousStorageIfAvailable { buffer in
            chunker.feed(UnsafeRawBufferPointer(buffer)) { result.append($0) }
        }
        if contiguous == nil {
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            var filled = 0
            for byte in data {
                buffer[filled] = byte
                filled += 1
                if filled == buffer.count {
                    buffer.withUnsafeBytes { chunker.feed($0) { result.append($0) } }
                    filled = 0
                }
            }
            buffer.withUnsafeBytes {
                chunker.feed(UnsafeRawBufferPointer(rebasing: $0[..<filled])) {
                    result.append($0)
                }
            }
        }
        if let last = chunker.finish() {
            result.append(last)
        }
        return result
    }

    /// Hashes `input[start ..< end]` until `hash & mask == 0`.
    ///
    /// The hot loop: no bounds checks (the table has 256 entries and a byte
    /// indexes at most 255; the caller guarantees `start < end` lie within
    /// the buffer), wrapping arithmetic, no allocation.
    ///
    /// - Parameters:
    ///   - input: Start of the caller's buffer.
    ///   - start: First index to hash; `start < end`.
    ///   - end: One past the last index that may be hashed.
    ///   - hash: The running gear hash, updated in place.
    ///   - mask: The cut mask.
    ///   - gear: The 256-entry gear table.
    /// - Returns: The index after the byte whose hash matched, or `end` if
    ///   none did (then the final `hash & mask != 0`).
    @inline(__always)
    private static func scan(
        _ input: UnsafeRawPointer, from start: Int, to end: Int,
        hash: inout UInt64, mask: UInt64, gear: UnsafePointer<UInt64>
    ) -> Int {
        var h = hash
        var index = start
        while index < end {
            let byte = input.load(fromByteOffset: index, as: UInt8.self)
            h = (h &<< 1) &+ gear[Int(byte)]
            index &+= 1
            if h & mask == 0 { break }
        }
        hash = h
        return index
    }

    /// A summary without the gear table, which is key-derived.
    public var description: String {
        "Chunker(minimumSize: \(parameters.minimumSize), averageSize: \(parameters.averageSize), "
            + "maximumSize: \(parameters.maximumSize), offset: \(offset))"
    }

    /// Same as ``description``: the gear table is never printed.
    public var debugDescription: String { description }

    /// A mirror without the gear table or hash state, so `dump` cannot leak them.
    public var customMirror: Mirror {
        Mirror(self, children: ["parameters": parameters, "offset": offset],
               displayStyle: .struct)
    }
}
