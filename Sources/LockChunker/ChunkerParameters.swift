/// Chunk-size limits and the cut masks derived from them.
///
/// Once files have been stored, these values (together with the gear table
/// and ``Chunker/formatVersion``) define where chunk boundaries fall, so they
/// are part of the stored format: changing any of them, or the mask
/// construction below, changes every boundary and defeats deduplication
/// against existing data.
///
/// Invariants, checked by ``init(minimumSize:averageSize:maximumSize:)``:
/// - `minimumAllowedSize <= minimumSize < averageSize < maximumSize <= maximumAllowedSize`;
/// - `averageSize` is a power of two in ``allowedAverageSizes``.
///
/// ## Mask construction (normalized chunking, level 2)
///
/// Let `b = log2(averageSize)`. A position is a cut point when
/// `hash & mask == 0`, where `hash` is the 64-bit gear hash
/// `hash = (hash << 1) &+ gear[byte]`. Bit `k` of that hash depends only on
/// the last `k + 1` bytes, so the one-bits are placed in the high part of the
/// word, as FastCDC does:
///
/// - ``smallMask`` (used while the chunk is shorter than the average) has
///   `nS = b + 2` one-bits, at bit positions `63 - (i * 48) / nS` for
///   `i = 0 ..< nS` (integer division): spread evenly over bits 63 down to 16,
///   with bit 63 always set.
/// - ``largeMask`` (used from the average size on) has `nL = b - 2` one-bits:
///   it is ``smallMask`` with its four lowest one-bits cleared. So
///   `largeMask` is a subset of `smallMask` (as in FastCDC's published
///   masks): a position that passes the stricter small-mask test would also
///   pass the large-mask test, which helps boundaries resynchronise after an
///   edit.
///
/// For ``standard`` (`b = 20`) this gives
/// `smallMask == 0xAAA5_54AA_A554_0000` (22 bits) and
/// `largeMask == 0xAAA5_54AA_A400_0000` (18 bits).
public struct ChunkerParameters: Sendable, Equatable {
    /// Smallest permitted ``minimumSize``: 64 bytes, the span of the gear hash.
    public static let minimumAllowedSize = 64
    /// Permitted values of ``averageSize`` (which must also be a power of two):
    /// 256 B through 256 MiB.
    public static let allowedAverageSizes: ClosedRange<Int> = (1 << 8)...(1 << 28)
    /// Largest permitted ``maximumSize``: 1 GiB, since callers buffer a whole
    /// chunk in memory to encrypt it.
    public static let maximumAllowedSize = 1 << 30

    /// The default parameters: 256 KiB minimum, 1 MiB average, 4 MiB maximum.
    public static let standard = ChunkerParameters(
        unchecked: 256 << 10, averageSize: 1 << 20, maximumSize: 4 << 20)

    /// No chunk except the last of a stream is shorter than this; the first
    /// `minimumSize` bytes of each chunk are not hashed (cut-point skipping).
    public let minimumSize: Int
    /// The target chunk size, a power of two; it selects the masks and the
    /// point at which the chunker switches from ``smallMask`` to ``largeMask``.
    public let averageSize: Int
    /// No chunk is longer than this; a chunk that reaches it is cut there.
    public let maximumSize: Int
    /// The cut mask (`log2(averageSize) + 2` one-bits) for bytes at chunk
    /// offsets `minimumSize ..< averageSize`.
    public let smallMask: UInt64
    /// The cut mask (`log2(averageSize) - 2` one-bits) for bytes at chunk
    /// offsets `averageSize ..< maximumSize`.
    public let largeMask: UInt64

    /// Validates the chunk sizes and derives the cut masks from them.
    ///
    /// Validation happens here so a ``Chunker`` never has to re-check its
    /// parameters while streaming.
    ///
    /// - Parameters:
    ///   - minimumSize: Smallest chunk (except the last of a stream), in bytes;
    ///     at least ``minimumAllowedSize``.
    ///   - averageSize: Target chunk size in bytes; a power of two in
    ///     ``allowedAverageSizes``.
    ///   - maximumSize: Largest chunk in bytes; at most ``maximumAllowedSize``.
    /// - Throws: ``ChunkerError`` naming the first violated invariant
    ///   (``ChunkerError/minimumSizeTooSmall(_:)``,
    ///   ``ChunkerError/averageSizeNotPowerOfTwo(_:)``,
    ///   ``ChunkerError/averageSizeOutOfRange(_:)``,
    ///   ``ChunkerError/maximumSizeTooLarge(_:)`` or
    ///   ``ChunkerError/sizesNotIncreasing(minimum:average:maximum:)``).
    public init(minimumSize: Int, averageSize: Int, maximumSize: Int) throws(ChunkerError) {
        guard minimumSize >= Self.minimumAllowedSize else {
            throw .minimumSizeTooSmall(minimumSize)
        }
        guard averageSize > 0, averageSize & (averageSize - 1) == 0 else {
            throw .averageSizeNotPowerOfTwo(averageSize)
        }
        guard Self.allowedAverageSizes.contains(averageSize) else {
            throw .averageSizeOutOfRange(averageSize)
        }
        guard maximumSize <= Self.maximumAllowedSize else {
            throw .maximumSizeTooLarge(maximumSize)
        }
        guard minimumSize < averageSize, averageSize < maximumSize else {
            throw .sizesNotIncreasing(minimum: minimumSize, average: averageSize,
                                      maximum: maximumSize)
        }
        self.init(unchecked: minimumSize, averageSize: averageSize, maximumSize: maximumSize)
    }

    /// Builds parameters already known to be valid (used for ``standard``).
    private init(unchecked minimumSize: Int, averageSize: Int, maximumSize: Int) {
        self.minimumSize = minimumSize
        self.averageSize = averageSize
        self.maximumSize = maximumSize
        let bits = averageSize.trailingZeroBitCount
        let small = Self.spreadMask(oneBits: bits + 2)
        var large = small
        for _ in 0..<4 {
            large &= large &- 1  // clear the lowest one-bit
        }
        self.smallMask = small
        self.largeMask = large
    }

    /// `count` one-bits at positions `63 - (i * 48) / count`, `i = 0 ..< count`.
    ///
    /// Distinct positions for any `count <= 48`; ``allowedAverageSizes``
    /// keeps `count <= 30`.
    private static func spreadMask(oneBits count: Int) -> UInt64 {
        var mask: UInt64 = 0
        for i in 0..<count {
            mask |= 1 << UInt64(63 - (i * 48) / count)
        }
        return mask
    }
}
