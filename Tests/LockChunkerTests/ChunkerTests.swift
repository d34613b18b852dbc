import Foundation
import LockChunker
import LockCrypto
import Testing

/// Seeds used below (all data and gear tables are `SplitMix64` streams):
/// - data seed 1: the shared 64 MiB input (`Fixtures.random64MiB`);
/// - data seeds 10–13: smaller inputs for streaming and bounds tests;
/// - gear seed 2: the default test gear table; gear seed 3: a second table.
@Suite struct ChunkerTests {
    static let mebibyte = 1 << 20

    /// Checks the per-chunk size bounds for a complete boundary list.
    func expectWithinBounds(_ boundaries: [Int], length: Int, _ parameters: ChunkerParameters,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(boundaries.last == (length == 0 ? nil : length), sourceLocation: sourceLocation)
        let lengths = chunkLengths(boundaries)
        for (index, chunk) in lengths.enumerated() {
            let isLast = index == lengths.count - 1
            let lower = isLast ? 1 : parameters.minimumSize + 1
            #expect((lower...parameters.maximumSize).contains(chunk),
                    "chunk \(index) of \(lengths.count) has length \(chunk)",
                    sourceLocation: sourceLocation)
        }
    }

    // MARK: Construction

    @Test func rejectsWrongGearTableSize() {
        #expect(throws: ChunkerError.invalidGearTableCount(255)) {
            try Chunker(gear: [UInt64](repeating: 1, count: 255))
        }
        #expect(throws: ChunkerError.invalidGearTableCount(257)) {
            try Chunker(gear: [UInt64](repeating: 1, count: 257))
        }
        #expect(throws: ChunkerError.invalidGearTableCount(0)) {
            try Chunker(gear: [])
        }
    }

    @Test func descriptionDoesNotRevealTheGearTable() {
        let gear = gearTable(seed: 2)
        let chunker = makeChunker(gearSeed: 2)
        var dumped = ""
        dump(chunker, to: &dumped)
        for text in [chunker.description, chunker.debugDescription, String(reflecting: chunker),
                     dumped] {
            #expect(!text.contains(String(gear[0])))
            #expect(!text.contains(String(gear[255])))
        }
    }

    // MARK: Determinism and streaming

    @Test func sameInputAndGearGiveSameBoundaries() {
        let data = randomBytes(seed: 10, count: 8 * Self.mebibyte)
        let first = makeChunker(gearSeed: 2).boundaries(of: data)
        let second = makeChunker(gearSeed: 2).boundaries(of: data)
        #expect(first == second)
        #expect(first.count > 3)
    }

    @Test func streamingInRandomSplitsMatchesOneShot() {
        let data = randomBytes(seed: 11, count: 16 * Self.mebibyte)
        let chunker = makeChunker(gearSeed: 2)
        let oneShot = chunker.boundaries(of: data)
        #expect(oneShot.count > 5)

        var rng = SplitMix64(seed: 100)
        for _ in 0..<4 {
            // Mix of 1-byte, tiny odd, medium odd and multi-MiB pieces.
            let pieces = (0..<64).map { _ -> Int in
                switch rng.next(in: 0...9) {
                case 0...2: return rng.next(in: 1...7)
                case 3...6: return rng.next(in: 0...32_768) * 2 + 1
                default: return rng.next(in: 1...(3 * Self.mebibyte))
                }
            }
            #expect(streamedBoundaries(chunker, data, pieceSizes: pieces) == oneShot)
        }

        // Small parameters: many more boundaries per buffer edge.
        let small = randomBytes(seed: 11, count: 2 * Self.mebibyte)
        let smallChunker = makeChunker(gearSeed: 3, parameters: smallParameters)
        let smallOneShot = smallChunker.boundaries(of: small)
        #expect(smallOneShot.count > 500)
        for _ in 0..<4 {
            let pieces = (0..<997).map { _ in rng.next(in: 1...4099) }
            #expect(streamedBoundaries(smallChunker, small, pieceSizes: pieces) == smallOneShot)
        }
    }

    @Test func streamingOneByteAtATimeMatchesOneShot() {
        let data = randomBytes(seed: 12, count: 192 * 1024)
        let chunker = makeChunker(gearSeed: 2, parameters: smallParameters)
        let oneShot = chunker.boundaries(of: data)
        #expect(oneShot.count > 40)
        #expect(streamedBoundaries(chunker, data, pieceSizes: [1]) == oneShot)
        #expect(streamedBoundaries(chunker, data, pieceSizes: [3, 1, 4, 1, 5, 9, 2, 6]) == oneShot)
        #expect(streamedBoundaries(chunker, data, pieceSizes: [8191, 1, 8193]) == oneShot)
    }

    /// Buffers that end exactly on, just before and just after each boundary.
    @Test func buffersSplitAroundBoundariesMatchOneShot() {
        let data = randomBytes(seed: 12, count: 192 * 1024)
        let chunker = makeChunker(gearSeed: 2, parameters: smallParameters)
        let oneShot = chunker.boundaries(of: data)
        for shift in -1...1 {
            var pieces: [Int] = []
            var previous = 0
            for end in oneShot.dropLast() {
                pieces.append(end + shift - previous)
                previous = end + shift
            }
            pieces.append(data.count - previous)
            #expect(streamedBoundaries(chunker, data, pieceSizes: pieces) == oneShot,
                    "splits at boundary \(shift >= 0 ? "+" : "")\(shift)")
        }
    }

    @Test func feedReportsAbsoluteOffsetsOnlyInsideEachBuffer() {
        let data = randomBytes(seed: 12, count: 64 * 1024)
        var chunker = makeChunker(gearSeed: 2, parameters: smallParameters)
        data.withUnsafeBytes { all in
            var start = 0
            for size in [1000, 20_000, 1, 43_535] {
                let end = start + size
                chunker.feed(UnsafeRawBufferPointer(rebasing: all[start..<end])) { boundary in
                    #expect(boundary > start && boundary <= end)
                }
                #expect(chunker.offset == end)
                start = end
            }
        }
    }

    @Test func finishResetsForReuse() {
        let data = randomBytes(seed: 13, count: 100_000)
        let reference = makeChunker(gearSeed: 2, parameters: smallParameters)
        let oneShot = reference.boundaries(of: data)
        var chunker = reference
        for _ in 0..<2 {
            var seen: [Int] = []
            data.withUnsafeBytes { chunker.feed($0) { seen.append($0) } }
            if let last = chunker.finish() { seen.append(last) }
            #expect(seen == oneShot)
            #expect(chunker.offset == 0)
        }
        #expect(chunker.finish() == nil)
    }

    @Test func boundariesIgnoresAndKeepsStreamState() {
        let data = randomBytes(seed: 13, count: 100_000)
        var chunker = makeChunker(gearSeed: 2, parameters: smallParameters)
        let fresh = chunker.boundaries(of: data)
        data.withUnsafeBytes { chunker.feed(UnsafeRawBufferPointer(rebasing: $0[..<777])) { _ in } }
        #expect(chunker.boundaries(of: data) == fresh)
        #expect(chunker.offset == 777)
    }

    @Test func nonContiguousCollectionMatchesArray() {
        let data = randomBytes(seed: 13, count: 300_000)
        let chunker = makeChunker(gearSeed: 2, parameters: smallParameters)
        let lazy = data.lazy.map { $0 }  // not contiguous: takes the buffered path
        #expect(chunker.boundaries(of: lazy) == chunker.boundaries(of: data))
        #expect(chunker.boundaries(of: data[1000..<250_000])
                    == chunker.boundaries(of: Array(data[1000..<250_000])))
    }

    // MARK: Bounds

    @Test func emptyInputHasNoChunks() {
        let chunker = makeChunker(gearSeed: 2)
        #expect(chunker.boundaries(of: [UInt8]()).isEmpty)
        var streaming = chunker
        streaming.feed(UnsafeRawBufferPointer(start: nil, count: 0)) { _ in
            Issue.record("no boundary expected")
        }
        #expect(streaming.finish() == nil)
    }

    @Test(arguments: [1, 2, 63, 4096, 256 * 1024 - 1, 256 * 1024, 256 * 1024 + 1])
    func inputUpToMinimumPlusOneIsOneChunk(length: Int) {
        // A chunk needs at least minimumSize + 1 bytes to end before the stream does.
        let data = randomBytes(seed: 13, count: length)
        #expect(makeChunker(gearSeed: 2).boundaries(of: data) == [length])
    }

    @Test func randomChunksAreWithinBounds() {
        let data = Fixtures.random64MiB
        let boundaries = makeChunker(gearSeed: 2).boundaries(of: data)
        expectWithinBounds(boundaries, length: data.count, .standard)

        let small = randomBytes(seed: 12, count: 1 * Self.mebibyte)
        let smallBoundaries = makeChunker(gearSeed: 3, parameters: smallParameters)
            .boundaries(of: small)
        expectWithinBounds(smallBoundaries, length: small.count, smallParameters)
    }

    /// On a run of zeros the gear hash becomes constant after 64 bytes, so each
    /// chunk either cuts within its first 64 hashed bytes or runs to the
    /// maximum; either way every chunk sees the same bytes and has the same length.
    @Test(arguments: [2, 3, 4, 5] as [UInt64])
    func zerosGiveEqualChunksWithinBounds(gearSeed: UInt64) {
        let zeros = [UInt8](repeating: 0, count: 20 * Self.mebibyte)
        let chunker = makeChunker(gearSeed: gearSeed)
        let boundaries = chunker.boundaries(of: zeros)
        expectWithinBounds(boundaries, length: zeros.count, .standard)
        #expect(boundaries == chunker.boundaries(of: zeros))
        let lengths = chunkLengths(boundaries).dropLast()
        #expect(Set(lengths).count == 1, "lengths: \(Set(lengths))")
        #expect(streamedBoundaries(chunker, zeros, pieceSizes: [1_000_003]) == boundaries)
    }

    /// A gear table whose entry for 0 is 0 keeps the hash at 0 on zeros: the
    /// first hashed byte matches, giving chunks of exactly minimumSize + 1.
    @Test func zerosWithZeroGearEntryCutRightAfterTheMinimum() throws {
        var gear = gearTable(seed: 2)
        gear[0] = 0
        let chunker = try Chunker(gear: gear)
        let boundaries = chunker.boundaries(of: [UInt8](repeating: 0, count: 3 * Self.mebibyte))
        #expect(Set(chunkLengths(boundaries).dropLast()) == [256 * 1024 + 1])
    }

    /// With every gear entry 2^63 the hash is 2^63 after every byte, and both
    /// masks include bit 63, so nothing matches: every chunk is cut at the maximum.
    @Test func neverMatchingHashGivesMaximumSizeChunks() throws {
        let gear = [UInt64](repeating: 1 << 63, count: 256)
        let chunker = try Chunker(gear: gear, parameters: smallParameters)
        let data = randomBytes(seed: 13, count: 8192 * 5 + 100)
        let boundaries = chunker.boundaries(of: data)
        expectWithinBounds(boundaries, length: data.count, smallParameters)
        let allMaximum = Array(stride(from: 8192, through: 8192 * 5, by: 8192)) + [data.count]
        #expect(boundaries == allMaximum)
    }

    // MARK: Statistics

    /// Mean chunk size over 64 MiB of random data.
    ///
    /// With a random gear table each hashed position matches independently
    /// with probability 2^-22 (small mask) before 1 MiB and 2^-18 (large
    /// mask) after it, so the expected length is
    /// `min + (1 - a)/2^-22 + a * (1 - (1 - 2^-18)^(3 MiB)) / 2^-18`
    /// with `a = (1 - 2^-22)^(768 KiB)`, ≈ 1 196 700 bytes (≈ 1.14 MiB, a
    /// little above the nominal 1 MiB because nothing below 256 KiB is cut).
    /// The standard deviation of one chunk's length is ≈ 325 KB (measured),
    /// so over the ~55 chunks of 64 MiB the mean's standard error is ≈ 44 KB
    /// (3.7 %). The band is ±12 % (about 3.3 standard errors) around the
    /// expectation: wide enough not to be fragile, narrow enough to catch a
    /// broken mask or normalization (e.g. a small mask one bit short gives
    /// ≈ 1.00 MB, −16 %). Exact masks are pinned by the mask-constant and
    /// golden-vector tests.
    @Test func meanChunkSizeIsNearExpectation() {
        let data = Fixtures.random64MiB
        let parameters = ChunkerParameters.standard
        let boundaries = makeChunker(gearSeed: 2).boundaries(of: data)
        let complete = chunkLengths(boundaries).dropLast()  // last chunk is truncated
        let mean = Double(complete.reduce(0, +)) / Double(complete.count)

        let pSmall = 1 / Double(1 << 22)
        let pLarge = 1 / Double(1 << 18)
        let smallSpan = Double(parameters.averageSize - parameters.minimumSize)
        let largeSpan = Double(parameters.maximumSize - parameters.averageSize)
        let survive = exp(smallSpan * log1p(-pSmall))
        let expected = Double(parameters.minimumSize) + (1 - survive) / pSmall
            + survive * (1 - exp(largeSpan * log1p(-pLarge))) / pLarge
        #expect(abs(expected - 1_196_700) < 1000)
        #expect(abs(mean - expected) <= 0.12 * expected,
                "mean \(mean) over \(complete.count) chunks, expected ≈ \(expected)")
    }

    @Test func differentGearTablesGiveDifferentBoundaries() {
        let data = randomBytes(seed: 10, count: 16 * Self.mebibyte)
        let first = makeChunker(gearSeed: 2).boundaries(of: data)
        let second = makeChunker(gearSeed: 3).boundaries(of: data)
        #expect(first != second)
        // Not a single interior boundary in common.
        #expect(Set(first.dropLast()).isDisjoint(with: second.dropLast()))
    }

    // MARK: Edit locality

    enum Edit: String, CaseIterable, Sendable {
        case insert, delete, overwrite
    }

    /// One-byte edit in the middle of 64 MiB: at most two chunks change.
    ///
    /// Chunks are compared by content (FNV-1a 64 of each chunk's bytes), as
    /// deduplication would: count the chunks on each side whose content does
    /// not occur on the other.
    @Test(arguments: Edit.allCases)
    func oneByteEditChangesAtMostTwoChunks(edit: Edit) {
        let original = Fixtures.random64MiB
        let middle = original.count / 2 + 12_345
        var edited = original
        switch edit {
        case .insert: edited.insert(0x5A, at: middle)
        case .delete: edited.remove(at: middle)
        case .overwrite: edited[middle] ^= 0xFF
        }
        let chunker = makeChunker(gearSeed: 2)
        let before = chunkHashes(original, boundaries: chunker.boundaries(of: original))
        let after = chunkHashes(edited, boundaries: chunker.boundaries(of: edited))
        let beforeSet = Set(before)
        let afterSet = Set(after)
        let onlyBefore = before.filter { !afterSet.contains($0) }.count
        let onlyAfter = after.filter { !beforeSet.contains($0) }.count
        #expect(onlyBefore >= 1 && onlyBefore <= 2, "\(onlyBefore) of \(before.count) chunks lost")
        #expect(onlyAfter >= 1 && onlyAfter <= 2, "\(onlyAfter) of \(after.count) chunks new")
    }
}

/// The production path: gear tables derived from two vaults' chunker keys
/// (LockCrypto) cut the same data at different places, so chunk sizes of a
/// known file do not match across vaults.
@Suite struct KeyedGearTests {
    @Test func differentVaultKeysGiveDifferentBoundaries() throws {
        let data = randomBytes(seed: 11, count: 16 << 20)
        let a = try Chunker(gear: VaultKeys.generate().gearTable()).boundaries(of: data)
        let b = try Chunker(gear: VaultKeys.generate().gearTable()).boundaries(of: data)
        #expect(a.count > 4 && b.count > 4)
        #expect(Set(a.dropLast()).isDisjoint(with: b.dropLast()))
        // The same keys always cut the same way.
        let keys = VaultKeys.generate()
        #expect(try Chunker(gear: keys.gearTable()).boundaries(of: data) == Chunker(gear: keys.gearTable()).boundaries(of: data))
    }
}
