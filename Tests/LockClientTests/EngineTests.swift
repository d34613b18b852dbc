import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// A device of a test vault: its engine, its remote (which can go offline) and its home.
struct TestDevice {
    let engine: Engine
    let remote: InMemoryRemote
    let home: URL

    /// The same device after a restart (or a kill -9): a new engine on its home.
    func reopened() throws -> TestDevice {
        let creds = DeviceCredentials(server: "memory", user: "u", device: engine.device, deviceName: "d", vault: engine.keys.vaultID,
                                      token: "t", keys: engine.keys, olderKeys: Array(engine.generations.all.dropFirst()), identity: engine.identity)
        return TestDevice(engine: try Engine(home: ClientHome(directory: home), credentials: creds, remote: remote, options: testOptions()),
                          remote: remote, home: home)
    }
}

/// Makes `count` devices of one vault on one in-memory server.
func makeDevices(_ count: Int, server: InMemoryVaultServer? = nil, keys: VaultKeys = .generate(),
                 options: EngineOptions = testOptions()) throws -> (InMemoryVaultServer, [TestDevice]) {
    let server = server ?? InMemoryVaultServer(vault: keys.vaultID)
    let devices = try (0..<count).map { i -> TestDevice in
        let dir = try makeTemporaryDirectory("engine-\(i)")
        let remote = InMemoryRemote(server: server)
        // Signed entries, as every device of lockfs 0.2 writes them.
        let creds = DeviceCredentials(server: "memory", user: "u", device: .random(), deviceName: "d\(i)", vault: keys.vaultID,
                                      token: "t", keys: keys, identity: .generate())
        return TestDevice(engine: try Engine(home: ClientHome(directory: dir), credentials: creds, remote: remote, options: options),
                          remote: remote, home: dir)
    }
    return (server, devices)
}

func testOptions() -> EngineOptions {
    var o = EngineOptions()
    o.pollWait = .milliseconds(200)
    o.cacheLimit = 64 << 20
    return o
}

extension Engine {
    /// Writes a whole file (creating it), as open–write–close.
    @discardableResult
    func put(_ path: String, _ text: String) async throws -> UInt64 {
        let parts = path.split(separator: "/").map(String.init)
        let parent = try resolve(parts.dropLast().joined(separator: "/"))
        let ino = try (try? lookup(parent: parent, name: parts.last!).ino) ?? createFile(parent: parent, name: parts.last!, mode: 0o644).ino
        let h = try await openForWrite(ino, truncate: true)
        let bytes = Array(text.utf8)
        _ = try bytes.withUnsafeBytes { try write(h, offset: 0, bytes: $0) }
        try close(h)
        return ino
    }

    func text(_ path: String) async throws -> String {
        let ino = try resolve(path)
        return String(decoding: try await read(ino, offset: 0, size: 1 << 30), as: UTF8.self)
    }

    /// Uploads, then pulls until caught up.
    func syncNow() async throws {
        try await pushOnce()
        try await pullOnce()
    }

    /// Path → content digest for files, "dir" for folders, "-> target" for symlinks.
    func tree() async throws -> [String: String] {
        var out: [String: String] = [:]
        for (path, n) in snapshot() {
            switch n.content {
            case .directory: out[path] = "dir"
            case .symlink(let t): out[path] = "-> \(t)"
            case .file(let m): out[path] = m.chunks.map(\.id.hex).joined(separator: ",")
            }
        }
        return out
    }
}

@Suite struct ReplayRuleTests {
    let me = DeviceID.random(), other = DeviceID.random()
    func ctx(_ d: DeviceID, seq: UInt64, base: UInt64, rules: UInt8 = OperationBatch.wireVersion) -> ReplayContext {
        ReplayContext(device: d, createdAt: Timestamp(nanoseconds: 1_764_500_000_000_000_000), seq: seq, baseSeq: base, rules: rules)
    }
    func attrs() -> NodeAttributes { try! NodeAttributes(mode: 0o644, mtime: Timestamp(nanoseconds: 1)) }
    func manifest(_ b: UInt8) -> Manifest { try! Manifest(chunks: [.init(id: try! ChunkID(bytes: [UInt8](repeating: b, count: 32)), length: 10)]) }

