import AsyncHTTPClient
import Foundation
import LockCrypto
import LockTesting
import LockWire
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The server figures of `make bench`: a real release `lockfs-server` on
/// loopback, driven over HTTP/1.1 by this process (the two share the
/// machine's cores, so these are end-to-end figures, not server-only ones).
///
/// Every figure is the best of `rounds` rounds, each on fresh data (the
/// server deduplicates chunks, so a chunk is never uploaded twice).
enum ServerBench {
    static let rounds = 3
    /// Concurrent streams of the `server_upload_mbps` / `server_download_mbps` figures.
    static let streams = 4
    static let bigChunk = 1 << 20
    static let smallChunk = 4 << 10
    static let batchSize = 500
    static let longPolls = 1_000

    /// The phases, in order; `lockfs-bench server PHASE…` runs some only (for diagnosis).
    static let phases = ["upload", "download", "small", "appends", "longpolls", "scaleout"]

    static func run(phases selected: [String] = []) async throws {
        if let unknown = selected.first(where: { !phases.contains($0) }) {
            throw BenchFailure("unknown phase \(unknown); phases: \(phases.joined(separator: " "))")
        }
        let fdLimit = raiseOpenFileLimit(to: 8192)
        guard fdLimit >= longPolls + 256 else {
            throw BenchFailure("the open-file limit is \(fdLimit); \(longPolls) long-polls need more (ulimit -n)")
        }
        let server = try await BenchServer.start()
        // Ctrl-C or SIGTERM during the bench: stop the server and remove its directory too.
        let signals = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                server.stop(grace: .seconds(2))
                exit(128 + number)
            }
            source.resume()
            return source
        }
        defer {
            for (number, source) in zip([SIGINT, SIGTERM], signals) {
                source.cancel()
                signal(number, SIG_DFL)
            }
        }
        let http = BenchClient.makeHTTPClient(connections: 2 * streams)
        do {
            var run = try await ServerRun(server: server, http: http)
            for phase in phases where selected.isEmpty || selected.contains(phase) {
                switch phase {
                case "upload": try await run.upload()
                case "download": try await run.download()
                case "small": try await run.smallChunks()
                case "appends": try await run.appends()
                case "longpolls": try await run.longPolls()
                default: try await run.scaleOut(http: http)
                }
            }
            if let hwm = server.statusKB("VmHWM") {
                Bench.note(String(format: "server peak RSS (VmHWM) over the whole run: %.1f MiB", Double(hwm) / 1024))
            }
        } catch {
            try? await http.shutdown()
            let log = server.log
            server.stop(grace: .seconds(5))
            throw BenchFailure("\(error)\n--- server log (tail) ---\n\(log.suffix(3000))")
        }
        try await http.shutdown()
        if let took = server.stop() {
            Bench.note("server stopped on SIGTERM in \(Int(Bench.seconds(took) * 1000)) ms")
        } else {
            Bench.note("server did not stop within 15 s of SIGTERM; killed")
        }
    }

    // MARK: Helpers

    /// A sealed chunk with its request body ready (so timing covers the HTTP exchange only).
    struct PreparedChunk: Sendable {
        let sealed: SealedChunk
        let id: String
        let body: ByteBuffer
        var size: Int { sealed.bytes.count }
    }

    /// `count` distinct chunks of `size` plaintext bytes: `base` with a distinct tag in front.
    static func seal(count: Int, size: Int, base: [UInt8], tag: UInt64, keys: VaultKeys) throws -> [PreparedChunk] {
        var plaintext = Array(base.prefix(size))
        return try (0..<count).map { i in
            withUnsafeBytes(of: (tag << 32 | UInt64(i)).bigEndian) { for (k, b) in $0.enumerated() { plaintext[k] = b } }
            let sealed = try plaintext.withUnsafeBytes { try keys.sealChunk($0) }
            return PreparedChunk(sealed: sealed, id: sealed.id.hex, body: ByteBuffer(bytes: sealed.bytes))
        }
    }

    /// MB/s of `work` over every chunk, `streams` at a time (chunk i on stream i mod streams).
    static func throughput(_ chunks: [PreparedChunk], streams: Int,
                           _ work: @escaping @Sendable (PreparedChunk) async throws -> Void) async throws -> Double {
        let bytes = chunks.reduce(0) { $0 + $1.size }
        let elapsed = try await timed {
            try await concurrently(streams) { s in
                for i in stride(from: s, to: chunks.count, by: streams) { try await work(chunks[i]) }
            }
        }
        return Double(bytes) / 1e6 / Bench.seconds(elapsed)
    }

    /// Runs `body(0..<n)` as n concurrent tasks.
    static func concurrently(_ n: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for s in 0..<n { group.addTask { try await body(s) } }
            try await group.waitForAll()
        }
    }

    static func timed(_ body: () async throws -> Void) async rethrows -> Duration {
        let start = ContinuousClock.now
        try await body()
        return ContinuousClock.now - start
    }
}

