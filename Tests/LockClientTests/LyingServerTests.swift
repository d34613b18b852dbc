import Foundation
import LockTesting
@testable import LockClient
import LockCrypto
import LockWire
import Synchronization
import Testing

/// A server that lies adaptively: an in-memory vault server whose answers a
/// test scripts per call (what it acknowledges, what it stores, which
/// history it shows to whom, which chunks it claims). Each lie of issue 15
/// must end in the alarm or an error, never in wrong bytes or a lost version.
final class LyingRemote: Remote, @unchecked Sendable {
    let honest: InMemoryRemote
    var server: InMemoryVaultServer { honest.server }

    /// The scripted answers; nil: answer honestly.
    struct Script: Sendable {
        var append: (@Sendable (JournalEntry, [ChunkID]) async throws -> (seq: JournalSeq, head: ChainHead))?
        var entries: (@Sendable (JournalSeq, Int) async throws -> EntryPage)?
        var missingChunks: (@Sendable ([ChunkID]) async throws -> [ChunkID])?
        var devices: (@Sendable () async throws -> [DeviceInfo])?
    }
    let script = Mutex(Script())

    init(server: InMemoryVaultServer) { honest = InMemoryRemote(server: server) }

    func lie(_ edit: (inout Script) -> Void) { script.withLock { edit(&$0) } }

    func preLogin(user: String) async throws -> KDFParameters { try await honest.preLogin(user: user) }
    func register(_ request: RegisterRequest) async throws -> Session { try await honest.register(request) }
    func login(_ request: LoginRequest) async throws -> Session { try await honest.login(request) }
    func keyring() async throws -> VaultKeyring { try await honest.keyring() }
    func recover(_ request: RecoverRequest) async throws -> Session { try await honest.recover(request) }
    func replaceKeyring(_ request: KeyringReplaceRequest) async throws { try await honest.replaceKeyring(request) }
    func devices() async throws -> [DeviceInfo] {
        if let lie = script.withLock({ $0.devices }) { return try await lie() }
        return try await honest.devices()
    }
    func revokeDevice(_ id: DeviceID, loginSecret: [UInt8]?) async throws { try await honest.revokeDevice(id, loginSecret: loginSecret) }
    func missingChunks(_ ids: [ChunkID]) async throws -> [ChunkID] {
        if let lie = script.withLock({ $0.missingChunks }) { return try await lie(ids) }
        return try await honest.missingChunks(ids)
    }
    func putChunk(_ chunk: SealedChunk) async throws { try await honest.putChunk(chunk) }
    func putChunks(_ chunks: [SealedChunk]) async throws { try await honest.putChunks(chunks) }
    func chunk(_ id: ChunkID) async throws -> SealedChunk { try await honest.chunk(id) }
    func append(_ entry: JournalEntry, references: [ChunkID]) async throws -> (seq: JournalSeq, head: ChainHead) {
        if let lie = script.withLock({ $0.append }) { return try await lie(entry, references) }
        return try await honest.append(entry, references: references)
    }
    func entries(after: JournalSeq, limit: Int, wait: Duration) async throws -> EntryPage {
        if let lie = script.withLock({ $0.entries }) { return try await lie(after, limit) }
        return try await honest.entries(after: after, limit: limit, wait: wait)
    }
    func putCheckpoint(_ stored: [UInt8]) async throws { try await honest.putCheckpoint(stored) }
    func latestCheckpoint() async throws -> [UInt8]? { try await honest.latestCheckpoint() }
}

extension InMemoryVaultServer {
    /// Stores `entry` at the end of the journal with no check (a liar's
    /// append); returns where.
    @discardableResult
    func store(_ entry: JournalEntry) -> (seq: JournalSeq, head: ChainHead) {
        state.withLock { s in
            let seq = JournalSeq((s.entries.last?.seq.rawValue ?? 0) + 1)
            let head = (s.entries.last?.head ?? ChainHead.genesis(of: vault)).next(seq: seq.rawValue, entry: entry.encoded)
            s.entries.append((seq, head, entry))
            return (seq, head)
        }
    }

