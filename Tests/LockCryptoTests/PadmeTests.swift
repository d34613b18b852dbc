import Foundation
import Testing
@testable import LockCrypto

/// Padmé as the PURBs paper defines it (Nikitin et al. 2019, Algorithm 1),
/// written with floating-point logarithms exactly as printed there.
private func paperPadme(_ l: Int) -> Int {
    guard l > 1 else { return l }
    let e = Int(floor(log2(Double(l))))
    let s = Int(floor(log2(Double(e)))) + 1
    let z = e - s
    guard z > 0 else { return l }
    let m = (1 << z) - 1
    return (l + m) & ~m
}

@Suite struct PadmeTests {
    @Test func handComputedValues() {
        // Worked by hand from the definition: E = ⌊log₂L⌋, S = ⌊log₂E⌋+1, mask = 2^(E−S) − 1.
        let table: [(Int, Int)] = [
            (0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (7, 7), (8, 8), (9, 10), (11, 12),
            (17, 18), (33, 36), (100, 104), (1000, 1024), (1025, 1088),
            (1_048_577, 1_081_344), (4_194_305, 4_325_376),
        ]
        for (length, padded) in table {
            #expect(Padme.paddedLength(length) == padded, "Padmé(\(length))")
        }
    }

    @Test func matchesThePaperForEveryLengthUpTo2Pow20() {
        for l in 0...(1 << 20) where Padme.paddedLength(l) != paperPadme(l) {
            Issue.record("Padmé(\(l)) = \(Padme.paddedLength(l)), paper says \(paperPadme(l))")
            return
        }
    }

    @Test func matchesThePaperAtLargeLengths() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<10_000 {
            let l = Int.random(in: 1...(1 << 40), using: &rng)
            #expect(Padme.paddedLength(l) == paperPadme(l))
        }
    }

    @Test func isIdempotentMonotonicAndBounded() {
        var previous = 0
        for l in 0...200_000 {
            let p = Padme.paddedLength(l)
            #expect(p >= l && p >= previous)
            #expect(Padme.paddedLength(p) == p)
            #expect(Padme.isPadded(p))
            // The paper's bound: overhead at most 12 % (checked past tiny sizes).
            if l >= 8 { #expect(Double(p - l) / Double(l) <= 0.12) }
            previous = p
        }
    }

    @Test func leaksFewDistinctSizesPerPowerOfTwo() {
        // Lengths in [2^E, 2^(E+1)) pad to one of 2^S multiples of 2^(E−S)
        // inside the interval, or up to 2^(E+1) itself.
        let e = 20
        let distinct = Set(((1 << e)..<(1 << (e + 1))).map(Padme.paddedLength))
        #expect(distinct.count == (1 << 5) + 1)  // S = ⌊log₂ 20⌋ + 1 = 5
    }
}
