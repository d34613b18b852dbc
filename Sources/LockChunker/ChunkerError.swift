/// Why a ``ChunkerParameters`` or ``Chunker`` could not be created.
///
/// Thrown (as a typed error) only at construction time: once a chunker
/// exists, feeding it can never fail. Each case carries the offending
/// value(s) so the caller can report them; the gear table's *contents* are
/// never included, because they are derived from a secret key.
public enum ChunkerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The minimum chunk size is below ``ChunkerParameters/minimumAllowedSize``.
    case minimumSizeTooSmall(Int)
    /// The average chunk size is not a power of two.
    case averageSizeNotPowerOfTwo(Int)
    /// The average chunk size is outside ``ChunkerParameters/allowedAverageSizes``.
    case averageSizeOutOfRange(Int)
    /// The maximum chunk size is above ``ChunkerParameters/maximumAllowedSize``.
    case maximumSizeTooLarge(Int)
    /// The sizes do not satisfy `minimum < average < maximum`.
    case sizesNotIncreasing(minimum: Int, average: Int, maximum: Int)
    /// The gear table does not have exactly ``Chunker/gearTableCount`` entries.
    case invalidGearTableCount(Int)

    public var description: String {
        switch self {
        case .minimumSizeTooSmall(let size):
            return "minimum chunk size \(size) is below \(ChunkerParameters.minimumAllowedSize)"
        case .averageSizeNotPowerOfTwo(let size):
            return "average chunk size \(size) is not a power of two"
        case .averageSizeOutOfRange(let size):
            let range = ChunkerParameters.allowedAverageSizes
            return "average chunk size \(size) is outside \(range.lowerBound)...\(range.upperBound)"
        case .maximumSizeTooLarge(let size):
            return "maximum chunk size \(size) is above \(ChunkerParameters.maximumAllowedSize)"
        case .sizesNotIncreasing(let minimum, let average, let maximum):
            return "chunk sizes must satisfy minimum < average < maximum, got \(minimum), \(average), \(maximum)"
        case .invalidGearTableCount(let count):
            return "gear table must have exactly \(Chunker.gearTableCount) entries, got \(count)"
        }
    }
}
