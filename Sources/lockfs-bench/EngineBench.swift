import Foundation
import LockClient
import LockCrypto
import LockTesting
import LockWire

#if canImport(Glibc)
import Glibc
#endif

/// The engine figures of `make bench`: `Engine` instances in this process,
/// each with its own home under /tmp, over `RetryingRemote(HTTPRemote)` to a
/// real release `lockfs-server` on loopback with its embedded stores (client
/// and server share the machine's cores and disk, so these are end-to-end
/// figures). The vault is made with `VaultAccount.create` at INTERACTIVE
/// strength; every other device logs in to it.
///
/// The 1 GiB items run once; only the warm read is a best of rounds. MB = 10⁶
/// bytes. `LOCKFS_BENCH_ENGINE_SCALE=N` divides every size and count by N
/// (a quick look while working on the engine; the names keep their "1gib"/"100k").
enum EngineBench {
    /// The phases, in order; `lockfs-bench engine PHASE…` runs some only.
    /// `read` and `edit` need the 1 GiB file, so they bring `commit` along.
    static let phases = ["commit", "read", "small", "edit", "join"]

    static let piece = 1 << 20
    static let warmRounds = 3

    static let scale = max(1, Int(ProcessInfo.processInfo.environment["LOCKFS_BENCH_ENGINE_SCALE"] ?? "") ?? 1)
    static let bigFileSize = (1 << 30) / scale
    static let smallFiles = 10_000 / scale
    static let joinFiles = 100_000 / scale
    static let joinFolders = 100

    static func run(phases selected: [String] = []) async throws {
        if let unknown = selected.first(where: { !phases.contains($0) }) {
            throw BenchFailure("unknown engine phase \(unknown); phases: \(phases.joined(separator: " "))")
        }
        let server = try await BenchServer.start()
        let scratch = URL(fileURLWithPath: "/tmp").appendingPathComponent("lockfs-bench-engine-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        let signals = stopOnSignals(server, removing: scratch)
        defer {
            for (number, source) in signals {
                source.cancel()
                signal(number, SIG_DFL)
            }
        }
        let transport = CurlTransport()
        do {
            let run = try await EngineRun(server: server, scratch: scratch, transport: transport)
            let wanted = { (p: String) in selected.isEmpty || selected.contains(p) }
            if wanted("commit") || wanted("read") || wanted("edit") { try await run.commit() }
            if wanted("read") { try await run.reads() }
            if wanted("small") { try await run.smallFiles() }
            if wanted("edit") { try await run.edit() }
            if wanted("join") { try await run.join() }
        } catch {
            transport.shutdown()
            let log = server.log
            server.stop(grace: .seconds(5))
            try? FileManager.default.removeItem(at: scratch)
            throw BenchFailure("\(error)\n--- server log (tail) ---\n\(log.suffix(3000))")
        }
        transport.shutdown()
        server.stop()
        try? FileManager.default.removeItem(at: scratch)
    }

    /// Ctrl-C or SIGTERM during the bench: stop the server, remove the scratch directory.
    static func stopOnSignals(_ server: BenchServer, removing scratch: URL) -> [(Int32, any DispatchSourceSignal)] {
        [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                server.stop(grace: .seconds(2))
                try? FileManager.default.removeItem(at: scratch)
                exit(128 + number)
            }
            source.resume()
            return (number, source)
        }
    }

    /// A numeric field of /proc/self/status in kB (VmRSS, VmHWM), or nil.
    static func selfStatusKB(_ field: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return Int(line.dropFirst(field.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "")
        }
        return nil
    }

    /// glibc's malloc_trim(0): gives freed heap back to the kernel, so that RSS
    /// before a phase is not inflated by earlier phases' garbage. (Not in the
    /// Glibc module, hence the lookup.)
    static func returnFreedMemory() {
        typealias Trim = @convention(c) (Int) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return }
        _ = unsafeBitCast(symbol, to: Trim.self)(0)
    }

    static func mib(_ kb: Int?) -> Double { Double(kb ?? 0) / 1024 }

    static func since(_ start: ContinuousClock.Instant) -> Double { Bench.seconds(ContinuousClock.now - start) }
}