/// The server's own view of a phase: request counts and summed latency per
/// route from its `lockfs_request_duration_seconds` histogram, and the CPU
/// time (user + system) the server and this process used, before and after.
struct ServerTimes {
    let before: [String: (count: Double, sum: Double)]
    let serverPID: Int32
    let serverCPU: Double, clientCPU: Double
    let start = ContinuousClock.now

    init(_ client: BenchClient, _ server: BenchServer) async throws {
        before = try await Self.snapshot(client)
        serverPID = server.pid
        serverCPU = Self.cpuSeconds("\(server.pid)")
        clientCPU = Self.cpuSeconds("self")
    }

    /// Prints the mean server-side latency per route and the CPU per request over the phase.
    func report(_ phase: String, _ client: BenchClient) async throws {
        let wall = Bench.seconds(ContinuousClock.now - start)
        let server = Self.cpuSeconds("\(serverPID)") - serverCPU, me = Self.cpuSeconds("self") - clientCPU
        let after = try await Self.snapshot(client)
        var parts: [String] = []
        var requests = 0.0
        for (route, a) in after.sorted(by: { $0.key < $1.key }) {
            let b = before[route] ?? (0, 0)
            let n = a.count - b.count
            guard n > 0, route != "/metrics" else { continue }
            requests += n
            parts.append("\(route) \(Int(n))× mean " + String(format: "%.2f ms", (a.sum - b.sum) / n * 1000))
        }
        let cpu = requests > 0
            ? String(format: "; CPU per request: server %.2f ms, bench client %.2f ms (%.1f s wall, server busy %.0f%%, client %.0f%% of one core)",
                     server / requests * 1000, me / requests * 1000, wall, server / wall * 100, me / wall * 100)
            : ""
        Bench.note("server-side (\(phase)): " + parts.joined(separator: ", ") + cpu)
    }

    /// utime + stime of /proc/WHO/stat, in seconds.
    static func cpuSeconds(_ who: String) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(who)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return 0 }
        // After "pid (comm)": state is field 3, utime 14, stime 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func snapshot(_ client: BenchClient) async throws -> [String: (count: Double, sum: Double)] {
        let r = try await client.expect(200, "metrics", .GET, "/metrics")
        var out: [String: (count: Double, sum: Double)] = [:]
        for line in r.text.split(separator: "\n") where line.hasPrefix("lockfs_request_duration_seconds_") {
            let isSum = line.hasPrefix("lockfs_request_duration_seconds_sum")
            guard isSum || line.hasPrefix("lockfs_request_duration_seconds_count"),
                  let open = line.range(of: "route=\""), let close = line[open.upperBound...].firstIndex(of: "\""),
                  let value = Double(line.split(separator: " ").last ?? "") else { continue }
            let route = String(line[open.upperBound..<close])
            var entry = out[route] ?? (0, 0)
            if isSum { entry.sum += value } else { entry.count += value }
            out[route] = entry
        }
        return out
    }
}

/// One benchmark run against one server: the account, and what earlier phases left.
struct ServerRun {
    typealias B = ServerBench
    let server: BenchServer
    let client: BenchClient
    let keys: VaultKeys
    let token: String
    let base: [UInt8]
    let rssStart: Double
    /// Chunks the upload phase stored (the download phase reads them back).
    var uploaded: [ServerBench.PreparedChunk] = []
    /// The journal's end, as the last append answered.
    var seq = JournalSeq.start
    var head: ChainHead
    /// The registered device and its keys: entries are signed, as the server wants.
    let device: DeviceID
    let identity: DeviceIdentity
    var appended = 0

