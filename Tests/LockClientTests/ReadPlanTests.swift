import Foundation
@testable import LockClient
import LockTesting
import Testing

/// One read plan for the fast and the slow path (issue 14): a plan made
/// without waiting holds the bytes when everything is local; otherwise its
/// local parts, and `finish` fetches only the rest.
@Suite struct ReadPlanTests {
    @Test func aPlanIsReadyWhenLocalAndFinishesWithOnlyTheMissingChunks() async throws {
        var options = testOptions()
        options.readAhead = 0  // what is local is what this test read
        let (server, d) = try makeDevices(2, options: options)
        let a = d[0].engine, b = d[1].engine
        // Beyond the 4 MiB largest chunk: at least two chunks whatever the vault's gear table.
        let text = seededText(5 << 20, seed: 21)
        try await a.put("F", text)
        try await a.syncNow()
        try await b.pullOnce()
        let ino = try b.resolve("F")
        let chunks = try #require(b.snapshot()["/F"]?.manifest?.chunks)
        #expect(chunks.count >= 2)
        // The first chunk is read once (cached); then a read over the first two chunks.
        _ = try await b.read(ino, offset: 0, size: 10)
        let span = chunks[0].length + 10
        let plan = try b.planRead(ino, offset: 0, size: span)
        #expect(plan.bytes == nil)
        #expect(plan.parts.map { $0 != nil } == [true, false])
        // The server loses the first chunk: finish must not ask for it again.
        server.state.withLock { _ = $0.chunks.removeValue(forKey: chunks[0].id) }
        #expect(try await b.finish(plan) == Array(text.utf8.prefix(span)))
        // Now both are local: the plan is ready at once.
        #expect(try b.planRead(ino, offset: 0, size: span).bytes == Array(text.utf8.prefix(span)))
        // A file open for writing here reads from its staging copy.
        let h = try await b.openForWrite(ino, truncate: false)
        _ = try Array("XY".utf8).withUnsafeBytes { try b.write(h, offset: 0, bytes: $0) }
        #expect(try b.planRead(ino, offset: 0, size: 4).bytes == Array("XY".utf8) + Array(text.utf8.dropFirst(2).prefix(2)))
        try b.close(h)
    }
}