/// One engine run: the server, the vault's account, and the devices made so far.
final class EngineRun {
    typealias E = EngineBench
    let server: BenchServer
    let scratch: URL
    let transport: CurlTransport
    let user = "engine-bench"
    let password = "engine bench password"
    let writerCredentials: DeviceCredentials
    /// The device that writes the 1 GiB file and the small files.
    var writer: Engine?
    /// The 1 GiB file's bytes (kept to check what the other device reads).
    var big: [UInt8] = []
    var bigIno: UInt64 = 0

    init(server: BenchServer, scratch: URL, transport: CurlTransport) async throws {
        self.server = server
        self.scratch = scratch
        self.transport = transport
        let anonymous = RetryingRemote(wrapping: HTTPRemote(baseURL: server.baseURL, transport: transport))
        (writerCredentials, _) = try await VaultAccount.create(server: server.baseURL, user: user, invite: nil, password: password,
                                                               deviceName: "writer", remote: anonymous, strength: .interactive)
    }

    func remote(_ token: String) -> any Remote {
        RetryingRemote(wrapping: HTTPRemote(baseURL: server.baseURL, token: token, transport: transport))
    }

    /// A new device of the vault (a login with the password).
    func login(_ name: String) async throws -> DeviceCredentials {
        let anonymous = HTTPRemote(baseURL: server.baseURL, transport: transport)
        return try await VaultAccount.login(server: server.baseURL, user: user, password: password, deviceName: name,
                                            remote: RetryingRemote(wrapping: anonymous),
                                            authenticated: { [self] in remote($0) })
    }

    /// An engine for `credentials` with a new home under the scratch directory.
    func engine(_ credentials: DeviceCredentials, home name: String, in base: URL? = nil) throws -> Engine {
        let home = (base ?? scratch).appendingPathComponent(name)
        return try Engine(home: ClientHome(directory: home), credentials: credentials, remote: remote(credentials.token))
    }

    func writerEngine() throws -> Engine {
        if let writer { return writer }
        let e = try engine(writerCredentials, home: "writer")
        writer = e
        return e
    }

    /// A counter of the server's `/metrics` (the sample without labels).
    func metric(_ name: String) async throws -> Double {
        let r = try await transport.perform(HTTPRequest(method: "GET", url: server.baseURL + "/metrics"))
        guard r.status == 200 else { throw BenchFailure("GET /metrics: HTTP \(r.status)") }
        for line in String(decoding: r.body, as: UTF8.self).split(separator: "\n") where line.hasPrefix(name + " ") {
            if let v = Double(line.dropFirst(name.count + 1).split(separator: " ").first ?? "") { return v }
        }
        throw BenchFailure("/metrics has no \(name)")
    }

    func chunkBytesReceived() async throws -> Double { try await metric("lockfs_chunk_bytes_received_total") }

    /// Uploads everything queued and pulls until caught up.
    func sync(_ e: Engine) async throws {
        try await e.pushOnce()
        try await e.pullOnce()
        let status = e.status()
        guard status.queuedOperations == 0 else { throw BenchFailure("\(status.queuedOperations) operations still queued after sync") }
    }

    // MARK: 1 GiB written

    func commit() async throws {
        let size = E.bigFileSize
        var rng = SeededGenerator(seed: 0x1_61B)
        big = rng.bytes(size)
        let writer = try writerEngine()
        let receivedBefore = try await chunkBytesReceived()

        let start = ContinuousClock.now
        bigIno = try writer.createFile(parent: 1, name: "big.bin", mode: 0o644).ino
        let h = try await writer.openForWrite(bigIno, truncate: true)
        try big.withUnsafeBytes { raw in
            for offset in stride(from: 0, to: size, by: E.piece) {
                let part = UnsafeRawBufferPointer(rebasing: raw[offset..<min(size, offset + E.piece)])
                guard try writer.write(h, offset: offset, bytes: part) == part.count else { throw BenchFailure("short write") }
            }
        }
        let written = ContinuousClock.now
        try writer.close(h)
        let closed = ContinuousClock.now
        try await sync(writer)
        let done = ContinuousClock.now
        let received = try await chunkBytesReceived() - receivedBefore

        let mb = Double(size) / 1e6
        let total = Bench.seconds(done - start), local = Bench.seconds(closed - start), upload = Bench.seconds(done - closed)
        Bench.note(String(format: "engine_commit_*: %.0f MiB of seeded random bytes, createFile + openForWrite + %d writes of 1 MiB + close "
                          + "(local commit), then pushOnce + pullOnce (upload); writes %.2f s, close %.2f s; "
                          + "server received %.1f MiB of chunk envelopes", Double(size) / 1048576, size / E.piece,
                          Bench.seconds(written - start), Bench.seconds(closed - written), received / 1048576))
        Bench.report("engine_commit_1gib_mbps", mb / total)
        Bench.report("engine_commit_local_s", local, unit: "s", digits: 2)
        Bench.report("engine_commit_upload_s", upload, unit: "s", digits: 2)
    }