    /// Registers an account, as `lockfs init` makes one (INTERACTIVE Argon2id keeps the bench short).
    init(server: BenchServer, http: HTTPClient) async throws {
        self.server = server
        Bench.note("server: release lockfs-server pid \(server.pid) on 127.0.0.1:\(server.port), data in \(server.directory.path); "
                   + "HTTP/1.1 over loopback; client and server share this machine's \(ProcessInfo.processInfo.activeProcessorCount) cores")
        rssStart = try server.rssMiB()
        keys = VaultKeys.generate()
        head = ChainHead.genesis(of: keys.vaultID)
        let parameters = KDFParameters.generate(.interactive)
        let password = try PasswordKeys.derive(password: "benchmark password", parameters: parameters)
        let keyring = try Keyring.make(keys: keys, password: password, parameters: parameters, recovery: .generate())
        let anonymous = BenchClient(http: http, baseURL: server.baseURL)
        let identity = DeviceIdentity.generate()
        self.identity = identity
        let registration = RegisterRequest(user: "bench", invite: nil, loginSecret: password.loginSecret.withUnsafeBytes { Array($0) },
                                           keyring: keyring, deviceName: "lockfs-bench", recoveryProof: Sodium.randomBytes(32), device: DevicePublicKeys(identity))
        let registered = try await anonymous.expect(201, "register", .POST, "/v1/register",
                                                    body: ByteBuffer(bytes: try registration.jsonData()), contentType: "application/json")
        guard let token = registered.json["token"] as? String,
              let device = (registered.json["device"] as? String).flatMap(DeviceID.init(hex:)) else {
            throw BenchFailure("register: no token or device in \(registered.text)")
        }
        self.device = device
        self.token = token
        let client = BenchClient(http: http, baseURL: server.baseURL, token: token)
        self.client = client
        // Open the pool's connections before timing anything.
        try await B.concurrently(2 * B.streams) { _ in _ = try await client.expect(200, "account", .GET, "/v1/account") }
        var rng = SeededGenerator(seed: 2)
        base = rng.bytes(B.bigChunk)
    }

    // MARK: 1 MiB chunks up and down

    mutating func upload() async throws {
        let client = client
        Bench.note("server_upload_mbps / server_download_mbps: \(B.streams) concurrent streams (connections) of PUT/GET /v1/chunks/:id, "
                   + "1 MiB sealed chunks, distinct ids; MB = 10^6 bytes of request/response body; best of \(B.rounds) rounds")
        // Sealed before the clock starts: the figures time the HTTP exchanges only.
        let single = try (0..<B.rounds).map { try B.seal(count: 64, size: B.bigChunk, base: base, tag: 0x1000 + UInt64($0), keys: keys) }
        var best1 = 0.0
        var phase = try await ServerTimes(client, server)
        for chunks in single {
            best1 = max(best1, try await B.throughput(chunks, streams: 1) { try await client.putChunk(id: $0.id, body: $0.body) })
        }
        try await phase.report("upload, 1 stream", client)
        Bench.report("server_upload_1stream_mbps", best1)
        uploaded += single.joined()

        let multi = try (0..<B.rounds).map { try B.seal(count: 192, size: B.bigChunk, base: base, tag: 0x2000 + UInt64($0), keys: keys) }
        var bestN = 0.0
        phase = try await ServerTimes(client, server)
        for chunks in multi {
            bestN = max(bestN, try await B.throughput(chunks, streams: B.streams) { try await client.putChunk(id: $0.id, body: $0.body) })
        }
        try await phase.report("upload, \(B.streams) streams", client)
        uploaded += multi.joined()
        Bench.report("server_upload_mbps", bestN)
    }

