import Foundation
import LockCrypto
import LockTesting
import LockWire
import Testing

/// The journal's limits over real HTTP (issue 15): pages end by bytes, the
/// journal counts against the quota, an append names at most 2^18 chunks.
@Suite struct JournalLimitTests {
    /// A manifest of 80,000 random chunk ids: an entry creating a file with it
    /// is about 2.9 MB (the server does not read batches, so the ids need not exist).
    static func largeManifest() throws -> Manifest {
        try Manifest(chunks: (0..<80_000).map { _ in .init(id: ChunkID(hex: Hex.encode((0..<32).map { _ in UInt8.random(in: 0...255) }))!, length: 1) })
    }

    @Test func pagesEndByBytesAndJournalBytesCountAgainstTheQuota() async throws {
        let server = try await ServerProcess.start(arguments: ["--quota", "1M"])
        defer { server.stop() }
        let vault = try TestVault.make(user: "big")
        let client = try await vault.register(on: server)
        let manifest = try Self.largeManifest()
        var head = vault.genesis
        var accepted: [Int] = []
        var refused: APIResponse?
        while refused == nil, accepted.count < 10 {
            let e = try vault.entry(creating: "f\(accepted.count)", manifest: manifest, baseSeq: JournalSeq(UInt64(accepted.count)), baseHead: head)
            let r = try await client.append(e, references: [])
            if r.status == 201 {
                head = head.next(seq: UInt64(accepted.count + 1), entry: e.encoded)
                accepted.append(e.encoded.count)
            } else {
                refused = r
            }
        }
        // A quota of 1 MiB, plus the headroom of 16 MiB for the journal: the sixth entry is too many.
        let usage = accepted.reduce(0, +)
        #expect(refused?.status == 507 && refused?.errorCode == "quota_exceeded", "\(refused.map { String(decoding: $0.body, as: UTF8.self) } ?? "none")")
        #expect(usage <= 17 << 20 && usage + accepted[0] > 17 << 20, "\(accepted)")
        #expect(try await client.accountInfo().storedBytes == Int64(usage))
        // A page ends once it holds 8 MiB: three of these entries, then the rest.
        let first = try await client.pull(after: 0)
        #expect(first.items.count == 3 && first.latest == JournalSeq(UInt64(accepted.count)))
        let rest = try await client.pull(after: 3)
        #expect(rest.items.map(\.seq.rawValue) == Array(4...UInt64(accepted.count)))
    }

    @Test func anAppendNamesAtMost2To18Chunks() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "refs")
        let client = try await vault.register(on: server)
        let e = try vault.entry(creating: "x", baseSeq: .start, baseHead: vault.genesis)
        let id = ChunkID(hex: String(repeating: "ab", count: 32))!
        let r = try await client.append(e, references: Array(repeating: id, count: APIv1.maxReferencesPerEntry + 1))
        #expect(r.status == 400 || r.status == 413, "\(r.status)")
        #expect(try await client.pull(after: 0).latest == .start)
    }

    /// One account abuses what it may (32 long-polls held, the largest pages
    /// pulled over and over, large appends): another account's appends and
    /// pulls still answer promptly. The mechanism: no global stall (pages end
    /// by bytes, references are checked outside the one writer, polls are
    /// capped per account). The bound is far above a quiet run's (5× the worst
    /// of a loaded machine).
    @Test func anotherAccountStaysResponsiveWhileOneAbuses() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let hogVault = try TestVault.make(user: "hog")
        var hog = try await hogVault.register(on: server)
        hog.http = wideHTTPClient
        let quietVault = try TestVault.make(user: "quiet")
        let quiet = try await quietVault.register(on: server)
        let manifest = try Self.largeManifest()
        // Three large entries to pull, and a writer adding more.
        var head = hogVault.genesis
        for i in 0..<3 {
            let e = try hogVault.entry(creating: "big\(i)", manifest: manifest, baseSeq: JournalSeq(UInt64(i)), baseHead: head)
            #expect(try await hog.append(e, references: []).status == 201)
            head = head.next(seq: UInt64(i + 1), entry: e.encoded)
        }
        let client = hog
        let stop = Task { try await Task.sleep(for: .seconds(600)) }
        var abuse: [Task<Void, Never>] = (0..<APIv1.maxLongPollsPerAccount).map { _ in
            Task { _ = try? await client.send(.GET, "/v1/journal?after=99&wait=60", timeout: .seconds(90)) }
        }
        for _ in 0..<4 {
            abuse.append(Task { while !stop.isCancelled { _ = try? await client.pull(after: 0) } })
        }
        var slowest = Duration.zero
        var seq: UInt64 = 0, quietHead = quietVault.genesis
        for i in 0..<20 {
            let started = ContinuousClock.now
            let e = try quietVault.entry(creating: "small\(i)", baseSeq: JournalSeq(seq), baseHead: quietHead)
            let r = try await quiet.append(e, references: [])
            #expect(r.status == 201)
            seq += 1
            quietHead = quietHead.next(seq: seq, entry: e.encoded)
            #expect(try await quiet.pull(after: seq - 1).items.count == 1)
            slowest = max(slowest, ContinuousClock.now - started)
        }
        stop.cancel()
        for t in abuse { t.cancel() }
        #expect(slowest < .seconds(5), "the quiet account waited \(slowest)")
    }
}