    /// The journal's entries, in order.
    var journal: [JournalEntry] { state.withLock { $0.entries.map(\.entry) } }

    /// A page after `after` of another history, `entries` chained from
    /// genesis: what a server keeping one history per device shows.
    func page(of entries: [JournalEntry], after: JournalSeq) throws -> EntryPage {
        var head = ChainHead.genesis(of: vault)
        var items: [EntryPage.Item] = []
        var start = EntryPage.Start(after: .start, head: head)
        for (i, e) in entries.enumerated() {
            let seq = UInt64(i + 1)
            head = head.next(seq: seq, entry: e.encoded)
            if seq == after.rawValue { start = .init(after: after, head: head) }
            if seq > after.rawValue { items.append(.init(seq: JournalSeq(seq), head: head, entry: e)) }
        }
        return try EntryPage(start: start, items: items, latest: JournalSeq(UInt64(entries.count)))
    }
}

@Suite struct LyingServerTests {
    struct Device {
        let engine: Engine
        let remote: LyingRemote
    }

    /// Devices of one vault, each talking to the same server through its own liar.
    static func devices(_ count: Int, options: EngineOptions = testOptions()) throws -> (InMemoryVaultServer, [Device]) {
        let keys = VaultKeys.generate()
        let server = InMemoryVaultServer(vault: keys.vaultID)
        let devices = try (0..<count).map { i -> Device in
            let remote = LyingRemote(server: server)
            let creds = DeviceCredentials(server: "memory", user: "u", device: .random(), deviceName: "d\(i)", vault: keys.vaultID,
                                          token: "t", keys: keys, identity: .generate())
            let engine = try Engine(home: ClientHome(directory: try makeTemporaryDirectory("lying-\(i)")), credentials: creds,
                                    remote: remote, options: options)
            return Device(engine: engine, remote: remote)
        }
        return (server, devices)
    }

    /// `body` must raise the alarm with a message containing `containing`;
    /// afterwards the engine refuses to pull or push.
    static func expectAlarm(_ engine: Engine, _ containing: String, sourceLocation: SourceLocation = #_sourceLocation,
                            _ body: () async throws -> Void) async {
        let why = await HostileServerTests.expectIntegrity(containing, sourceLocation: sourceLocation, body)
        #expect(why != nil && engine.status().integrityAlarm == why, sourceLocation: sourceLocation)
        await #expect(throws: LockError.self, sourceLocation: sourceLocation) { try await engine.pullOnce() }
    }

    /// The first case: E1 acknowledged at n+1 and withheld; the
    /// device's next entry E2 stored at n, E1 after it. Before: every client
    /// applied E2 and dropped E1 as a "retried duplicate", and the writer
    /// counted E1 as confirmed. The writer catches the second acknowledgement;
    /// another device catches E2 naming a batch it never saw.
    @Test func anAcknowledgementAtAFutureSeqWithTheNextEntrySlottedFirstIsCaught() async throws {
        let (server, d) = try Self.devices(2)
        let (a, b) = (d[0].engine, d[1].engine)
        try await a.put("first.txt", "synced")
        try await a.syncNow()
        let held = Mutex<JournalEntry?>(nil)
        d[0].remote.lie { $0.append = { entry, _ in
            if let e1 = held.withLock({ $0 }) {
                let e2 = server.store(entry)
                server.store(e1)
                return e2
            }
            held.withLock { $0 = entry }
            let next = (server.journal.count + 2)
            return (JournalSeq(UInt64(next)), ChainHead.genesis(of: .random()))
        } }
        try await a.put("one.txt", "E1")
        try await a.pushOnce()
        try await a.put("two.txt", "E2")
        await Self.expectAlarm(a, "at or before its previous entry") { try await a.pushOnce() }
        #expect(try await a.text("one.txt") == "E1")
        #expect(try await a.text("two.txt") == "E2")
        await Self.expectAlarm(b, "never saw") { try await b.pullOnce() }
    }

