import AsyncHTTPClient
import Foundation
import LockServer
import LockCrypto
import LockTesting
import LockWire
import NIOCore
import NIOHTTP1
import Testing

/// The acceptance test of durability: whatever the server acknowledged
/// survives a SIGKILL at any moment, and nothing half-written ever shows.
///
/// A storm of chunk uploads (single PUTs and batches) and journal appends
/// runs against a real `lockfs-server` process; the server is killed with
/// SIGKILL at a seeded random moment (300–800 ms after the storm's first
/// acknowledged entry) and restarted on the same data directory; then every
/// acknowledged write is checked, and so is everything the server claims to
/// have. Three kill/restart cycles.
///
/// Reproduce a run with LOCKFS_DURABILITY_SEED=<seed> (printed on failure;
/// the timing of the storm still varies from run to run).
@Suite struct DurabilityTests {
    @Test(.timeLimit(.minutes(3)))
    func acknowledgedWritesSurviveKill9DuringAStorm() async throws {
        let seed = ProcessInfo.processInfo.environment["LOCKFS_DURABILITY_SEED"].flatMap { UInt64($0) } ?? 0x10CF_5D0B
        var rng = SeededGenerator(seed: seed)
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let http = Storm.makeHTTPClient()
        do {
            try await Storm.run(server: server, http: http, seed: seed, rng: &rng)
        } catch {
            try? await http.shutdown()
            throw error
        }
        try await http.shutdown()
    }

    /// Every admin command (`user list`, `user add`, …) opens the blob store,
    /// and opening a FileBlobStore empties DATA/blobs/.tmp. The admin commands
    /// are meant to run while the server runs (SQLiteMetadataStore's doc), so
    /// that clean-up must not touch the temporary files of the server's puts
    /// in flight: every upload here must still be acknowledged.
    @Test(.timeLimit(.minutes(2)))
    func adminCommandsDoNotBreakUploadsInFlight() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let http = Storm.makeHTTPClient()
        do {
            let vault = try TestVault.make(user: "busy")
            let token = try #require(try await vault.register(on: server).token)
            let client = StormClient(http: http, baseURL: server.baseURL, token: token)
            let ledger = StormLedger()
            let stop = StormKillSwitch()
            let adminRuns = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<3 {
                    group.addTask {
                        var rng = SeededGenerator(seed: 0xAD0 + UInt64(i))
                        while !stop.tripped {
                            let size = Int.random(in: (512 << 10)...(2 << 20), using: &rng)
                            let chunk = try Storm.seal(vault, rng.bytes(size))
                            await ledger.chunksSent(vault.user, [chunk])
                            let r = try await client.putChunk(chunk)
                            if r.status == 201 {
                                await ledger.chunksAcked(vault.user, [chunk.id])
                            } else {
                                // Keep going: count every refused upload.
                                await ledger.problem("HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))")
                            }
                        }
                        return 0
                    }
                }
                group.addTask {
                    // Admin commands back to back for two seconds, off the cooperative pool.
                    var runs = 0
                    let deadline = ContinuousClock.now + .seconds(2)
                    while ContinuousClock.now < deadline {
                        let (status, output) = try await server.admin(["user", "list"])
                        #expect(status == 0, "user list: \(output)")
                        runs += 1
                    }
                    stop.trip()
                    return runs
                }
                return try await group.reduce(0, +)
            }
            let problems = await ledger.takeProblems()
            #expect(problems.isEmpty, "\(problems.count) uploads refused while admin commands ran (\(adminRuns) runs), e.g. \(problems.prefix(3))")
            let state = await ledger.state(of: vault.user)
            #expect(state.acked.count > 0)
            #expect(try await client.missing(Array(state.acked)) == [])
            let bad = try await client.downloadMismatches(Array(state.acked), expected: state.sent)
            #expect(bad.isEmpty, "\(bad.prefix(5))")
            print("DurabilityTests admin commands: \(adminRuns) runs of `user list`, \(state.sent.count) uploads, \(state.acked.count) acknowledged, \(problems.count) refused")
        } catch {
            try? await http.shutdown()
            throw error
        }
        try await http.shutdown()
    }
}

