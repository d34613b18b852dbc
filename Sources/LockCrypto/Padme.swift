/// Padmé padding lengths (Nikitin et al., "Reducing Metadata Leakage from
/// Encrypted Files and Communication with PURBs", PoPETs 2019, §4).
///
/// A length L is rounded up so that only the top ⌊log₂ E⌋ + 1 bits of its
/// binary form may be nonzero, where E = ⌊log₂ L⌋. An observer learns
/// O(log log L) bits about L instead of O(log L), at ≤ 12 % overhead
/// (much less for large L). Padmé is idempotent: a padded length pads to itself.
public enum Padme {
    /// The Padmé length of `length` (≥ `length`). 0 and 1 pad to themselves.
    public static func paddedLength(_ length: Int) -> Int {
        precondition(length >= 0)
        guard length > 1 else { return length }
        let e = Int.bitWidth - 1 - length.leadingZeroBitCount  // ⌊log₂ L⌋
        let s = Int.bitWidth - e.leadingZeroBitCount            // ⌊log₂ E⌋ + 1 (0 when E = 0)
        let lastBits = e - s
        guard lastBits > 0 else { return length }
        let mask = (1 << lastBits) - 1
        return (length + mask) & ~mask
    }

    /// True when `length` is a Padmé length, i.e. some input pads to it.
    public static func isPadded(_ length: Int) -> Bool {
        length >= 0 && paddedLength(length) == length
    }
}