    mutating func download() async throws {
        let client = client
        if uploaded.isEmpty {
            uploaded = try B.seal(count: 256, size: B.bigChunk, base: base, tag: 0x1800, keys: keys)
            _ = try await B.throughput(uploaded, streams: B.streams) { try await client.putChunk(id: $0.id, body: $0.body) }
        }
        // Correctness once: what comes back is what went up.
        let probe = uploaded[uploaded.count / 2]
        let back = try await client.expect(200, "GET chunk", .GET, "/v1/chunks/\(probe.id)")
        guard back.body == Array(buffer: probe.body) else { throw BenchFailure("GET chunk returned other bytes than were uploaded") }

        let all = uploaded
        let phase = try await ServerTimes(client, server)
        var bestN = 0.0
        for _ in 0..<B.rounds {
            bestN = max(bestN, try await B.throughput(all, streams: B.streams) { chunk in
                guard try await client.getChunk(id: chunk.id) == chunk.size else { throw BenchFailure("GET chunk: short body") }
            })
        }
        try await phase.report("download, \(B.streams) streams", client)
        Bench.report("server_download_mbps", bestN)
        var best1 = 0.0
        let few = Array(all.prefix(256))
        for _ in 0..<B.rounds {
            best1 = max(best1, try await B.throughput(few, streams: 1) { chunk in
                guard try await client.getChunk(id: chunk.id) == chunk.size else { throw BenchFailure("GET chunk: short body") }
            })
        }
        Bench.report("server_download_1stream_mbps", best1)
        uploaded = []
    }

    // MARK: Small chunks

    func smallChunks() async throws {
        Bench.note("server_small_chunks_per_s_*: 4 KiB plaintext chunks, one stream; unbatched = one PUT each, "
                   + "batched = POST /v1/chunks/batch with \(B.batchSize) chunks per request; best of \(B.rounds) rounds")
        let singles = try (0..<B.rounds).map { try B.seal(count: 100, size: B.smallChunk, base: base, tag: 0x3000 + UInt64($0), keys: keys) }
        var phase = try await ServerTimes(client, server)
        var bestSingle = 0.0
        for chunks in singles {
            let elapsed = try await B.timed { for c in chunks { try await client.putChunk(id: c.id, body: c.body) } }
            bestSingle = max(bestSingle, Double(chunks.count) / Bench.seconds(elapsed))
        }
        try await phase.report("small chunks, unbatched", client)
        Bench.report("server_small_chunks_per_s_unbatched", bestSingle, unit: "chunks/s")

        let batches = try (0..<B.rounds).map { round in
            let chunks = try B.seal(count: 4 * B.batchSize, size: B.smallChunk, base: base, tag: 0x4000 + UInt64(round), keys: keys)
            return try stride(from: 0, to: chunks.count, by: B.batchSize).map { start in
                ByteBuffer(bytes: try ChunkBatch(chunks: chunks[start..<(start + B.batchSize)].map(\.sealed)).encoded)
            }
        }
        phase = try await ServerTimes(client, server)
        var bestBatched = 0.0
        for bodies in batches {
            let elapsed = try await B.timed { for body in bodies { try await client.putBatch(body: body) } }
            bestBatched = max(bestBatched, Double(4 * B.batchSize) / Bench.seconds(elapsed))
        }
        try await phase.report("small chunks, batches of \(B.batchSize)", client)
        Bench.report("server_small_chunks_per_s_batched", bestBatched, unit: "chunks/s")
    }

    // MARK: Journal appends

    /// A one-operation entry (a file created), sealed on the journal's end as last answered.
    func entry() throws -> JournalEntry {
        let op = Operation.create(node: .random(), parent: .root, name: try Name("file-\(appended)"), revision: .random(),
                                  attributes: try NodeAttributes(mode: 0o644, mtime: Timestamp(nanoseconds: 0)),
                                  content: .file(.empty))
        let batch = try OperationBatch(device: device, createdAt: Timestamp(nanoseconds: Int64(appended)), operations: [op])
        return try JournalEntry.seal(batch, keys: keys, baseSeq: seq, baseHead: head).signed(by: identity, device: device, vault: keys.vaultID)
    }

    mutating func append() async throws {
        (seq, head) = try await client.append(try entry())
        appended += 1
    }