// MARK: - The storm

enum Storm {
    static let accounts = ["storm-a", "storm-b"]
    static let uploadersPerAccount = 2
    /// Two appenders share each account, so the server sees concurrent appends with stale bases.
    static let appendersPerAccount = 2
    static let cycles = 3

    /// A client of its own that fails fast once the server is dead, instead of
    /// retrying connections until the request deadline.
    static func makeHTTPClient() -> HTTPClient {
        var config = HTTPClient.Configuration()
        config.connectionPool.retryConnectionEstablishment = false
        config.timeout.connect = .seconds(2)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    struct Member: Sendable {
        let vault: TestVault
        let token: String
    }

    static func run(server: ServerProcess, http: HTTPClient, seed: UInt64, rng: inout SeededGenerator) async throws {
        var members: [Member] = []
        for name in accounts {
            let vault = try TestVault.make(user: name)
            let client = try await vault.register(on: server)
            members.append(Member(vault: vault, token: try #require(client.token)))
        }
        let ledger = StormLedger()

        for cycle in 1...cycles {
            // Where each account's chain is now: the appenders start there.
            var bases: [String: (JournalSeq, ChainHead)] = [:]
            for m in members {
                let client = StormClient(http: http, baseURL: server.baseURL, token: m.token)
                bases[m.vault.user] = try await client.latest(genesis: m.vault.genesis)
            }
            let killAfter = Int.random(in: 300...800, using: &rng)
            let taskSeed = rng.next()
            await ledger.startCycle()
            let started = ContinuousClock.now
            let baseURL = server.baseURL
            let killSwitch = StormKillSwitch()

            await withTaskGroup(of: Void.self) { group in
                var n: UInt64 = 0
                for m in members {
                    let client = StormClient(http: http, baseURL: baseURL, token: m.token)
                    for _ in 0..<uploadersPerAccount {
                        n += 1
                        let s = taskSeed &+ n
                        group.addTask { await uploader(m.vault, client, ledger, killSwitch, seed: s) }
                    }
                    for a in 0..<appendersPerAccount {
                        n += 1
                        let s = taskSeed &+ n
                        let base = bases[m.vault.user]!
                        let tag = "c\(cycle)a\(a)"
                        group.addTask { await appender(m.vault, client, ledger, killSwitch, base: base, tag: tag, seed: s) }
                    }
                }
                group.addTask {
                    // The clock starts at the storm's first acknowledged entry, so that even a
                    // slow machine has written something when the kill comes.
                    let giveUp = ContinuousClock.now + .seconds(10)
                    while await ledger.cycleProgress().entries == 0 && ContinuousClock.now < giveUp {
                        try? await Task.sleep(for: .milliseconds(5))
                    }
                    try? await Task.sleep(for: .milliseconds(killAfter))
                    killSwitch.trip()
                    server.kill9()
                }
            }
            let stormTime = ContinuousClock.now - started

            // What an interrupted put left behind (removed at the next start).
            let tmp = server.dataDirectory.appendingPathComponent("blobs/.tmp")
            let leftovers = FileBlobStore.temporaryFiles(under: tmp.deletingLastPathComponent()).count

            try await server.restart()
            let context = "cycle \(cycle), seed \(seed), killed after \(killAfter) ms"
            let problems = await ledger.takeProblems()
            #expect(problems.isEmpty, "\(context): during the storm: \(problems.prefix(10))")
            let progress = await ledger.cycleProgress()
            // The storm must have written something, or the test proves nothing.
            #expect(progress.chunks > 0, "\(context): no chunk was acknowledged")
            #expect(progress.entries > 0, "\(context): no entry was acknowledged")

            #expect(FileBlobStore.temporaryFiles(under: tmp.deletingLastPathComponent()) == [],
                    "\(context): files remain in DATA/blobs/.tmp after restart")

            var report = Report()
            for m in members {
                let client = StormClient(http: http, baseURL: server.baseURL, token: m.token)
                try await verify(m.vault, client, ledger, dataDirectory: server.dataDirectory, context: context, report: &report)
                try await continueAfterRestart(m.vault, client, ledger, context: context)
            }
            print("DurabilityTests \(context): storm ran \(stormTime); acknowledged \(progress.chunks) chunks, "
                  + "\(progress.entries) entries (total \(report.ackedChunks) chunks, \(report.ackedEntries) entries); "
                  + "unacknowledged but present: \(report.unackedChunksPresent) chunks, \(report.unackedEntriesPresent) entries; "
                  + "bad_base retries \(progress.badBase); .tmp leftovers at kill \(leftovers); "
                  + "blob files not recorded \(report.unrecordedBlobFiles)")
        }
    }

    /// Uploads chunks (single PUTs and batches) until the server dies.
    static func uploader(_ vault: TestVault, _ client: StormClient, _ ledger: StormLedger, _ kill: StormKillSwitch, seed: UInt64) async {
        var rng = SeededGenerator(seed: seed)
        while !kill.tripped {
            let single = Int.random(in: 0..<10, using: &rng) < 6
            let count = single ? 1 : Int.random(in: 2...6, using: &rng)
            let chunks: [(SealedChunk, Int)]
            do {
                chunks = try (0..<count).map { _ in
                    let large = single && Int.random(in: 0..<10, using: &rng) == 0
                    let size = large ? Int.random(in: (256 << 10)...(1 << 20), using: &rng) : Int.random(in: 1...(48 << 10), using: &rng)
                    return (try seal(vault, rng.bytes(size)), size)
                }
            } catch {
                await ledger.problem("sealing failed: \(error)")
                return
            }
            guard await upload(chunks.map(\.0), single: single, vault.user, client, ledger, kill) else { return }
        }
    }

    /// Uploads 1–3 chunks, then appends an entry referencing them, until the server dies.
    static func appender(_ vault: TestVault, _ client: StormClient, _ ledger: StormLedger, _ kill: StormKillSwitch,
                         base start: (JournalSeq, ChainHead), tag: String, seed: UInt64) async {
        var rng = SeededGenerator(seed: seed)
        var base = start
        var n = 0
        while !kill.tripped {
            n += 1
            let count = Int.random(in: 1...3, using: &rng)
            let entry: JournalEntry
            let ids: [ChunkID]
            do {
                let chunks = try (0..<count).map { _ in
                    let size = Int.random(in: 1...(32 << 10), using: &rng)
                    return (try seal(vault, rng.bytes(size)), size)
                }
                ids = chunks.map(\.0.id)
                guard await upload(chunks.map(\.0), single: count == 1 || rng.next() % 2 == 0, vault.user, client, ledger, kill) else { return }
                let manifest = try Manifest(chunks: chunks.map { Manifest.Chunk(id: $0.0.id, length: $0.1) })
                entry = try vault.entry(creating: "\(tag)-\(n)", manifest: manifest, baseSeq: base.0, baseHead: base.1)
            } catch {
                await ledger.problem("building an entry failed: \(error)")
                return
            }
            await ledger.entrySent(vault.user, entry.encoded, references: ids)
            let r: APIResponse
            do {
                r = try await client.append(entry, references: ids)
            } catch {
                if !kill.tripped { await ledger.problem("append failed before the kill: \(error)") }
                return
            }
            switch (r.status, r.errorCode) {
            case (201, _):
                guard let seq = r.json["seq"] as? Int, let hex = r.json["head"] as? String, let head = ChainHead(hex: hex) else {
                    await ledger.problem("append: 201 without seq/head: \(String(decoding: r.body, as: UTF8.self))")
                    return
                }
                await ledger.entryAcked(vault.user, seq: UInt64(seq), head: head, bytes: entry.encoded)
                base = (JournalSeq(UInt64(seq)), head)
            case (409, "bad_base"?):
                // Our base is an acknowledged position of this chain: refusing it is wrong.
                await ledger.badBase("\(vault.user): base (\(base.0), \(base.1.hex.prefix(8))) refused")
                do {
                    base = try await client.latest(genesis: vault.genesis)
                } catch {
                    if !kill.tripped { await ledger.problem("pull failed before the kill: \(error)") }
                    return
                }
            default:
                await ledger.problem("append: HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))")
                return
            }
        }
    }

    /// Sends chunks in one batch or one PUT each; records what was sent and what was acknowledged.
    /// Returns false when the storm is over for this task.
    static func upload(_ chunks: [SealedChunk], single: Bool, _ user: String, _ client: StormClient,
                       _ ledger: StormLedger, _ kill: StormKillSwitch) async -> Bool {
        await ledger.chunksSent(user, chunks)
        let groups = single ? chunks.map { [$0] } : [chunks]
        for group in groups {
            let r: APIResponse
            do {
                r = group.count == 1 && single ? try await client.putChunk(group[0]) : try await client.putBatch(group)
            } catch {
                if !kill.tripped { await ledger.problem("upload failed before the kill: \(error)") }
                return false
            }
            guard r.status == 201 else {
                await ledger.problem("upload: HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))")
                return false
            }
            await ledger.chunksAcked(user, group.map(\.id))
        }
        return true
    }

    static func seal(_ vault: TestVault, _ plaintext: [UInt8]) throws -> SealedChunk {
        try plaintext.withUnsafeBytes { try vault.keys.sealChunk($0) }
    }

    // MARK: Checks after a restart

    struct Report {
        var ackedChunks = 0, ackedEntries = 0
        var unackedChunksPresent = 0, unackedEntriesPresent = 0
        var unrecordedBlobFiles = 0
    }

    static func verify(_ vault: TestVault, _ client: StormClient, _ ledger: StormLedger, dataDirectory: URL,
                       context: String, report: inout Report) async throws {
        let user = vault.user
        let state = await ledger.state(of: user)
        let where_ = "\(context), \(user)"

        // 1. `missing` reports no acknowledged chunk.
        let sentIDs = Array(state.sent.keys)
        let missing = Set(try await client.missing(sentIDs))
        let lost = state.acked.filter { missing.contains($0) }
        #expect(lost.isEmpty, "\(where_): \(lost.count) acknowledged chunk(s) reported missing, e.g. \(lost.first?.hex ?? "")")

        // 2. Every acknowledged chunk, and every chunk the server claims to have,
        //    downloads whole and byte-identical.
        let present = state.acked.union(sentIDs.filter { !missing.contains($0) })
        let bad = try await client.downloadMismatches(Array(present), expected: state.sent)
        #expect(bad.isEmpty, "\(where_): \(bad.count) chunk(s) do not download as sent: \(bad.prefix(5))")
        report.ackedChunks += state.acked.count
        report.unackedChunksPresent += present.count - state.acked.count

        // 4. The journal: contiguous, verifying from genesis, holding every acknowledged entry.
        let items = try await client.pullAll()
        // 3. The account's usage is exactly the chunks and journal entries it has.
        let recordedBytes = sentIDs.filter { !missing.contains($0) }.reduce(Int64(0)) { $0 + Int64(state.sent[$1]!.count) }
            + items.reduce(Int64(0)) { $0 + Int64($1.entry.encoded.count) }
        let info = try await client.send(.GET, "/v1/account")
        #expect(info.status == 200)
        #expect((info.json["storedBytes"] as? Int).map(Int64.init) == recordedBytes,
                "\(where_): storedBytes \(info.json["storedBytes"] ?? "nil") but the present chunks and entries sum to \(recordedBytes)")

        let latest = items.last?.seq.rawValue ?? 0
        #expect(items.map(\.seq.rawValue) == Array(stride(from: UInt64(1), through: latest, by: 1)), "\(where_): sequence numbers have gaps")
        var head = vault.genesis
        var chainBreaks: [UInt64] = []
        for item in items {
            head = head.next(seq: item.seq.rawValue, entry: item.entry.encoded)
            if item.head != head { chainBreaks.append(item.seq.rawValue); head = item.head }
        }
        #expect(chainBreaks.isEmpty, "\(where_): the chain does not verify at seq \(chainBreaks.prefix(5))")
        let bySeq = Dictionary(items.map { ($0.seq.rawValue, $0) }, uniquingKeysWith: { a, _ in a })
        var absent: [UInt64] = [], differing: [UInt64] = []
        for (seq, acked) in state.ackedEntries {
            guard let item = bySeq[seq] else { absent.append(seq); continue }
            if item.head != acked.head || item.entry.encoded != acked.bytes { differing.append(seq) }
        }
        #expect(absent.isEmpty, "\(where_): acknowledged entries lost: seq \(absent.sorted().prefix(10))")
        #expect(differing.isEmpty, "\(where_): acknowledged entries changed: seq \(differing.sorted().prefix(10))")
        report.ackedEntries += state.ackedEntries.count
        report.unackedEntriesPresent += items.count - state.ackedEntries.count

        // Every stored entry is one that was sent, opens with the vault's keys, and its chunks are present.
        var strangers: [UInt64] = [], unreadable: [UInt64] = [], dangling: [UInt64] = []
        for item in items {
            guard let refs = state.entriesSent[item.entry.encoded] else { strangers.append(item.seq.rawValue); continue }
            if (try? item.entry.open(keys: vault.keys)) == nil { unreadable.append(item.seq.rawValue) }
            if refs.contains(where: { missing.contains($0) }) { dangling.append(item.seq.rawValue) }
        }
        #expect(strangers.isEmpty, "\(where_): entries that were never sent: seq \(strangers.prefix(5))")
        #expect(unreadable.isEmpty, "\(where_): entries that do not open: seq \(unreadable.prefix(5))")
        #expect(dangling.isEmpty, "\(where_): entries whose chunks are missing: seq \(dangling.prefix(5))")

        // 5. On disk: every blob file of the vault is a whole chunk as sent (never a partial one).
        let vaultDir = dataDirectory.appendingPathComponent("blobs/\(vault.keys.vaultID.hex)")
        var partial: [String] = []
        if let files = FileManager.default.enumerator(at: vaultDir, includingPropertiesForKeys: [.isRegularFileKey]) {
            for case let url as URL in files where (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
                let name = url.lastPathComponent
                guard let id = ChunkID(hex: name), let sent = state.sent[id] else { partial.append("unknown file \(name)"); continue }
                let bytes = try Array(Data(contentsOf: url))
                if bytes != sent { partial.append("\(name): \(bytes.count) of \(sent.count) bytes") }
                if missing.contains(id) { report.unrecordedBlobFiles += 1 }
            }
        }
        #expect(partial.isEmpty, "\(where_): blob files that are not whole chunks: \(partial.prefix(5))")
    }

    /// After a restart the server takes new uploads and appends on the verified chain.
    static func continueAfterRestart(_ vault: TestVault, _ client: StormClient, _ ledger: StormLedger, context: String) async throws {
        let (seq, head) = try await client.latest(genesis: vault.genesis)
        let one = try seal(vault, Array("after restart: \(context) one".utf8))
        let two = try seal(vault, Array("after restart: \(context) two".utf8))
        let three = try seal(vault, Array("after restart: \(context) three".utf8))
        await ledger.chunksSent(vault.user, [one, two, three])
        #expect(try await client.putChunk(one).status == 201)
        #expect(try await client.putBatch([two, three]).status == 201)
        await ledger.chunksAcked(vault.user, [one.id, two.id, three.id])
        #expect(try await client.missing([one.id, two.id, three.id]) == [])

        let refs = [one.id, two.id, three.id]
        let manifest = try Manifest(chunks: [one, two, three].map { Manifest.Chunk(id: $0.id, length: 20) })
        let entry = try vault.entry(creating: "after-restart", manifest: manifest, baseSeq: seq, baseHead: head)
        await ledger.entrySent(vault.user, entry.encoded, references: refs)
        let r = try await client.append(entry, references: refs)
        let expectedHead = head.next(seq: seq.rawValue + 1, entry: entry.encoded)
        #expect(r.status == 201, "\(context), \(vault.user): append after restart: HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        #expect(r.json["seq"] as? Int == Int(seq.rawValue + 1))
        #expect(r.json["head"] as? String == expectedHead.hex)
        if r.status == 201 { await ledger.entryAcked(vault.user, seq: seq.rawValue + 1, head: expectedHead, bytes: entry.encoded) }
        let fetched = try await client.send(.GET, "/v1/chunks/\(two.id.hex)")
        #expect(fetched.status == 200 && fetched.body == two.bytes)
    }
}

// MARK: - Bookkeeping

/// Set once, just before the SIGKILL: errors after it are expected.
final class StormKillSwitch: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var tripped: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func trip() { lock.lock(); value = true; lock.unlock() }
}

