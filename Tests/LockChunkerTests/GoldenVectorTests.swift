import LockChunker
import LockTesting
import Testing

/// Golden chunk boundaries in Tests/Vectors/chunker.json.
///
/// Boundaries are a stored format: once data is stored, a different boundary
/// for the same input and key means nothing new deduplicates against it.
/// These vectors pin the algorithm (``Chunker/formatVersion``). The file uses
/// the shared `GoldenVectors` format (`{"about": ..., "vectors": {name:
/// value}}`): a missing file or entry fails the test; entries are added only
/// when `LOCKFS_WRITE_VECTORS=1` is set, e.g.
/// `LOCKFS_WRITE_VECTORS=1 swift test --filter LockChunkerTests.GoldenVectorTests`.
///
/// Each value is the comma-separated list of chunk end offsets. Inputs are
/// defined by seeds (see `SplitMix64`, `randomBytes`, `gearTable` in
/// TestSupport.swift): random data is successive little-endian
/// SplitMix64(dataSeed) outputs truncated to the length; the gear table is
/// the first 256 outputs of SplitMix64(gearSeed).
@Suite struct GoldenVectorTests {
    struct VectorCase: Sendable {
        /// `nil` for an all-zero input.
        var dataSeed: UInt64?
        var length: Int
        var gearSeed: UInt64
        var minimumSize: Int
        var averageSize: Int
        var maximumSize: Int

        /// The entry name, which spells out the whole input definition.
        var name: String {
            let data = dataSeed.map { "random(seed \($0))" } ?? "zeros"
            return "\(data) length \(length), gear(seed \(gearSeed)), "
                + "sizes \(minimumSize)/\(averageSize)/\(maximumSize)"
        }

        func boundaries() throws -> [Int] {
            let parameters = try ChunkerParameters(
                minimumSize: minimumSize, averageSize: averageSize, maximumSize: maximumSize)
            let chunker = try Chunker(gear: gearTable(seed: gearSeed), parameters: parameters)
            let data = dataSeed.map { randomBytes(seed: $0, count: length) }
                ?? [UInt8](repeating: 0, count: length)
            return chunker.boundaries(of: data)
        }
    }

    static let cases: [VectorCase] = [
        // Standard parameters: ~20 chunks of random data.
        VectorCase(dataSeed: 1, length: 24 << 20, gearSeed: 2,
                   minimumSize: 256 << 10, averageSize: 1 << 20, maximumSize: 4 << 20),
        // Small parameters: ~110 chunks, exercising many more cut points.
        VectorCase(dataSeed: 3, length: 256 << 10, gearSeed: 4,
                   minimumSize: 512, averageSize: 2048, maximumSize: 8192),
        // Low entropy: a run of zeros.
        VectorCase(dataSeed: nil, length: 9 << 20, gearSeed: 2,
                   minimumSize: 256 << 10, averageSize: 1 << 20, maximumSize: 4 << 20),
    ]

    static let about =
        "LockChunker golden boundaries (FastCDC, normalization level 2). Each name defines an "
        + "input: random(seed s) = successive little-endian SplitMix64(s) outputs, zeros = zero "
        + "bytes; gear(seed g) = first 256 SplitMix64(g) outputs; sizes = min/avg/max. Each value "
        + "is the comma-separated list of chunk end offsets. A changed vector is a format change: "
        + "bump Chunker.formatVersion and update the docs."

    @Test func boundariesMatchGoldenVectors() throws {
        var computed = ["formatVersion": String(Chunker.formatVersion)]
        for vectorCase in Self.cases {
            let boundaries = try vectorCase.boundaries()
            #expect(!boundaries.isEmpty)
            computed[vectorCase.name] = boundaries.map(String.init).joined(separator: ",")
        }
        let mismatches = try GoldenVectors.verify(computed, file: "chunker", about: Self.about)
        for mismatch in mismatches {
            Issue.record("""
                Tests/Vectors/chunker.json: \(mismatch) \
                For the chunker: bump Chunker.formatVersion, regenerate the file with \
                LOCKFS_WRITE_VECTORS=1 (after removing the stale entries) and update the docs.
                """)
        }
    }
}