    mutating func appends() async throws {
        Bench.note("server_appends_per_s: sequential POST /v1/journal, one create operation per entry, no references, "
                   + "each sealed on the previous answer's (seq, head); best of \(B.rounds) rounds")
        let phase = try await ServerTimes(client, server)
        var best = 0.0
        let n = 300
        for _ in 0..<B.rounds {
            let elapsed = try await B.timed { for _ in 0..<n { try await append() } }
            best = max(best, Double(n) / Bench.seconds(elapsed))
        }
        try await phase.report("appends", client)
        guard seq.rawValue == UInt64(appended) else { throw BenchFailure("appends: seq \(seq) after \(appended) appends") }
        Bench.report("server_appends_per_s", best, unit: "appends/s")

        // The floor under that figure: one HTTP round trip, and one with auth.
        let client = client
        var floor: [String] = []
        for (path, what) in [("/v1/health", "GET /v1/health (no auth, no store)"), ("/v1/account", "GET /v1/account (auth + 1 read)")] {
            let elapsed = try await B.timed { for _ in 0..<n { try await client.expect(200, path, .GET, path) } }
            floor.append(what + String(format: " %.0f/s", Double(n) / Bench.seconds(elapsed)))
        }
        var sealing = Duration.zero
        for _ in 0..<n { sealing += try ContinuousClock().measure { _ = try entry() } }
        floor.append(String(format: "sealing an entry %.0f µs", Bench.seconds(sealing) / Double(n) * 1e6))
        Bench.note("sequential, same connection: " + floor.joined(separator: "; "))
    }

    // MARK: Memory with 1,000 idle long-polls

    /// The kernel's count of connections dropped because a listen queue was full (all sockets).
    static func listenOverflows() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/net/netstat", encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n").filter { $0.hasPrefix("TcpExt:") }
        guard lines.count >= 2 else { return nil }
        let names = lines[0].split(separator: " "), values = lines[1].split(separator: " ")
        return names.firstIndex(of: "ListenOverflows").flatMap { $0 < values.count ? Int(values[$0]) : nil }
    }

    mutating func longPolls() async throws {
        let n = B.longPolls
        Bench.note("server_rss_*: VmRSS of the server process; idle = after the phases above (" + String(format: "%.1f", rssStart)
                   + " MiB right after start); then \(n) long-polls GET /v1/journal?after=\(seq)&wait=60 on raw TCP connections")
        try await Task.sleep(for: .milliseconds(500))
        let rssIdle = try server.rssMiB()
        let threadsIdle = server.threads ?? 0
        Bench.report("server_rss_idle_mib", rssIdle, unit: "MiB", digits: 1)
        let overflowsBefore = Self.listenOverflows()
        let opened = ContinuousClock.now
        let polls = try RawLongPolls(count: n, port: server.port, token: token, after: seq.rawValue, wait: 60)
        let connected = ContinuousClock.now - opened
        let deadline = ContinuousClock.now + .seconds(60)
        var open = 0.0
        while ContinuousClock.now < deadline {
            open = try await client.metric("lockfs_long_polls_open") ?? 0
            if open >= Double(n) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        guard open >= Double(n) else { throw BenchFailure("lockfs_long_polls_open reached only \(open) of \(n) within 60 s") }
        let waiting = ContinuousClock.now - opened
        try await Task.sleep(for: .milliseconds(500))
        let rssPolls = try server.rssMiB()
        let threadsPolls = server.threads ?? 0
        Bench.report("server_rss_1000_longpolls_mib", rssPolls, unit: "MiB", digits: 1)
        let overflows = Self.listenOverflows().map { after in overflowsBefore.map { "\(after - $0)" } ?? "?" } ?? "?"
        Bench.note(String(format: "long-polls: connected and sent in %.2f s, all %d waiting after %.2f s; RSS +%.1f MiB (%.1f KiB each); "
                          + "server threads %d → %d", Bench.seconds(connected), n, Bench.seconds(waiting), rssPolls - rssIdle,
                          (rssPolls - rssIdle) * 1024 / Double(n), threadsIdle, threadsPolls)
                   + "; listen-queue overflows meanwhile (TcpExt ListenOverflows, whole machine; each costs the client a 1 s SYN retry): \(overflows)")

        // One append wakes them all; every long-poll must answer with it.
        let wake = ContinuousClock.now
        try await append()
        let answered = try polls.readResponses()
        let woke = ContinuousClock.now - wake
        polls.closeAll()
        guard answered == n else { throw BenchFailure("only \(answered) of \(n) long-polls answered 200 after an append") }
        Bench.report("server_longpoll_wake_1000_ms", Bench.seconds(woke) * 1000, unit: "ms")
    }
}
