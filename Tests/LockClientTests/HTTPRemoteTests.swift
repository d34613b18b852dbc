import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// One transport for the suite (a curl multi handle on its own thread).
let transport = CurlTransport()

/// A new vault registered on `server` through HTTPRemote; returns the authenticated remote.
func registerVault(on server: ServerProcess, user: String) async throws -> (HTTPRemote, VaultKeys, [UInt8], DeviceID) {
    let invite = try await server.admin(["user", "add", user]).output.split(separator: "\n").last.map(String.init) ?? ""
    let keys = VaultKeys.generate()
    let parameters = KDFParameters.generate(.interactive)
    let password = try PasswordKeys.derive(password: "pw of \(user)", parameters: parameters)
    let recovery = RecoveryKey.generate()
    let keyring = try Keyring.make(keys: keys, password: password, parameters: parameters, recovery: recovery)
    let secret = password.loginSecret.withUnsafeBytes { Array($0) }
    let anonymous = HTTPRemote(baseURL: server.baseURL, transport: transport)
    let session = try await anonymous.register(RegisterRequest(user: user, invite: invite, loginSecret: secret,
                                                               keyring: keyring, deviceName: "laptop",
                                                               recoveryProof: recovery.proof.withUnsafeBytes { Array($0) }, device: testDeviceKeys))
    #expect(session.vault == keys.vaultID)
    return (anonymous.authenticated(session.token), keys, secret, session.device)
}

/// The keys of every test device enrolled through these helpers.
let testIdentity = DeviceIdentity.generate()
/// Public device keys for test logins (the server wants a new device's keys).
let testDeviceKeys = DevicePublicKeys(testIdentity)

@Suite struct HTTPRemoteTests {
    @Test func everyOperationAgainstARealServer() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (remote, keys, secret, laptop) = try await registerVault(on: server, user: "alice")

        // Accounts.
        let anonymous = HTTPRemote(baseURL: server.baseURL, transport: transport)
        let phone = try await anonymous.login(LoginRequest(user: "alice", loginSecret: secret, deviceName: "phone", device: testDeviceKeys))
        #expect(phone.vault == keys.vaultID)
        await #expect(throws: RemoteError.forbidden("wrong user name or password")) {
            _ = try await anonymous.login(LoginRequest(user: "alice", loginSecret: [UInt8](repeating: 0, count: 32), deviceName: "x", device: testDeviceKeys))
        }
        #expect(try await anonymous.preLogin(user: "alice").opsLimit == 2)
        #expect(try await remote.keyring().vaultID == keys.vaultID)
        #expect(try await remote.devices().count == 2)
        await #expect(throws: RemoteError.conflict(code: "proof_required", message: "revoking another device needs the password: POST /v1/devices/ID/revoke (lockfs devices revoke asks for it; upgrade lockfs if this client does not)")) {
            try await remote.revokeDevice(phone.device, loginSecret: nil)
        }
        try await remote.revokeDevice(phone.device, loginSecret: secret)
        await #expect(throws: RemoteError.unauthorized) { _ = try await anonymous.authenticated(phone.token).keyring() }

        // Chunks, many in flight at once over reused connections.
        let chunks = try (0..<40).map { i in try Array("chunk \(i)".utf8).withUnsafeBytes { try keys.sealChunk($0) } }
        #expect(Set(try await remote.missingChunks(chunks.map(\.id))) == Set(chunks.map(\.id)))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in chunks.prefix(30) { group.addTask { try await remote.putChunk(c) } }
            try await group.waitForAll()
        }
        try await remote.putChunks(Array(chunks.suffix(10)))
        #expect(try await remote.missingChunks(chunks.map(\.id)).isEmpty)
        let back = try await remote.chunk(chunks[7].id)
        #expect(try keys.openChunk(back) == Array("chunk 7".utf8))
        await #expect(throws: RemoteError.notFound) {
            _ = try await remote.chunk(try ChunkID(bytes: [UInt8](repeating: 1, count: 32)))
        }

        // Journal: missing chunks are named; a stale base is a conflict; a long-poll wakes.
        let genesis = ChainHead.genesis(of: keys.vaultID)
        let absent = try Array("absent".utf8).withUnsafeBytes { try keys.sealChunk($0) }
        func entry(_ name: String, base: JournalSeq, head: ChainHead) throws -> JournalEntry {
            let op = Operation.create(node: .random(), parent: .root, name: try Name(name), revision: .random(),
                                      attributes: try NodeAttributes(mode: 0o644, mtime: Timestamp(nanoseconds: 0)), content: .directory)
            return try JournalEntry.seal(try OperationBatch(device: phone.device, createdAt: Timestamp(nanoseconds: 0), operations: [op]),
                                         keys: keys, baseSeq: base, baseHead: head).signed(by: testIdentity, device: laptop, vault: keys.vaultID)
        }
        await #expect(throws: RemoteError.missingChunks([absent.id])) {
            _ = try await remote.append(try entry("a", base: .start, head: genesis), references: [chunks[0].id, absent.id])
        }
        let first = try entry("a", base: .start, head: genesis)
        let (seq, head) = try await remote.append(first, references: [chunks[0].id])
        #expect(seq == JournalSeq(1) && head == genesis.next(seq: 1, entry: first.encoded))
        await #expect(throws: RemoteError.conflict(code: "bad_base", message: "the entry's base (seq 1) is not in this vault's journal")) {
            _ = try await remote.append(try entry("b", base: JournalSeq(1), head: genesis), references: [])
        }
        let poll = Task { try await remote.entries(after: JournalSeq(1), limit: 100, wait: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(300))
        let second = try entry("b", base: JournalSeq(1), head: head)
        _ = try await remote.append(second, references: [])
        let page = try await poll.value
        #expect(page.items.map(\.seq) == [JournalSeq(2)] && page.items[0].entry == second)

        // Checkpoints.
        #expect(try await remote.latestCheckpoint() == nil)
    }

    @Test func aDeadServerIsUnreachableAndACancelledPollStops() async throws {
        let server = try await ServerProcess.start()
        let (remote, _, _, _) = try await registerVault(on: server, user: "bob")
        let clock = ContinuousClock()
        let poll = Task { try await remote.entries(after: .start, limit: 10, wait: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(300))
        let start = clock.now
        poll.cancel()
        await #expect(throws: CancellationError.self) { _ = try await poll.value }
        // Well before the poll's own 30 s: cancellation stops it. (2 s was too tight
        // for a loaded 2-core machine running the client's suites in parallel.)
        #expect(clock.now - start < .seconds(10))

        server.kill9()
        do {
            _ = try await remote.keyring()
            Issue.record("a dead server answered")
        } catch let error as RemoteError {
            #expect(error.isRetryable)
            guard case .unreachable = error else { Issue.record("expected unreachable, got \(error)"); return }
        }
    }
}