    // MARK: Reads on a second device

    func reads() async throws {
        let size = E.bigFileSize
        let reader = try engine(try await login("reader"), home: "reader")
        try await reader.pullOnce()
        let ino = try reader.resolve("/big.bin")
        guard try reader.getattr(ino).size == size else { throw BenchFailure("the reader sees another size of big.bin") }
        guard !(try reader.isCached(ino)) else { throw BenchFailure("the reader's cache is not empty") }

        /// Reads the whole file in 1 MiB pieces; returns the seconds spent in Engine.read.
        func readAll() async throws -> Double {
            var inRead = Duration.zero
            for offset in stride(from: 0, to: size, by: E.piece) {
                let t = ContinuousClock.now
                let bytes = try await reader.read(ino, offset: offset, size: E.piece)
                inRead += ContinuousClock.now - t
                let end = min(size, offset + E.piece)
                guard bytes.count == end - offset, bytes.elementsEqual(big[offset..<end]) else {
                    throw BenchFailure("the reader read other bytes at \(offset) than were written")
                }
            }
            return Bench.seconds(inRead)
        }
        let mb = Double(size) / 1e6
        let cold = try await readAll()
        Bench.note("engine_*_read_mbps: a second device (logged in, pulled) reads big.bin in 1 MiB pieces through Engine.read, "
                   + "time inside read only (each piece is compared with what was written, outside the clock); cold = empty cache "
                   + "(fetch + open + verify over loopback, read-ahead \(EngineOptions().readAhead) chunks), warm = from its cache, "
                   + "best of \(E.warmRounds)")
        Bench.report("engine_cold_read_mbps", mb / cold)
        var best = 0.0
        for _ in 0..<E.warmRounds { best = max(best, mb / (try await readAll())) }
        Bench.report("engine_warm_read_mbps", best)
    }

    // MARK: Small files

    func smallFiles() async throws {
        let n = E.smallFiles
        let writer = try writerEngine()
        var rng = SeededGenerator(seed: 0x5A11)
        let folder = try writer.mkdir(parent: 1, name: "small", mode: 0o755).ino
        let contents = (0..<n).map { _ in rng.bytes(1024 + Int(rng.next() % 3073)) }
        let bytes = contents.reduce(0) { $0 + $1.count }
        try await sync(writer)

        let start = ContinuousClock.now, cpuStart = ServerTimes.cpuSeconds("self")
        for (i, content) in contents.enumerated() {
            let ino = try writer.createFile(parent: folder, name: "f\(i).dat", mode: 0o644).ino
            let h = try await writer.openForWrite(ino, truncate: true)
            _ = try content.withUnsafeBytes { try writer.write(h, offset: 0, bytes: $0) }
            try writer.close(h)
        }
        let local = ContinuousClock.now, cpuLocal = ServerTimes.cpuSeconds("self")
        try await sync(writer)
        let total = E.since(start)
        Bench.note(String(format: "engine_small_files_per_s: %d files of 1–4 KiB (%.1f MiB), each createFile + openForWrite + write + close, "
                          + "one after the other, then pushOnce + pullOnce; local %.1f s (%.2f ms a file, bench process CPU %.1f s), "
                          + "upload %.1f s (CPU %.1f s)",
                          n, Double(bytes) / 1048576, Bench.seconds(local - start), Bench.seconds(local - start) / Double(n) * 1000,
                          cpuLocal - cpuStart, Bench.seconds(ContinuousClock.now - local), ServerTimes.cpuSeconds("self") - cpuLocal))
        Bench.report("engine_small_files_per_s", Double(n) / total, unit: "files/s")
    }

    // MARK: A one-byte edit in the middle of the 1 GiB file

