import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// Where committed content lives until the server has it (docs/design.md, "Durability").
@Suite struct LocalDurabilityTests {
    /// Random bytes as a string of letters (the chunker sees no repeats).
    static func letters(_ count: Int, seed: UInt64) -> String {
        var rng = SeededGenerator(seed: seed)
        return String((0..<count).map { _ in Character(UnicodeScalar(UInt8.random(in: 97...122, using: &rng))) })
    }

    static func outboxFiles(_ home: URL) -> [String] {
        let dir = home.appendingPathComponent("outbox")
        return ((try? FileManager.default.subpathsOfDirectory(atPath: dir.path)) ?? []).filter { $0.count > 3 }
    }

    @Test func smallChunksCommitInTheIndexLargeOnesAsOutboxFilesAndBothSurviveACrash() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine
        let small = Self.letters(10_000, seed: 1)
        let large = Self.letters(3 << 20, seed: 2)
        try await a.put("small.txt", small)
        try await a.put("large.bin", large)

        // The small file's chunk is a row of the index; the large file's chunks over the
        // inline limit are outbox files.
        let rows = try a.index.outboxChunkSizes()
        let files = Self.outboxFiles(d[0].home)
        #expect(rows.contains { $0.1 < 20_000 })
        #expect(rows.allSatisfy { $0.1 <= a.options.inlineChunkLimit })
        #expect(!files.isEmpty)
        let smallID = try #require(try a.node(a.resolve("small.txt")).manifest?.chunks.first?.id)
        #expect(rows.contains { $0.0 == smallID })
        #expect(!a.cache.contains(smallID))   // the cache gets it once uploaded

        // Reads of the just-written file come from the index.
        #expect(try await a.text("small.txt") == small)

        // "Crash": a second engine on the same home, without stopping the first.
        let creds = DeviceCredentials(server: "memory", user: "u", device: a.device, deviceName: "d0", vault: a.keys.vaultID,
                                      token: "t", keys: a.keys)
        let again = try Engine(home: ClientHome(directory: d[0].home), credentials: creds, remote: d[0].remote, options: testOptions())
        try await again.syncNow()
        try await d[1].engine.pullOnce()
        #expect(try await d[1].engine.text("small.txt") == small)
        #expect(try await d[1].engine.text("large.bin") == large)

        // Once on the server, both kinds move to the cache (in the background, when changes pause).
        let deadline = ContinuousClock.now + .seconds(10)
        while try !again.index.outboxChunkSizes().isEmpty || !Self.outboxFiles(d[0].home).isEmpty, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(try again.index.outboxChunkSizes().isEmpty)
        #expect(Self.outboxFiles(d[0].home).isEmpty)
        #expect(again.cache.contains(smallID))
        let largeIDs = try #require(try again.node(again.resolve("large.bin")).manifest?.chunks.map(\.id))
        #expect(largeIDs.allSatisfy { again.cache.contains($0) })
    }

    @Test func anOutboxFileNoOperationNeedsIsDroppedAtStart() async throws {
        let (_, d) = try makeDevices(1)
        let a = d[0].engine
        try await a.put("kept.bin", Self.letters(1 << 20, seed: 3))
        let before = Self.outboxFiles(d[0].home)
        #expect(!before.isEmpty)
        // A sealed chunk whose operation a power cut took: fsynced file, lost commit.
        let orphan = ChunkID.random()
        let dir = d[0].home.appendingPathComponent("outbox/" + orphan.hex.prefix(2))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: dir.appendingPathComponent(orphan.hex))

        let creds = DeviceCredentials(server: "memory", user: "u", device: a.device, deviceName: "d0", vault: a.keys.vaultID,
                                      token: "t", keys: a.keys)
        let again = try Engine(home: ClientHome(directory: d[0].home), credentials: creds, remote: d[0].remote, options: testOptions())
        #expect(Set(Self.outboxFiles(d[0].home)) == Set(before))
        #expect(again.status().queuedOperations == 1)
    }

    @Test func syncToDiskIsWhatFsyncDoesAndCountsDown() async throws {
        let (_, d) = try makeDevices(1)
        let a = d[0].engine
        try await a.put("f.txt", "x")
        #expect(a.state.withLock { $0.unsyncedCommits } > 0)
        try a.syncToDisk()
        #expect(a.state.withLock { $0.unsyncedCommits } == 0)
    }
}

/// The staging copy of a file open for writing: memory while small, a file beyond.
@Suite struct StagingFileTests {
    func bytes(_ f: StagingFile) throws -> [UInt8] { try f.withContents { Array($0) } }

    @Test func smallFilesStayInMemoryAndSpillToDiskWhenTheyGrow() throws {
        let dir = try makeTemporaryDirectory("staging")
        let path = dir.appendingPathComponent("s").path
        let f = try StagingFile(path: path)
        try [UInt8](repeating: 7, count: 1000).withUnsafeBytes { try f.write($0, at: 0) }
        #expect(!FileManager.default.fileExists(atPath: path))
        // A write past the end leaves a gap of zeros.
        try [UInt8]([9]).withUnsafeBytes { try f.write($0, at: 2000) }
        #expect(f.size == 2001)
        #expect(try f.read(offset: 999, count: 3) == [7, 0, 0])
        // Past the memory limit: on disk, same content.
        let big = [UInt8](repeating: 5, count: StagingFile.memoryLimit)
        try big.withUnsafeBytes { try f.write($0, at: 10) }
        #expect(FileManager.default.fileExists(atPath: path))
        let all = try bytes(f)
        #expect(all.count == 10 + StagingFile.memoryLimit)
        #expect(Array(all[0..<10]) == [UInt8](repeating: 7, count: 10))
        #expect(all[10...].allSatisfy { $0 == 5 })
        try f.truncate(4)
        #expect(try bytes(f) == [7, 7, 7, 7])
        f.discard()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func truncateGrowsWithZerosAndShrinks() throws {
        let dir = try makeTemporaryDirectory("staging")
        let f = try StagingFile(path: dir.appendingPathComponent("t").path)
        try Array("hello".utf8).withUnsafeBytes { try f.write($0, at: 0) }
        try f.truncate(8)
        #expect(try bytes(f) == Array("hello".utf8) + [0, 0, 0])
        try f.truncate(2)
        #expect(try bytes(f) == Array("he".utf8))
        try f.truncate(0)
        #expect(try bytes(f).isEmpty)
        #expect(try f.read(offset: 0, count: 10).isEmpty)
        f.discard()
    }
}