/// A Remote whose keyring call fails a set number of times first.
struct FlakyRemote: Remote {
    let failures: Int
    let error: RemoteError
    let calls = Counter()
    let keyringValue: VaultKeyring

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var n = 0
        func next() -> Int { lock.lock(); defer { lock.unlock() }; n += 1; return n }
        var value: Int { lock.lock(); defer { lock.unlock() }; return n }
    }

    func keyring() async throws -> VaultKeyring {
        if calls.next() <= failures { throw error }
        return keyringValue
    }
    func preLogin(user: String) async throws -> KDFParameters { throw RemoteError.notFound }
    func register(_ request: RegisterRequest) async throws -> Session { throw RemoteError.notFound }
    func login(_ request: LoginRequest) async throws -> Session { throw RemoteError.notFound }
    func recover(_ request: RecoverRequest) async throws -> Session { throw RemoteError.notFound }
    func replaceKeyring(_ request: KeyringReplaceRequest) async throws { throw RemoteError.notFound }
    func devices() async throws -> [DeviceInfo] { [] }
    func revokeDevice(_ id: DeviceID, loginSecret: [UInt8]?) async throws {}
    func missingChunks(_ ids: [ChunkID]) async throws -> [ChunkID] { ids }
    func putChunk(_ chunk: SealedChunk) async throws {}
    func putChunks(_ chunks: [SealedChunk]) async throws {}
    func chunk(_ id: ChunkID) async throws -> SealedChunk { throw RemoteError.notFound }
    func append(_ entry: JournalEntry, references: [ChunkID]) async throws -> (seq: JournalSeq, head: ChainHead) { throw RemoteError.notFound }
    func entries(after: JournalSeq, limit: Int, wait: Duration) async throws -> EntryPage { throw RemoteError.notFound }
    func putCheckpoint(_ stored: [UInt8]) async throws {}
    func latestCheckpoint() async throws -> [UInt8]? { nil }
}

@Suite struct RetryingRemoteTests {
    static let keyring = try! VaultKeyring(decoding: Hex.decode(try! GoldenVectors.load(file: "wire")["keyring"]!)!)
    static let fast = RetryPolicy(attempts: 4, firstDelay: .milliseconds(1), maxDelay: .milliseconds(5))

    @Test func retriesRetryableErrorsThenSucceeds() async throws {
        let flaky = FlakyRemote(failures: 3, error: .unreachable("refused"), keyringValue: Self.keyring)
        #expect(try await RetryingRemote(wrapping: flaky, policy: Self.fast).keyring() == Self.keyring)
        #expect(flaky.calls.value == 4)
    }

    @Test func givesUpAfterTheAttemptsAndPassesOtherErrorsAtOnce() async throws {
        let down = FlakyRemote(failures: 10, error: .unavailable(status: 503, message: "down"), keyringValue: Self.keyring)
        await #expect(throws: RemoteError.unavailable(status: 503, message: "down")) {
            _ = try await RetryingRemote(wrapping: down, policy: Self.fast).keyring()
        }
        #expect(down.calls.value == 4)
        let revoked = FlakyRemote(failures: 10, error: .unauthorized, keyringValue: Self.keyring)
        await #expect(throws: RemoteError.unauthorized) { _ = try await RetryingRemote(wrapping: revoked, policy: Self.fast).keyring() }
        #expect(revoked.calls.value == 1)
    }

    @Test func backoffGrowsWithJitterAndHonoursRetryAfter() {
        let policy = RetryPolicy(attempts: 10, firstDelay: .milliseconds(100), maxDelay: .seconds(2))
        for attempt in 2...10 {
            let cap = min(Duration.seconds(2), .milliseconds(100) * (1 << (attempt - 2)))
            let d = policy.delay(beforeAttempt: attempt, retryAfter: nil)
            #expect(d <= cap && d >= cap / 2, "attempt \(attempt): \(d) not in [\(cap / 2), \(cap)]")
        }
        #expect(policy.delay(beforeAttempt: 3, retryAfter: 7) == .seconds(7))
    }
}
