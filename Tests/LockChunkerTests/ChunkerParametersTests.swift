import LockChunker
import Testing

@Suite struct ChunkerParametersTests {
    @Test func standardSizes() {
        let standard = ChunkerParameters.standard
        #expect(standard.minimumSize == 256 * 1024)
        #expect(standard.averageSize == 1024 * 1024)
        #expect(standard.maximumSize == 4 * 1024 * 1024)
    }

    /// The masks are part of the stored format; these constants are the
    /// ones documented on `ChunkerParameters`.
    @Test func standardMasksAreTheDocumentedConstants() {
        let standard = ChunkerParameters.standard
        #expect(standard.smallMask == 0xAAA5_54AA_A554_0000)
        #expect(standard.largeMask == 0xAAA5_54AA_A400_0000)
        #expect(standard.smallMask.nonzeroBitCount == 22)
        #expect(standard.largeMask.nonzeroBitCount == 18)
    }

    @Test(arguments: 8...28)
    func maskConstruction(log2Average: Int) throws {
        let average = 1 << log2Average
        let parameters = try ChunkerParameters(
            minimumSize: max(64, average / 4), averageSize: average, maximumSize: average * 4)
        let small = parameters.smallMask
        let large = parameters.largeMask
        #expect(small.nonzeroBitCount == log2Average + 2)
        #expect(large.nonzeroBitCount == log2Average - 2)
        // Large is small minus small's four lowest one-bits.
        #expect(large & small == large)
        #expect((small ^ large).leadingZeroBitCount > 0)
        #expect(large.trailingZeroBitCount > (small ^ large).trailingZeroBitCount)
        #expect((small ^ large).nonzeroBitCount == 4)
        // Spread over bits 63...16, top bit always set.
        #expect(small & 0xFFFF == 0)
        #expect(small >> 63 == 1)
        var expected: UInt64 = 0
        let count = log2Average + 2
        for i in 0..<count {
            expected |= 1 << UInt64(63 - (i * 48) / count)
        }
        #expect(small == expected)
    }

    @Test func validParametersAtTheLimits() throws {
        let smallest = try ChunkerParameters(minimumSize: 64, averageSize: 256, maximumSize: 257)
        #expect(smallest.minimumSize == 64)
        let largest = try ChunkerParameters(
            minimumSize: 1 << 27, averageSize: 1 << 28, maximumSize: 1 << 30)
        #expect(largest.maximumSize == 1 << 30)
    }

    @Test func rejectsInvalidParameters() {
        #expect(throws: ChunkerError.minimumSizeTooSmall(63)) {
            try ChunkerParameters(minimumSize: 63, averageSize: 1024, maximumSize: 4096)
        }
        #expect(throws: ChunkerError.averageSizeNotPowerOfTwo(1000)) {
            try ChunkerParameters(minimumSize: 256, averageSize: 1000, maximumSize: 4096)
        }
        #expect(throws: ChunkerError.averageSizeNotPowerOfTwo(0)) {
            try ChunkerParameters(minimumSize: 64, averageSize: 0, maximumSize: 4096)
        }
        #expect(throws: ChunkerError.averageSizeNotPowerOfTwo(-1024)) {
            try ChunkerParameters(minimumSize: 64, averageSize: -1024, maximumSize: 4096)
        }
        #expect(throws: ChunkerError.averageSizeOutOfRange(128)) {
            try ChunkerParameters(minimumSize: 64, averageSize: 128, maximumSize: 4096)
        }
        #expect(throws: ChunkerError.averageSizeOutOfRange(1 << 29)) {
            try ChunkerParameters(minimumSize: 64, averageSize: 1 << 29, maximumSize: 1 << 30)
        }
        #expect(throws: ChunkerError.maximumSizeTooLarge((1 << 30) + 1)) {
            try ChunkerParameters(minimumSize: 64, averageSize: 1 << 20, maximumSize: (1 << 30) + 1)
        }
        #expect(throws: ChunkerError.sizesNotIncreasing(minimum: 1024, average: 1024, maximum: 4096)) {
            try ChunkerParameters(minimumSize: 1024, averageSize: 1024, maximumSize: 4096)
        }
        #expect(throws: ChunkerError.sizesNotIncreasing(minimum: 256, average: 1024, maximum: 1024)) {
            try ChunkerParameters(minimumSize: 256, averageSize: 1024, maximumSize: 1024)
        }
        #expect(throws: ChunkerError.sizesNotIncreasing(minimum: 256, average: 1024, maximum: 512)) {
            try ChunkerParameters(minimumSize: 256, averageSize: 1024, maximumSize: 512)
        }
    }

    @Test func errorsDescribeThemselves() {
        let error = ChunkerError.invalidGearTableCount(3)
        #expect(error.description.contains("256"))
        #expect(error.description.contains("3"))
    }
}
