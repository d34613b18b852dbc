import Foundation
@testable import LockClient
import LockCrypto
import LockWire
import Synchronization

/// One vault's server state in memory: chunks and a hash-chained journal,
/// with the server's rules (an append's base must be in the chain; its
/// chunks must be present). For fast engine tests; the real server is
/// tested in the integration tests.
final class InMemoryVaultServer: Sendable {
    struct State {
        var chunks: [ChunkID: [UInt8]] = [:]
        var entries: [(seq: JournalSeq, head: ChainHead, entry: JournalEntry)] = []
    }
    let vault: VaultID
    let state = Mutex(State())

    init(vault: VaultID) { self.vault = vault }

    func head(at seq: UInt64) -> ChainHead? {
        if seq == 0 { return ChainHead.genesis(of: vault) }
        return state.withLock { s in s.entries.first { $0.seq.rawValue == seq }?.head }
    }
}

/// A device's view of an `InMemoryVaultServer`, which can be switched offline.
struct InMemoryRemote: Remote {
    let server: InMemoryVaultServer
    let offlineFlag: OfflineFlag

    final class OfflineFlag: Sendable {
        let value = Mutex(false)
        var isOffline: Bool { value.withLock { $0 } }
        func set(_ v: Bool) { value.withLock { $0 = v } }
    }

    /// When each `entries` call (a pull attempt) came, answered or not.
    let pulls = CallLog()
    /// When each append was accepted.
    let appends = CallLog()

    final class CallLog: Sendable {
        let times = Mutex<[ContinuousClock.Instant]>([])
        func record() { times.withLock { $0.append(.now) } }
        func since(_ start: ContinuousClock.Instant) -> [ContinuousClock.Instant] { times.withLock { $0.filter { $0 >= start } } }
        var all: [ContinuousClock.Instant] { times.withLock { $0 } }
    }

    init(server: InMemoryVaultServer) {
        self.server = server
        offlineFlag = OfflineFlag()
    }

    func check() throws { if offlineFlag.isOffline { throw RemoteError.unreachable("offline (test)") } }

    func preLogin(user: String) async throws -> KDFParameters { throw RemoteError.notFound }
    func register(_ request: RegisterRequest) async throws -> Session { throw RemoteError.notFound }
    func login(_ request: LoginRequest) async throws -> Session { throw RemoteError.notFound }
    func keyring() async throws -> VaultKeyring { throw RemoteError.notFound }
    func recover(_ request: RecoverRequest) async throws -> Session { throw RemoteError.notFound }
    func replaceKeyring(_ request: KeyringReplaceRequest) async throws { throw RemoteError.notFound }
    func devices() async throws -> [DeviceInfo] { [] }
    func revokeDevice(_ id: DeviceID, loginSecret: [UInt8]?) async throws {}

    func missingChunks(_ ids: [ChunkID]) async throws -> [ChunkID] {
        try check()
        return server.state.withLock { s in ids.filter { s.chunks[$0] == nil } }
    }
    func putChunk(_ chunk: SealedChunk) async throws {
        try check()
        server.state.withLock { s in if s.chunks[chunk.id] == nil { s.chunks[chunk.id] = chunk.bytes } }
    }
    func putChunks(_ chunks: [SealedChunk]) async throws { for c in chunks { try await putChunk(c) } }
    func chunk(_ id: ChunkID) async throws -> SealedChunk {
        try check()
        guard let bytes = server.state.withLock({ $0.chunks[id] }) else { throw RemoteError.notFound }
        return SealedChunk(id: id, bytes: bytes)
    }

    func append(_ entry: JournalEntry, references: [ChunkID]) async throws -> (seq: JournalSeq, head: ChainHead) {
        try check()
        let vault = server.vault
        return try server.state.withLock { s in
            let latest = s.entries.last?.seq.rawValue ?? 0
            let baseHead = entry.baseSeq.rawValue == 0 ? ChainHead.genesis(of: vault)
                : s.entries.first { $0.seq == entry.baseSeq }?.head
            guard entry.baseSeq.rawValue <= latest, baseHead == entry.baseHead else {
                throw RemoteError.conflict(code: "bad_base", message: "bad base")
            }
            let missing = references.filter { s.chunks[$0] == nil }
            guard missing.isEmpty else { throw RemoteError.missingChunks(missing) }
            let seq = JournalSeq(latest + 1)
            let head = (s.entries.last?.head ?? ChainHead.genesis(of: vault)).next(seq: seq.rawValue, entry: entry.encoded)
            s.entries.append((seq, head, entry))
            appends.record()
            return (seq, head)
        }
    }

    func entries(after: JournalSeq, limit: Int, wait: Duration) async throws -> EntryPage {
        pulls.record()
        let deadline = ContinuousClock.now + wait
        while true {
            try check()
            let page = try server.state.withLock { s in
                let items = s.entries.filter { $0.seq > after }.prefix(limit).map { EntryPage.Item(seq: $0.seq, head: $0.head, entry: $0.entry) }
                let start = after == .start ? ChainHead.genesis(of: server.vault) : s.entries.first { $0.seq == after }?.head
                return try EntryPage(start: start.map { .init(after: after, head: $0) }, items: Array(items), latest: s.entries.last?.seq ?? .start)
            }
            if !page.items.isEmpty || ContinuousClock.now >= deadline { return page }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    func putCheckpoint(_ stored: [UInt8]) async throws { try check() }
    func latestCheckpoint() async throws -> [UInt8]? { try check(); return nil }
}
