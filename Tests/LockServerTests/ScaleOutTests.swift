import Foundation
import LockCrypto
import LockTesting
import LockWire
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Several `lockfs-server` processes on one PostgreSQL database and one S3
/// bucket (moto), over real HTTP: the deployment of docs/operations.md
/// "Several instances behind a load balancer".
@Suite struct ScaleOutTests {
    typealias P = PostgresFixture

    /// A long-poll on instance 1 returns within a second of an append made
    /// through instance 2, whose chunk went to the bucket through instance 2
    /// and comes back through instance 1.
    @Test func longPollsWakeAcrossInstancesWithS3Blobs() async throws {
        let cluster = try await ScaleOutCluster.start(instances: 2, name: "s3wake")
        defer { for s in cluster.instances { s.stop() } }
        let (first, second) = (cluster.instances[0], cluster.instances[1])
        let vault = try TestVault.make(user: "alice")
        let viaFirst = try await vault.register(on: first)
        let viaSecond = APIClient(baseURL: second.baseURL, token: viaFirst.token)
        var head = (JournalSeq.start, vault.genesis)
        for round in 1...3 {
            let chunk = try vault.chunk(String(repeating: "round \(round) ", count: 2000))
            #expect(try await viaSecond.putChunk(chunk).status == 201)
            let after = head.0.rawValue
            let poll = Task { try await viaFirst.pull(after: after, wait: 20) }
            try #require(await first.longPollsOpen(1), "the long-poll did not open")
            let entry = try vault.entry(creating: "f\(round)", baseSeq: head.0, baseHead: head.1)
            let start = ContinuousClock.now
            let r = try await viaSecond.append(entry, references: [chunk.id])
            #expect(r.status == 201, "append: \(String(decoding: r.body, as: UTF8.self))")
            let page = try await poll.value
            let elapsed = ContinuousClock.now - start
            #expect(page.items.map(\.seq) == [head.0.next], "round \(round): \(page.items.map(\.seq))")
            // Woken by the append, not by the 20 s wait (5× what a loaded machine took).
            #expect(elapsed < .seconds(8), "round \(round): the long-poll returned \(elapsed) after the append")
            head = (head.0.next, head.1.next(seq: head.0.next.rawValue, entry: entry.encoded))
            // The blob is in the bucket, and instance 1 serves it.
            #expect(try cluster.objectExists(vault: vault.keyring.vaultID.hex, chunk: chunk.id.hex))
            #expect(try await viaFirst.getChunk(chunk.id).body == chunk.bytes)
        }
        #expect(S3ServeTests.localBlobs(first.dataDirectory).isEmpty && S3ServeTests.localBlobs(second.dataDirectory).isEmpty)
    }

    /// Clients hammer instance 1 with uploads and appends (to one vault, so
    /// appends race for the chain) and it is killed with SIGKILL in the
    /// middle: everything it acknowledged with a 2xx is there through
    /// instance 2 — chunks byte for byte, entries at their seq with their
    /// head — the chain is whole, and instance 2 takes further appends.
    @Test func killingAnInstanceLosesNothingItAcknowledged() async throws {
        let cluster = try await ScaleOutCluster.start(instances: 2, name: "kill9")
        defer { for s in cluster.instances { s.stop() } }
        let (first, second) = (cluster.instances[0], cluster.instances[1])
        let vault = try TestVault.make(user: "storm")
        var clients = [(try await vault.register(on: first), vault.registered.id!)]
        for i in 1..<4 {
            let (client, id) = try await vault.login(on: first, deviceName: "writer \(i)")
            clients.append((client, DeviceID(hex: id)!))
        }

        let log = AcknowledgedLog()
        let writers = clients.enumerated().map { (w, writer) in
            Task { await Self.storm(writer.0, device: writer.1, vault: vault, writer: w, log: log) }
        }
        // Let the storm run until a fair amount was acknowledged, then kill instance 1 mid-flight.
        try #require(await P.eventually(within: .seconds(60)) { log.entries.count >= 40 && log.chunks.count >= 60 },
                     "the storm made little progress: \(log.entries.count) entries, \(log.chunks.count) chunks; \(log.errors.prefix(3))")
        first.kill9()
        for w in writers { await w.value }
        let chunks = log.chunks, entries = log.entries
        #expect(log.errors.isEmpty, "answers other than 2xx and bad_base before the kill: \(log.errors.prefix(5))")