    @Test func staleWriteBecomesAConflictCopyBesideTheFile() throws {
        var t = Tree()
        let f = NodeID.random(), r0 = RevisionID.random()
        t.apply(.create(node: f, parent: .root, name: try Name("notes.txt"), revision: r0, attributes: attrs(), content: .file(manifest(1))),
                context: ctx(me, seq: 1, base: 0))
        t.apply(.write(node: f, base: r0, revision: .random(), mtime: Timestamp(nanoseconds: 2), manifest: manifest(2)), context: ctx(me, seq: 2, base: 1))
        t.apply(.write(node: f, base: r0, revision: .random(), mtime: Timestamp(nanoseconds: 3), manifest: manifest(3)), context: ctx(other, seq: 3, base: 1))
        let names = t.childNames(of: .root).keys.sorted()
        #expect(names.count == 2)
        #expect(t.node(f)?.manifest == manifest(2))
        let copy = try #require(names.first { $0 != "notes.txt" })
        #expect(copy.hasPrefix("notes (conflict from \(other.hex.prefix(8)) 2025-11-30"))
        #expect(copy.hasSuffix(").txt"))
        #expect(t.node(t.child(of: .root, named: copy)!)?.manifest == manifest(3))
    }

    /// Rules 1 (version-1 batches, replayed so forever).
    @Test func rules1FolderDeleteKeepsWhatAnotherDeviceChangedUnseen() throws {
        var t = Tree()
        let dir = NodeID.random(), a = NodeID.random(), b = NodeID.random(), rd = RevisionID.random()
        t.apply(.create(node: dir, parent: .root, name: try Name("d"), revision: rd, attributes: attrs(), content: .directory), context: ctx(me, seq: 1, base: 0))
        t.apply(.create(node: a, parent: dir, name: try Name("a"), revision: .random(), attributes: attrs(), content: .file(manifest(1))), context: ctx(me, seq: 2, base: 1))
        t.apply(.create(node: b, parent: dir, name: try Name("b"), revision: .random(), attributes: attrs(), content: .file(manifest(2))), context: ctx(other, seq: 3, base: 2))
        // `me` deletes the folder having seen only up to seq 2: b (seq 3, other device) survives, with its folder.
        t.apply(.delete(node: dir, base: rd), context: ctx(me, seq: 4, base: 2, rules: 1))
        #expect(t.liveNode(dir) != nil)
        #expect(t.liveNode(b) != nil)
        #expect(t.liveNode(a) == nil && t.node(a)?.deleted == true)
    }

    @Test func writeIntoADeletedFileBringsItAndItsFolderBack() throws {
        var t = Tree()
        let dir = NodeID.random(), f = NodeID.random(), rf = RevisionID.random(), rd = RevisionID.random()
        t.apply(.create(node: dir, parent: .root, name: try Name("d"), revision: rd, attributes: attrs(), content: .directory), context: ctx(me, seq: 1, base: 0))
        t.apply(.create(node: f, parent: dir, name: try Name("f"), revision: rf, attributes: attrs(), content: .file(manifest(1))), context: ctx(me, seq: 2, base: 1))
        t.apply(.delete(node: f, base: rf), context: ctx(me, seq: 3, base: 2))
        t.apply(.delete(node: dir, base: rd), context: ctx(me, seq: 3, base: 2))
        #expect(t.liveNode(f) == nil && t.liveNode(dir) == nil)
        t.apply(.write(node: f, base: rf, revision: .random(), mtime: Timestamp(nanoseconds: 5), manifest: manifest(9)), context: ctx(other, seq: 4, base: 2))
        #expect(t.liveNode(dir) != nil && t.liveNode(f)?.manifest == manifest(9))
        #expect(t.path(of: f) == "/d/f")
    }