    /// An acknowledgement at or below what the writer verified, where another
    /// entry is.
    @Test(arguments: [1, 2]) func anAcknowledgementAtOrBelowTheCursorIsCaught(at seq: Int) async throws {
        let (_, d) = try Self.devices(2)
        let (a, b) = (d[0].engine, d[1].engine)
        try await b.put("x", "1")
        try await b.syncNow()
        try await b.put("y", "2")
        try await b.syncNow()
        try await a.pullOnce()
        let honest = d[0].remote.honest
        let heads = try await honest.entries(after: .start, limit: 10, wait: .zero).items.map(\.head)
        d[0].remote.lie { $0.append = { entry, refs in
            _ = try await honest.append(entry, references: refs)
            return (JournalSeq(UInt64(seq)), heads[seq - 1])
        } }
        try await a.put("mine", "3")
        await Self.expectAlarm(a, "where this device verified another entry") { try await a.pushOnce() }
        #expect(try await a.text("mine") == "3")
    }

    /// An acknowledgement at a seq the journal never reaches (the entry was not
    /// stored): before, the change stayed "sending" for good with no alarm.
    @Test func anAcknowledgementBeyondTheJournalIsCaughtByTheNextPage() async throws {
        let (server, d) = try Self.devices(1)
        let a = d[0].engine
        d[0].remote.lie { $0.append = { _, _ in (JournalSeq(UInt64(server.journal.count + 5)), ChainHead.genesis(of: .random())) } }
        try await a.put("mine", "1")
        try await a.pushOnce()
        await Self.expectAlarm(a, "but its journal ends at 0") { try await a.pullOnce() }
        #expect(a.status().queuedOperations == 1)
        // Absurd positions are an alarm, not a crash.
        let (_, e) = try Self.devices(1)
        e[0].remote.lie { $0.append = { _, _ in (JournalSeq(UInt64(Int64.max) + 1), ChainHead.genesis(of: .random())) } }
        try await e[0].engine.put("x", "1")
        await Self.expectAlarm(e[0].engine, "which no journal has") { try await e[0].engine.pushOnce() }
    }

    /// The head an acknowledgement names must be the one the pull finds there.
    @Test func anAcknowledgementWithAnotherHeadIsCaughtByThePull() async throws {
        let (_, d) = try Self.devices(1)
        let a = d[0].engine
        let honest = d[0].remote.honest
        d[0].remote.lie { $0.append = { entry, refs in
            let (seq, _) = try await honest.append(entry, references: refs)
            return (seq, ChainHead.genesis(of: .random()))
        } }
        try await a.put("mine", "1")
        try await a.pushOnce()
        await Self.expectAlarm(a, "another chain head") { try await a.pullOnce() }
        #expect(a.status().queuedOperations == 1)
    }

    /// A retried append that landed twice is an exact repeat: applied once,
    /// no alarm. An older entry of a device served again after its newer
    /// ones is not: before, it was skipped in silence.
    @Test func anExactRepeatIsAppliedOnceAndAReplayIsCaught() async throws {
        let (server, d) = try Self.devices(2)
        let (a, b) = (d[0].engine, d[1].engine)
        d[0].remote.lie { $0.append = { entry, _ in
            server.store(entry)
            return server.store(entry)
        } }
        try await a.put("doc", "v1")
        try await a.syncNow()
        try await b.pullOnce()
        #expect(try await b.tree().keys.sorted() == ["/doc"])
        #expect(b.status().integrityAlarm == nil && a.status().integrityAlarm == nil)
        d[0].remote.lie { $0.append = nil }
        try await a.put("doc", "v2")
        try await a.syncNow()
        server.store(server.journal[0])
        await Self.expectAlarm(b, "earlier batch") { try await b.pullOnce() }
        // Nothing of the lying page was applied.
        #expect(try await b.text("doc") == "v1")
        await Self.expectAlarm(a, "earlier batch") { try await a.pullOnce() }
    }

    /// A per-device fork: one device is shown the journal without another
    /// device's middle entry, the chain recomputed around the gap.
    @Test func aDeviceShownAnotherDevicesEntriesWithAGapIsAlarmed() async throws {
        let (server, d) = try Self.devices(2)
        let (a, b) = (d[0].engine, d[1].engine)
        for i in 1...3 {
            try await a.put("f\(i)", "\(i)")
            try await a.syncNow()
        }
        d[1].remote.lie { $0.entries = { after, _ in
            var view = server.journal
            view.remove(at: 1)
            return try server.page(of: view, after: after)
        } }
        await Self.expectAlarm(b, "never saw") { try await b.pullOnce() }
    }