/// Everything sent and everything acknowledged, per account, over all cycles.
actor StormLedger {
    struct AccountState: Sendable {
        /// Every chunk ever sent, acknowledged or not.
        var sent: [ChunkID: [UInt8]] = [:]
        var acked: Set<ChunkID> = []
        /// Every entry ever sent (its bytes), with the chunks it references.
        var entriesSent: [[UInt8]: [ChunkID]] = [:]
        var ackedEntries: [UInt64: (head: ChainHead, bytes: [UInt8])] = [:]
    }

    private var accounts: [String: AccountState] = [:]
    private var problems: [String] = []
    private var cycleChunks = 0, cycleEntries = 0, cycleBadBase = 0

    func startCycle() { cycleChunks = 0; cycleEntries = 0; cycleBadBase = 0 }
    func cycleProgress() -> (chunks: Int, entries: Int, badBase: Int) { (cycleChunks, cycleEntries, cycleBadBase) }
    func state(of user: String) -> AccountState { accounts[user, default: AccountState()] }

    func problem(_ text: String) { problems.append(text) }
    func takeProblems() -> [String] { defer { problems = [] }; return problems }

    func chunksSent(_ user: String, _ chunks: [SealedChunk]) {
        for c in chunks { accounts[user, default: AccountState()].sent[c.id] = c.bytes }
    }

    func chunksAcked(_ user: String, _ ids: [ChunkID]) {
        for id in ids where accounts[user, default: AccountState()].acked.insert(id).inserted { cycleChunks += 1 }
    }

    func entrySent(_ user: String, _ bytes: [UInt8], references: [ChunkID]) {
        accounts[user, default: AccountState()].entriesSent[bytes] = references
    }

    func entryAcked(_ user: String, seq: UInt64, head: ChainHead, bytes: [UInt8]) {
        if let earlier = accounts[user, default: AccountState()].ackedEntries[seq] {
            problems.append("\(user): seq \(seq) acknowledged twice (heads \(earlier.head.hex.prefix(8)) and \(head.hex.prefix(8)))")
            return
        }
        accounts[user, default: AccountState()].ackedEntries[seq] = (head, bytes)
        cycleEntries += 1
    }

    /// A refused base that was an acknowledged position: a server bug.
    func badBase(_ text: String) {
        cycleBadBase += 1
        problems.append("bad_base for an acknowledged base: \(text)")
    }
}