        // Through instance 2: every acknowledged chunk, byte for byte.
        let viaSecond = APIClient(baseURL: second.baseURL, token: clients[0].0.token)
        for chunk in chunks {
            let back = try await viaSecond.getChunk(chunk.id)
            #expect(back.status == 200 && back.body == chunk.bytes, "chunk \(chunk.id) was acknowledged: HTTP \(back.status)")
        }
        // Every acknowledged entry at its seq with its head, on one valid chain.
        var items: [EntryPage.Item] = []
        while true {
            let page = try await viaSecond.pull(after: items.last?.seq.rawValue ?? 0)
            items += page.items
            if page.items.isEmpty || items.last!.seq >= page.latest { break }
        }
        #expect(Self.chainProblems(items, vault: vault) == [])
        let stored = Dictionary(uniqueKeysWithValues: items.map { ($0.seq, $0) })
        for e in entries {
            #expect(stored[e.seq]?.head == e.head && stored[e.seq]?.entry.encoded == e.entry.encoded,
                    "entry \(e.seq) was acknowledged but is not stored so")
        }
        #expect(items.count >= entries.count)
        // Nothing was left locked by the dead instance's connections: instance 2 appends on.
        let last = items.last.map { ($0.seq, $0.head) } ?? (.start, vault.genesis)
        let after = try vault.entry(creating: "after-the-kill", baseSeq: last.0, baseHead: last.1)
        let r = try await viaSecond.append(after, references: [])
        #expect(r.status == 201, "append after the kill: HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))")
    }

    /// PostgreSQL stops under a running lockfs-server (PostgreSQL + S3): requests
    /// that need it get 503 `unavailable` over HTTP, the health check stays up,
    /// and once PostgreSQL is back the same process serves again.
    @Test func postgresRestartGives503ThenRecoversWithoutRestart() async throws {
        let pg = try await PostgresTestServer.start()
        defer { pg.destroy() }
        let cluster = try await ScaleOutCluster.start(instances: 1, name: "pgrestart", postgres: pg)
        defer { for s in cluster.instances { s.stop() } }
        let server = cluster.instances[0]
        let pid = server.pid
        let vault = try TestVault.make(user: "patient")
        let client = try await vault.register(on: server)
        let e1 = try vault.entry(creating: "before", baseSeq: .start, baseHead: vault.genesis)
        #expect(try await client.append(e1, references: []).status == 201)

        try await pg.stopServer()
        let start = ContinuousClock.now
        let down = try await client.send(.GET, "/v1/journal?after=0", timeout: .seconds(30))
        #expect(down.status == 503 && down.errorCode == "unavailable", "while PostgreSQL is down: HTTP \(down.status) \(down.errorCode ?? "")")
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(try await client.healthStatus() == 200)

        try await pg.startServer()
        let back = await P.eventually(within: .seconds(60)) {
            (try? await client.send(.GET, "/v1/journal?after=0", timeout: .seconds(30)).status) == 200
        }
        #expect(back, "the server did not recover after PostgreSQL came back")
        let h1 = vault.genesis.next(seq: 1, entry: e1.encoded)
        let chunk = try vault.chunk("after the restart")
        #expect(try await client.putChunk(chunk).status == 201)
        let e2 = try vault.entry(creating: "after", baseSeq: JournalSeq(1), baseHead: h1)
        #expect(try await client.append(e2, references: [chunk.id]).status == 201)
        #expect(try await client.pull(after: 0).items.map(\.seq) == [JournalSeq(1), JournalSeq(2)])
        #expect(server.pid == pid && server.process.isRunning, "lockfs-server was restarted")
    }

    // MARK: Helpers

    /// One writer of the storm: upload a fresh chunk, append an entry that
    /// references it (on bad_base, re-read the end and try again), until a
    /// request fails at the transport (the instance died). Records what got 2xx.
    static func storm(_ client: APIClient, device: DeviceID, vault: TestVault, writer: Int, log: AcknowledgedLog) async {
        var known: (seq: JournalSeq, head: ChainHead) = (.start, vault.genesis)
        var n = 0
        while true {
            n += 1
            do {
                let chunk = try vault.chunk("writer \(writer) chunk \(n) " + String(repeating: "\(writer).\(n) ", count: 200 * (1 + n % 7)))
                let put = try await client.putChunk(chunk)
                guard put.status == 201 else { log.error("PUT: HTTP \(put.status)"); continue }
                log.acknowledged(chunk)
                while true {
                    // Signed as the writer's own device (the server checks).
                    let entry = try vault.entry(creating: "w\(writer)-\(n)", baseSeq: known.seq, baseHead: known.head)
                        .signed(by: testIdentity, device: device, vault: vault.keys.vaultID)
                    let r = try await client.append(entry, references: [chunk.id])
                    if r.status == 201 {
                        let answer = try AppendResponse.decodeStrictly(Data(r.body))
                        guard let head = ChainHead(hex: answer.head) else { log.error("append: bad head"); break }
                        known = (JournalSeq(answer.seq), head)
                        log.acknowledged(StoredAppend(seq: known.seq, head: head, entry: entry))
                        break
                    } else if r.status == 409 && r.errorCode == "bad_base" {
                        // Another writer got there first: move to the end and seal again.
                        let page = try await client.pull(after: known.seq.rawValue)
                        if let last = page.items.last { known = (last.seq, last.head) }
                    } else {
                        log.error("append: HTTP \(r.status) \(r.errorCode ?? "")")
                        break
                    }
                }
            } catch {
                return  // the instance is gone (connection refused or reset)
            }
        }
    }

    /// What is wrong with `items` as a vault's journal from seq 1: gaps, heads
    /// that do not chain, bases not on the chain, entries that do not open.
    static func chainProblems(_ items: [EntryPage.Item], vault: TestVault) -> [String] {
        var problems: [String] = []
        var heads = [JournalSeq.start: vault.genesis]
        var head = vault.genesis
        for (i, item) in items.enumerated() {
            if item.seq.rawValue != UInt64(i + 1) { problems.append("seq \(item.seq) at position \(i + 1)") }
            head = head.next(seq: item.seq.rawValue, entry: item.entry.encoded)
            if item.head != head { problems.append("head of \(item.seq) does not chain") }
            if heads[item.entry.baseSeq] != item.entry.baseHead { problems.append("base of \(item.seq) is not on the chain") }
            if (try? item.entry.open(keys: vault.keys)) == nil { problems.append("entry \(item.seq) does not open") }
            heads[item.seq] = item.head
        }
        return problems
    }
}

/// An append the server acknowledged.
struct StoredAppend: Sendable {
    let seq: JournalSeq
    let head: ChainHead
    let entry: JournalEntry
}

/// What the storm's writers got a 2xx for, and any unexpected answer.
final class AcknowledgedLog: Sendable {
    private let state = Mutex((chunks: [SealedChunk](), entries: [StoredAppend](), errors: [String]()))
    func acknowledged(_ c: SealedChunk) { state.withLock { $0.chunks.append(c) } }
    func acknowledged(_ e: StoredAppend) { state.withLock { $0.entries.append(e) } }
    func error(_ m: String) { state.withLock { $0.errors.append(m) } }
    var chunks: [SealedChunk] { state.withLock { $0.chunks } }
    var entries: [StoredAppend] { state.withLock { $0.entries } }
    var errors: [String] { state.withLock { $0.errors } }
}