    /// The same journal length, another history: the page's start says so.
    @Test func anEqualLengthForkIsCaughtAtThePoll() async throws {
        let (server, d) = try Self.devices(2)
        let (a, b) = (d[0].engine, d[1].engine)
        try await a.put("a", "1")
        try await a.syncNow()
        try await b.pullOnce()
        // The server now shows b a history where entry 1 is b's own, never sent, of the same length.
        let other = try JournalEntry.seal(OperationBatch(device: b.device, createdAt: Timestamp(nanoseconds: 1), operations: [
            .delete(node: .random(), base: .random())]), keys: b.keys, baseSeq: .start, baseHead: .genesis(of: b.keys.vaultID))
        d[1].remote.lie { $0.entries = { after, _ in try server.page(of: [other], after: after) } }
        await Self.expectAlarm(b, "another history at 1") { try await b.pullOnce() }
    }

    /// A chained entry that opens under no key of the vault.
    @Test func aGarbageEntryRaisesTheAlarm() async throws {
        let (server, d) = try Self.devices(2)
        let (a, b) = (d[0].engine, d[1].engine)
        try await a.put("a", "1")
        try await a.syncNow()
        try await b.pullOnce()
        var sealed = server.journal[0].sealedBatch
        for i in 40..<sealed.count { sealed[i] = UInt8.random(in: 0...255) }
        server.store(try JournalEntry(baseSeq: JournalSeq(1), baseHead: try #require(server.head(at: 1)), sealedBatch: sealed))
        await Self.expectAlarm(b, "failed authentication") { try await b.pullOnce() }
        #expect(try await b.text("a") == "1")
        // The way on: quarantine it (the evidence kept), and the journal goes on over it.
        let suspect = try #require(try b.suspectEntry())
        #expect(suspect.seq == 2 && suspect.head == server.head(at: 2)?.hex)
        let evidence = try b.quarantineSuspect()
        #expect(try Data(contentsOf: evidence) == Data(server.journal[1].encoded))
        let again = try Engine(home: b.home, credentials: DeviceCredentials(server: "memory", user: "u", device: b.device, deviceName: "d1",
                                                                           vault: b.keys.vaultID, token: "t", keys: b.keys, identity: b.identity),
                               remote: d[1].remote, options: testOptions())
        try await a.put("after", "3")
        try await a.pushOnce()
        try await again.pullOnce()
        #expect(again.status().integrityAlarm == nil && again.status().ignoredEntries == 1)
        #expect(try await again.text("after") == "3")
        // Another entry does not open either: a new alarm (the quarantine named one entry only).
        server.store(try JournalEntry(baseSeq: JournalSeq(3), baseHead: try #require(server.head(at: 3)), sealedBatch: sealed))
        await Self.expectAlarm(again, "failed authentication") { try await again.pullOnce() }
    }

    /// The server claims to hold chunks it never got, accepts the entry,
    /// then answers 404: the writer keeps the content, readers get an error.
    @Test func chunksClaimedButNeverStoredAreNotLost() async throws {
        let (server, d) = try Self.devices(2)
        let (a, b) = (d[0].engine, d[1].engine)
        d[0].remote.lie {
            $0.missingChunks = { _ in [] }
            $0.append = { entry, _ in server.store(entry) }
        }
        let text = seededText(300_000, seed: 7)
        try await a.put("big", text)
        try await a.syncNow()
        #expect(a.status().queuedOperations == 0)
        #expect(try await a.text("big") == text)
        try await b.pullOnce()
        let ino = try b.resolve("big")
        await #expect(throws: LockError.self) { _ = try await b.read(ino, offset: 0, size: 10) }
        // The writer still holds every byte (its cache), to upload again once asked.
        let id = try #require(a.snapshot()["/big"]?.manifest?.chunks.first?.id)
        #expect(a.cache.contains(id))
    }
}