// MARK: - A client on the storm's own HTTP client

struct StormClient: Sendable {
    let http: HTTPClient
    let baseURL: String
    let token: String

    func send(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, contentType: String? = nil) async throws -> APIResponse {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await http.execute(request, timeout: .seconds(20))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        return APIResponse(status: Int(response.status.code), headers: response.headers, body: Array(buffer: bytes))
    }

    func putChunk(_ chunk: SealedChunk) async throws -> APIResponse {
        try await send(.PUT, "/v1/chunks/\(chunk.id.hex)", body: chunk.bytes, contentType: APIClient.binary)
    }

    func putBatch(_ chunks: [SealedChunk]) async throws -> APIResponse {
        try await send(.POST, "/v1/chunks/batch", body: try ChunkBatch(chunks: chunks).encoded, contentType: APIClient.binary)
    }

    func append(_ entry: JournalEntry, references: [ChunkID]) async throws -> APIResponse {
        try await send(.POST, "/v1/journal", body: AppendRequest(entry: entry, references: references).encoded, contentType: APIClient.binary)
    }

    /// The ids among `ids` the server reports missing (queried in lists of 10,000).
    func missing(_ ids: [ChunkID]) async throws -> [ChunkID] {
        var out: [ChunkID] = []
        for start in stride(from: 0, to: ids.count, by: APIv1.maxIDsPerQuery) {
            let part = Array(ids[start..<min(ids.count, start + APIv1.maxIDsPerQuery)])
            let r = try await send(.POST, "/v1/chunks/missing", body: try ChunkIDList(ids: part).encoded, contentType: APIClient.binary)
            guard r.status == 200 else { throw TestFailure("missing: HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
            out += try ChunkIDList(decoding: r.body).ids
        }
        return out
    }

    /// Every entry, page by page.
    func pullAll() async throws -> [EntryPage.Item] {
        var items: [EntryPage.Item] = []
        while true {
            let r = try await send(.GET, "/v1/journal?after=\(items.last?.seq.rawValue ?? 0)&limit=1000")
            guard r.status == 200 else { throw TestFailure("pull: HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
            let page = try EntryPage(decoding: r.body)
            items += page.items
            if page.items.isEmpty || items.last!.seq >= page.latest { return items }
        }
    }

    /// The latest position of the chain, after checking it from genesis.
    func latest(genesis: ChainHead) async throws -> (JournalSeq, ChainHead) {
        var head = genesis
        var seq = JournalSeq.start
        for item in try await pullAll() {
            head = head.next(seq: item.seq.rawValue, entry: item.entry.encoded)
            guard item.seq == seq.next, item.head == head else { throw TestFailure("the chain does not verify at seq \(item.seq)") }
            seq = item.seq
        }
        return (seq, head)
    }

    /// Downloads `ids` (six at a time); returns a description of each that is not 200 with the expected bytes.
    func downloadMismatches(_ ids: [ChunkID], expected: [ChunkID: [UInt8]]) async throws -> [String] {
        try await withThrowingTaskGroup(of: String?.self) { group in
            var iterator = ids.makeIterator()
            var out: [String] = []
            for _ in 0..<6 {
                guard let id = iterator.next() else { break }
                let want = expected[id] ?? []
                group.addTask { try await self.downloadMismatch(id, want) }
            }
            while let result = try await group.next() {
                if let result { out.append(result) }
                if let id = iterator.next() {
                    let want = expected[id] ?? []
                    group.addTask { try await self.downloadMismatch(id, want) }
                }
            }
            return out
        }
    }

    private func downloadMismatch(_ id: ChunkID, _ want: [UInt8]) async throws -> String? {
        let r = try await send(.GET, "/v1/chunks/\(id.hex)")
        if r.status != 200 { return "\(id.hex.prefix(12)): HTTP \(r.status)" }
        if r.body != want {
            return "\(id.hex.prefix(12)): \(r.body.count) bytes, sent \(want.count), a prefix of it: \(want.starts(with: r.body))"
        }
        return nil
    }
}