    @Test func moveThatWouldMakeACycleIsDropped() throws {
        var t = Tree()
        let x = NodeID.random(), y = NodeID.random()
        t.apply(.create(node: x, parent: .root, name: try Name("x"), revision: .random(), attributes: attrs(), content: .directory), context: ctx(me, seq: 1, base: 0))
        t.apply(.create(node: y, parent: .root, name: try Name("y"), revision: .random(), attributes: attrs(), content: .directory), context: ctx(me, seq: 2, base: 1))
        t.apply(.move(node: x, parent: y, name: try Name("x")), context: ctx(me, seq: 3, base: 2))
        t.apply(.move(node: y, parent: x, name: try Name("y")), context: ctx(other, seq: 4, base: 2))
        #expect(t.path(of: x) == "/y/x")
        #expect(t.path(of: y) == "/y")
    }

    @Test func rules1AFolderMovedInUnseenIsKeptWholeByAFolderDelete() throws {
        var t = Tree()
        let top = NodeID.random(), moved = NodeID.random(), f = NodeID.random(), rTop = RevisionID.random()
        t.apply(.create(node: top, parent: .root, name: try Name("top"), revision: rTop, attributes: attrs(), content: .directory), context: ctx(me, seq: 1, base: 0))
        t.apply(.create(node: moved, parent: .root, name: try Name("m"), revision: .random(), attributes: attrs(), content: .directory), context: ctx(other, seq: 2, base: 1))
        // `me` wrote the file itself (seq 3), so the file alone looks seen…
        t.apply(.create(node: f, parent: moved, name: try Name("f"), revision: .random(), attributes: attrs(), content: .file(manifest(1))), context: ctx(me, seq: 3, base: 2))
        // …but `other` moved its folder into `top` (seq 4) where `me` never saw it.
        t.apply(.move(node: moved, parent: top, name: try Name("m")), context: ctx(other, seq: 4, base: 3))
        t.apply(.delete(node: top, base: rTop), context: ctx(me, seq: 5, base: 3, rules: 1))
        #expect(t.path(of: f) == "/top/m/f")
    }

    @Test func aMoveIntoADeletedFolderBringsTheFolderBack() throws {
        var t = Tree()
        let dir = NodeID.random(), f = NodeID.random(), rd = RevisionID.random()
        t.apply(.create(node: dir, parent: .root, name: try Name("d"), revision: rd, attributes: attrs(), content: .directory), context: ctx(me, seq: 1, base: 0))
        t.apply(.create(node: f, parent: .root, name: try Name("f"), revision: .random(), attributes: attrs(), content: .file(manifest(1))), context: ctx(me, seq: 2, base: 1))
        t.apply(.delete(node: dir, base: rd), context: ctx(other, seq: 3, base: 2))
        t.apply(.move(node: f, parent: dir, name: try Name("f")), context: ctx(me, seq: 4, base: 2))
        #expect(t.path(of: f) == "/d/f")
    }

    @Test func nameClashOnCreateGetsAConflictName() throws {
        var t = Tree()
        t.apply(.create(node: .random(), parent: .root, name: try Name("a.txt"), revision: .random(), attributes: attrs(), content: .file(manifest(1))), context: ctx(me, seq: 1, base: 0))
        t.apply(.create(node: .random(), parent: .root, name: try Name("a.txt"), revision: .random(), attributes: attrs(), content: .file(manifest(2))), context: ctx(other, seq: 2, base: 0))
        #expect(t.childNames(of: .root).count == 2)
    }
}