    func edit() async throws {
        let writer = try writerEngine()
        let middle = E.bigFileSize / 2
        let value = big[middle] ^ 0xFF
        let before = try await chunkBytesReceived()
        let start = ContinuousClock.now
        let h = try await writer.openForWrite(bigIno, truncate: false)
        let opened = ContinuousClock.now
        _ = try [value].withUnsafeBytes { try writer.write(h, offset: middle, bytes: $0) }
        try writer.close(h)
        let closed = ContinuousClock.now
        try await sync(writer)
        let took = E.since(start)
        let uploaded = try await chunkBytesReceived() - before
        big[middle] = value
        Bench.note(String(format: "engine_edit_*: one byte changed at offset %d of big.bin (openForWrite without truncate, write 1 byte, "
                          + "close, pushOnce + pullOnce); chunk envelope bytes the server received "
                          + "(lockfs_chunk_bytes_received_total, before/after): %.2f MiB; open %.2f s, close %.2f s, upload %.2f s",
                          middle, uploaded / 1048576, Bench.seconds(opened - start), Bench.seconds(closed - opened),
                          Bench.seconds(ContinuousClock.now - closed)))
        Bench.report("engine_edit_upload_bytes", uploaded, unit: "bytes")
        Bench.report("engine_edit_seconds", took, unit: "s", digits: 2)

        // Another device sees the edit.
        let checker = try engine(try await login("checker"), home: "checker")
        try await checker.pullOnce()
        let got = try await checker.read(try checker.resolve("/big.bin"), offset: middle, size: 1)
        guard got == [value] else { throw BenchFailure("another device does not see the one-byte edit") }
    }

    // MARK: A new device joins a vault of 100,000 files

    func join() async throws {
        let n = E.joinFiles
        let perFolder = (n + E.joinFolders - 1) / E.joinFolders
        // The files come from their own device, which is then dropped.
        do {
            let maker = try engine(try await login("maker"), home: "maker")
            let start = ContinuousClock.now, cpuStart = ServerTimes.cpuSeconds("self")
            let top = try maker.mkdir(parent: 1, name: "many", mode: 0o755).ino
            var folder: UInt64 = 0
            for i in 0..<n {
                if i % perFolder == 0 { folder = try maker.mkdir(parent: top, name: "d\(i / perFolder)", mode: 0o755).ino }
                _ = try maker.createFile(parent: folder, name: "f\(i)", mode: 0o644)
            }
            let local = ContinuousClock.now, cpuLocal = ServerTimes.cpuSeconds("self")
            try await sync(maker)
            Bench.note(String(format: "engine_join_100k_*: %d empty files in %d folders made by one device (createFile each, local %.1f s, "
                              + "CPU %.1f s), pushed in entries of %d operations and pulled (%.1f s, CPU %.1f s)", n, E.joinFolders,
                              Bench.seconds(local - start), cpuLocal - cpuStart, EngineOptions().operationsPerEntry, E.since(local),
                              ServerTimes.cpuSeconds("self") - cpuLocal))
        }
        writer = nil
        big = []
        E.returnFreedMemory()
        let rssBefore = E.selfStatusKB("VmRSS")
        // Reset VmHWM to the current RSS, so the peak below is the join's own.
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)

        let loginStart = ContinuousClock.now
        let credentials = try await login("joiner")
        let loginTime = E.since(loginStart)
        let start = ContinuousClock.now
        let joiner = try engine(credentials, home: "joiner")
        try await joiner.pullOnce()
        let took = E.since(start)
        let rssAfter = E.selfStatusKB("VmRSS"), peak = E.selfStatusKB("VmHWM")

        let files = try joiner.list(try joiner.resolve("/many")).reduce(0) { sum, folder in
            sum + (try joiner.list(folder.attributes.ino).count)
        }
        guard files == n else { throw BenchFailure("the new device sees \(files) of \(n) files") }
        Bench.note(String(format: "engine_join_100k_*: a new device (login %.2f s, not counted) with a new home: Engine init + pullOnce "
                          + "until caught up; this process's VmRSS %.1f → %.1f MiB (+%.1f MiB), peak (VmHWM, reset before) %.1f MiB",
                          loginTime, E.mib(rssBefore), E.mib(rssAfter), E.mib(rssAfter) - E.mib(rssBefore), E.mib(peak)))
        Bench.report("engine_join_100k_seconds", took, unit: "s", digits: 2)
        Bench.report("engine_join_100k_rss_mib", E.mib(rssAfter), unit: "MiB", digits: 1)
        Bench.report("engine_join_100k_rss_growth_mib", E.mib(rssAfter) - E.mib(rssBefore), unit: "MiB", digits: 1)
    }
}
