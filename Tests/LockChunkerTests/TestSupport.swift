import LockChunker
import LockTesting

/// Deterministic test data and gear tables come only from LockTesting's
/// `SeededGenerator` (SplitMix64), so every input in these tests (and in
/// Tests/Vectors/chunker.json) is defined by a seed.
typealias SplitMix64 = SeededGenerator

extension SeededGenerator {
    /// A value in `range` (slightly biased modulo reduction; fine for tests).
    mutating func next(in range: ClosedRange<Int>) -> Int {
        let width = UInt64(range.upperBound - range.lowerBound) + 1
        return range.lowerBound + Int(next() % width)
    }
}

/// `count` pseudo-random bytes: successive generator outputs, each stored
/// little-endian, truncated to `count`.
func randomBytes(seed: UInt64, count: Int) -> [UInt8] {
    var rng = SeededGenerator(seed: seed)
    return rng.bytes(count)
}

/// A test gear table: the first 256 outputs of `SplitMix64(seed:)`.
func gearTable(seed: UInt64) -> [UInt64] {
    var rng = SplitMix64(seed: seed)
    return (0..<Chunker.gearTableCount).map { _ in rng.next() }
}

/// A chunker over `gearTable(seed:)`.
func makeChunker(gearSeed: UInt64, parameters: ChunkerParameters = .standard) -> Chunker {
    // The table always has 256 entries, so this cannot throw.
    try! Chunker(gear: gearTable(seed: gearSeed), parameters: parameters)
}

/// Small parameters (512 B / 2 KiB / 8 KiB) for tests that need many
/// chunks from little data, or byte-at-a-time feeding.
let smallParameters = try! ChunkerParameters(minimumSize: 512, averageSize: 2048,
                                             maximumSize: 8192)

/// Shared inputs, generated once per test process (global `let`s are lazy
/// and thread-safe).
enum Fixtures {
    static let mebibyte = 1 << 20

    /// 64 MiB from data seed 1: the average-size and edit-locality input.
    static let random64MiB = randomBytes(seed: 1, count: 64 * mebibyte)
}

/// Feeds `data` to a copy of `chunker` in pieces of the given sizes (cycled
/// until the data runs out), then finishes; returns every boundary.
func streamedBoundaries(_ chunker: Chunker, _ data: [UInt8], pieceSizes: [Int]) -> [Int] {
    var chunker = chunker
    var result: [Int] = []
    data.withUnsafeBytes { all in
        var start = 0
        var piece = 0
        while start < all.count {
            let size = min(pieceSizes[piece % pieceSizes.count], all.count - start)
            piece += 1
            chunker.feed(UnsafeRawBufferPointer(rebasing: all[start..<(start + size)])) {
                result.append($0)
            }
            start += size
        }
    }
    if let last = chunker.finish() {
        result.append(last)
    }
    return result
}

/// Chunk lengths from end offsets (`[b0, b1 - b0, ...]`).
func chunkLengths(_ boundaries: [Int]) -> [Int] {
    var previous = 0
    return boundaries.map { end in
        defer { previous = end }
        return end - previous
    }
}

/// FNV-1a 64 of each chunk's bytes: a cheap, non-cryptographic content
/// fingerprint for comparing chunk sets.
func chunkHashes(_ data: [UInt8], boundaries: [Int]) -> [UInt64] {
    data.withUnsafeBufferPointer { bytes in
        var start = 0
        return boundaries.map { end in
            var hash: UInt64 = 0xCBF2_9CE4_8422_2325
            var index = start
            while index < end {
                hash = (hash ^ UInt64(bytes[index])) &* 0x0000_0100_0000_01B3
                index &+= 1
            }
            start = end
            return hash
        }
    }
}