@Suite struct EngineTests {
    @Test func writesReachAnotherDeviceAndReadBack() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine, b = d[1].engine
        _ = try a.mkdir(parent: 1, name: "docs", mode: 0o755)
        try await a.put("docs/hello.txt", "hello, world")
        try await a.syncNow()
        try await b.pullOnce()
        #expect(try await b.text("docs/hello.txt") == "hello, world")
        #expect(try b.getattr(try b.resolve("docs/hello.txt")).size == 12)
        // Inode numbers are stable across a restart of the engine.
        let ino = try b.resolve("docs/hello.txt")
        let creds2 = DeviceCredentials(server: "m", user: "u", device: b.device, deviceName: "d1", vault: b.keys.vaultID, token: "t", keys: b.keys)
        let b2 = try Engine(home: ClientHome(directory: d[1].home), credentials: creds2, remote: d[1].remote, options: testOptions())
        #expect(try b2.resolve("docs/hello.txt") == ino)
        #expect(try await b2.text("docs/hello.txt") == "hello, world")
    }

    @Test func concurrentEditsKeepBothVersions() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine, b = d[1].engine
        try await a.put("f.txt", "v0")
        try await a.syncNow()
        try await b.pullOnce()
        try await a.put("f.txt", "from a")
        try await b.put("f.txt", "from b")
        try await a.syncNow()
        try await b.syncNow()
        try await a.pullOnce()
        #expect(try await a.tree() == (try await b.tree()))
        let names = a.snapshot().keys.sorted()
        #expect(names.count == 2)
        var texts: Set<String> = []
        for n in names { texts.insert(try await a.text(n)) }
        #expect(texts == ["from a", "from b"])
        #expect(try await a.text("f.txt") == "from a")
    }

    @Test func offlineWritesQueueAndDrainLater() async throws {
        let (server, d) = try makeDevices(2)
        let a = d[0].engine
        d[0].remote.offlineFlag.set(true)
        try await a.put("offline.txt", "written offline")
        await #expect(throws: LockError.offline) { try await a.pushOnce() }
        #expect(a.status().queuedOperations == 1)
        #expect(try await a.text("offline.txt") == "written offline")
        d[0].remote.offlineFlag.set(false)
        try await a.syncNow()
        #expect(a.status().queuedOperations == 0)
        #expect(server.state.withLock { $0.entries.count } == 1)
        try await d[1].engine.pullOnce()
        #expect(try await d[1].engine.text("offline.txt") == "written offline")
    }

    @Test func backgroundLoopsDeliverWithinSeconds() async throws {
        let (_, d) = try makeDevices(2)
        for x in d { x.engine.start() }
        defer { Task { for x in d { await x.engine.stop() } } }
        try await d[0].engine.put("live.txt", "pushed")
        try await d[0].engine.waitUntilSynced()
        let deadline = ContinuousClock.now + .seconds(10)
        while (try? d[1].engine.resolve("live.txt")) == nil && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(try await d[1].engine.text("live.txt") == "pushed")
    }

    /// `lockfs sync --timeout` cancels the wait when the time is up: the wait
    /// must end then, queue or not. (It ignored cancellation, and the command
    /// hung while a change stayed queued.)
    @Test func aWaitForSyncEndsWhenCancelled() async throws {
        let (_, d) = try makeDevices(1)
        d[0].remote.offlineFlag.set(true)
        try await d[0].engine.put("stuck.txt", "queued, the server away")
        let engine = d[0].engine
        let wait = Task { try await engine.waitUntilSynced() }
        try await Task.sleep(for: .milliseconds(100))
        wait.cancel()
        let ended = InMemoryRemote.OfflineFlag()  // a flag: set once the wait has ended
        Task { _ = await wait.result; ended.set(true) }
        let deadline = ContinuousClock.now + .seconds(30)
        while !ended.isOffline && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(ended.isOffline, "the cancelled wait did not end within 30 s")
        if ended.isOffline { await #expect(throws: CancellationError.self) { try await wait.value } }
    }

    @Test func aRetriedAppendThatLandedTwiceCountsOnce() async throws {
        let (server, d) = try makeDevices(2)
        try await d[0].engine.put("once.txt", "1")
        try await d[0].engine.syncNow()
        // The server stores the same entry again (a retry after a lost answer).
        let dup = server.state.withLock { $0.entries[0].entry }
        _ = try await d[0].remote.append(dup, references: [])
        try await d[1].engine.pullOnce()
        #expect(d[1].engine.snapshot().count == 1)
    }

    @Test func anEditReChunksOnlyFromTheFirstChangeAndCutsAsAFullChunkingWould() async throws {
        let (_, d) = try makeDevices(1)
        let a = d[0].engine
        var rng = SeededGenerator(seed: 5)
        var content = rng.bytes(12 << 20)
        func write(_ name: String, _ bytes: [UInt8], truncate: Bool, at offset: Int = 0) async throws -> UInt64 {
            let ino = try (try? a.lookup(parent: 1, name: name).ino) ?? a.createFile(parent: 1, name: name, mode: 0o644).ino
            let h = try await a.openForWrite(ino, truncate: truncate)
            _ = try bytes.withUnsafeBytes { try a.write(h, offset: offset, bytes: $0) }
            try a.close(h)
            return ino
        }
        let edited = try await write("edited", content, truncate: true)
        // Three edits in one open: the middle, then an append, then a flush between them.
        let ino = edited
        let h = try await a.openForWrite(ino, truncate: false)
        _ = try [UInt8(0x42)].withUnsafeBytes { try a.write(h, offset: 6 << 20, bytes: $0) }
        try a.flush(h)
        let tail = rng.bytes(300_000)
        _ = try tail.withUnsafeBytes { try a.write(h, offset: 12 << 20, bytes: $0) }
        try a.close(h)
        content[6 << 20] = 0x42
        content += tail
        // The same bytes written whole: the same cuts, the same chunks.
        let whole = try await write("whole", content, truncate: true)
        let m1 = try #require(a.snapshot()["/edited"]?.manifest), m2 = try #require(a.snapshot()["/whole"]?.manifest)
        let back = try await a.read(ino, offset: 0, size: 20 << 20)
        let firstDiff = zip(back, content).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(back.count == content.count && firstDiff == nil, "size \(back.count) vs \(content.count), first difference at \(firstDiff ?? -1)")
        #expect(m1 == m2)
        _ = whole
    }

    @Test func modeAndTimeSetOnAnOpenFileTravelWithItsContent() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine
        let ino = try a.createFile(parent: 1, name: "t.txt", mode: 0o644).ino
        let h = try await a.openForWrite(ino, truncate: true)
        _ = try Array("tar member".utf8).withUnsafeBytes { try a.write(h, offset: 0, bytes: $0) }
        let when = Timestamp(nanoseconds: 981_173_106_000_000_000)
        _ = try a.setAttributes(ino, mode: 0o600, mtime: when)
        // Shown at once, committed with the content: one queued operation (the create).
        #expect(try a.getattr(ino).mode == 0o600 && a.getattr(ino).mtime == when)
        try a.close(h)
        #expect(a.status().queuedOperations == 1)
        #expect(try a.getattr(ino).mode == 0o600 && a.getattr(ino).mtime == when)
        try await a.syncNow()
        let b = d[1].engine
        try await b.pullOnce()
        let seen = try b.getattr(try b.resolve("t.txt"))
        #expect(seen.mode == 0o600 && seen.mtime == when && seen.size == 10)
    }

    @Test func concurrentReadersOfOneChunkShareOneFetch() async throws {
        var o = testOptions()
        o.readAhead = 0
        let (server, d) = try makeDevices(1, options: o)
        try await d[0].engine.put("shared.txt", String(repeating: "x", count: 100_000))
        try await d[0].engine.syncNow()
        // A second device whose remote counts chunk downloads.
        let counting = CountingRemote(base: InMemoryRemote(server: server))
        let dir = try makeTemporaryDirectory("engine-count")
        let keys = d[0].engine.keys
        let creds = DeviceCredentials(server: "m", user: "u", device: .random(), deviceName: "c", vault: keys.vaultID, token: "t", keys: keys)
        let reader = try Engine(home: ClientHome(directory: dir), credentials: creds, remote: counting, options: o)
        try await reader.pullOnce()
        let ino = try reader.resolve("shared.txt")
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<16 { group.addTask { try await reader.read(ino, offset: 0, size: 1 << 20).count } }
            for try await n in group { #expect(n == 100_000) }
        }
        #expect(counting.chunkFetches == 1)
    }

    @Test func cacheEvictionHonoursTheLimitAndKeepsPinnedData() async throws {
        var o = testOptions()
        o.cacheLimit = 1 << 20
        o.readAhead = 0
        let (_, d) = try makeDevices(2, options: o)
        let a = d[0].engine, b = d[1].engine
        _ = try a.mkdir(parent: 1, name: "pinned", mode: 0o755)
        var rng = SeededGenerator(seed: 7)
        for i in 0..<6 {
            let blob = String((0..<300_000).map { _ in Character(UnicodeScalar(UInt8.random(in: 97...122, using: &rng))) })
            try await a.put(i < 3 ? "pinned/p\(i)" : "u\(i)", blob)
        }
        try await a.syncNow()
        try await b.pullOnce()
        try await b.pin(try b.resolve("pinned"))
        for i in 3..<6 { _ = try await b.text("u\(i)") }
        // Over the limit only by the pinned bytes; every pinned file still local.
        #expect(b.cache.totalSize <= b.status().pinnedBytes + o.cacheLimit)
        for i in 0..<3 { #expect(try b.isCached(try b.resolve("pinned/p\(i)"))) }
        #expect(b.status().pinnedBytes == 900_000)
        try b.unpin(try b.resolve("pinned"))
        #expect(b.cache.totalSize <= o.cacheLimit)
        // New files in a pinned folder are pinned too (sticky).
        try await b.pin(try b.resolve("pinned"))
        #expect(try b.isPinned(try await b.put("pinned/new", "x")))
    }
}

/// Passes everything to another Remote and counts chunk downloads.
final class CountingRemote: Remote, @unchecked Sendable {
    let base: any Remote
    private let fetches = Counter()
    init(base: any Remote) { self.base = base }
    var chunkFetches: Int { fetches.add(0) }

    func preLogin(user: String) async throws -> KDFParameters { try await base.preLogin(user: user) }
    func register(_ request: RegisterRequest) async throws -> Session { try await base.register(request) }
    func login(_ request: LoginRequest) async throws -> Session { try await base.login(request) }
    func keyring() async throws -> VaultKeyring { try await base.keyring() }
    func recover(_ request: RecoverRequest) async throws -> Session { try await base.recover(request) }
    func replaceKeyring(_ request: KeyringReplaceRequest) async throws { try await base.replaceKeyring(request) }
    func devices() async throws -> [DeviceInfo] { try await base.devices() }
    func revokeDevice(_ id: DeviceID, loginSecret: [UInt8]?) async throws { try await base.revokeDevice(id, loginSecret: loginSecret) }
    func missingChunks(_ ids: [ChunkID]) async throws -> [ChunkID] { try await base.missingChunks(ids) }
    func putChunk(_ chunk: SealedChunk) async throws { try await base.putChunk(chunk) }
    func putChunks(_ chunks: [SealedChunk]) async throws { try await base.putChunks(chunks) }
    func chunk(_ id: ChunkID) async throws -> SealedChunk {
        _ = fetches.add(1)
        try await Task.sleep(for: .milliseconds(50))   // slow enough for readers to pile up
        return try await base.chunk(id)
    }
    func append(_ entry: JournalEntry, references: [ChunkID]) async throws -> (seq: JournalSeq, head: ChainHead) {
        try await base.append(entry, references: references)
    }
    func entries(after: JournalSeq, limit: Int, wait: Duration) async throws -> EntryPage {
        try await base.entries(after: after, limit: limit, wait: wait)
    }
    func putCheckpoint(_ stored: [UInt8]) async throws { try await base.putCheckpoint(stored) }
    func latestCheckpoint() async throws -> [UInt8]? { try await base.latestCheckpoint() }
}

/// What tools running in a mount do to open files (found by Tests/LockFSTests/ToolTests).
@Suite struct OpenFileTests {
    /// cp -a and tar: write, futimens, close.
    @Test func anMtimeSetAfterTheLastWriteSurvivesTheClose() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine
        let ino = try a.createFile(parent: 1, name: "restored", mode: 0o644).ino
        let h = try await a.openForWrite(ino, truncate: true)
        _ = try Array("content".utf8).withUnsafeBytes { try a.write(h, offset: 0, bytes: $0) }
        let old = Timestamp(nanoseconds: 1_000_000_000_123_456_789)
        _ = try a.setAttributes(ino, mtime: old)
        try a.flush(h)
        try a.close(h)
        #expect(try a.getattr(ino).mtime == old)
        try await a.syncNow()
        try await d[1].engine.pullOnce()
        #expect(try d[1].engine.getattr(d[1].engine.resolve("restored")).mtime == old)
        // A write after the mtime was set makes it the time of the commit again.
        let h2 = try await a.openForWrite(ino, truncate: false)
        _ = try a.setAttributes(ino, mtime: old)
        _ = try Array("more".utf8).withUnsafeBytes { try a.write(h2, offset: 7, bytes: $0) }
        try a.close(h2)
        #expect(try a.getattr(ino).mtime != old)
    }

    /// SQLite's -shm in WAL mode: unlinked, then its mapped pages written back, then closed.
    @Test func aFileUnlinkedHereWhileOpenStaysDeletedAfterItsLastClose() async throws {
        let (_, d) = try makeDevices(1)
        let a = d[0].engine
        let ino = try await a.put("db-shm", "index")
        let h = try await a.openForWrite(ino, truncate: false)
        try a.unlink(parent: 1, name: "db-shm")
        _ = try Array("late".utf8).withUnsafeBytes { try a.write(h, offset: 0, bytes: $0) }
        #expect(String(decoding: try await a.read(ino, offset: 0, size: 100), as: UTF8.self) == "latex")
        try a.flush(h)
        try a.close(h)
        #expect((try? a.resolve("db-shm")) == nil)
        // Replaced by a rename while open: the same.
        let old = try await a.put("doc", "old")
        try await a.put("doc.tmp", "new")
        let h2 = try await a.openForWrite(old, truncate: false)
        try a.rename(parent: 1, name: "doc.tmp", newParent: 1, newName: "doc")
        _ = try Array("stale".utf8).withUnsafeBytes { try a.write(h2, offset: 0, bytes: $0) }
        try a.close(h2)
        #expect(try await a.text("doc") == "new")
        #expect(a.snapshot().keys.sorted() == ["/doc"])
    }

    /// truncate -s 10M: repeated content gives the same chunk several times in one commit.
    @Test func aFileOfRepeatedContentCommits() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine
        for i in 0..<6 {
            let ino = try a.createFile(parent: 1, name: "same-\(i)", mode: 0o644).ino
            let h = try await a.openForWrite(ino, truncate: true)
            let bytes = [UInt8](repeating: UInt8(i + 1), count: 13 << 20)
            _ = try bytes.withUnsafeBytes { try a.write(h, offset: 0, bytes: $0) }
            try a.close(h)
        }
        try await a.syncNow()
        try await d[1].engine.pullOnce()
        for i in 0..<6 {
            let got = try await d[1].engine.read(d[1].engine.resolve("same-\(i)"), offset: 0, size: 14 << 20)
            #expect(got.count == 13 << 20 && got.allSatisfy { $0 == UInt8(i + 1) })
        }
    }
}
