import LockCrypto
import LockWire

/// How a `RetryingRemote` waits between attempts.
public struct RetryPolicy: Sendable {
    /// Attempts per call, the first included.
    public var attempts: Int
    public var firstDelay: Duration
    /// The longest wait between two attempts (`Backoff.cap`).
    public var maxDelay: Duration

    public init(attempts: Int = 5, firstDelay: Duration = Backoff.reconnect.first, maxDelay: Duration = Backoff.reconnect.cap) {
        self.attempts = attempts
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
    }

    /// The delay before attempt `n` (1-based, n ≥ 2): the server's
    /// `Retry-After` if it sent one, else `Backoff` (exponential with jitter,
    /// so many clients coming back after an outage do not retry in step).
    func delay(beforeAttempt n: Int, retryAfter: Int?) -> Duration {
        if let retryAfter { return .seconds(retryAfter) }
        return Backoff(first: firstDelay, cap: maxDelay).delay(afterFailures: n - 1)
    }
}

/// Retries the retryable failures of another Remote (network errors, 5xx,
/// 429) with backoff; anything else is passed through at once.
///
/// Every Remote operation is idempotent or safe to repeat: chunk uploads are
/// idempotent by id, and a repeated append whose first attempt did land is
/// refused with `bad_base` (its base is no longer the head), which the
/// engine resolves by pulling first.
public struct RetryingRemote: Remote {
    public let base: any Remote
    public let policy: RetryPolicy

    public init(wrapping base: any Remote, policy: RetryPolicy = .init()) {
        self.base = base
        self.policy = policy
    }

    func retrying<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await body()
            } catch let error as RemoteError where error.isRetryable && attempt < policy.attempts {
                attempt += 1
                var retryAfter: Int? = nil
                if case .rateLimited(let s) = error { retryAfter = s }
                try await Task.sleep(for: policy.delay(beforeAttempt: attempt, retryAfter: retryAfter))
            }
        }
    }

    public func preLogin(user: String) async throws -> KDFParameters { try await retrying { try await base.preLogin(user: user) } }
    public func register(_ request: RegisterRequest) async throws -> Session { try await retrying { try await base.register(request) } }
    public func login(_ request: LoginRequest) async throws -> Session { try await retrying { try await base.login(request) } }
    public func keyring() async throws -> VaultKeyring { try await retrying { try await base.keyring() } }
    public func recover(_ request: RecoverRequest) async throws -> Session { try await retrying { try await base.recover(request) } }
    /// Not retried: a change that committed but whose answer was lost would
    /// be refused on retry (its proof is the old password's), and reported
    /// as a failure though it took effect.
    public func replaceKeyring(_ request: KeyringReplaceRequest) async throws { try await base.replaceKeyring(request) }
    public func devices() async throws -> [DeviceInfo] { try await retrying { try await base.devices() } }
    public func revokeDevice(_ id: DeviceID, loginSecret: [UInt8]?) async throws {
        try await retrying { try await base.revokeDevice(id, loginSecret: loginSecret) }
    }
    public func missingChunks(_ ids: [ChunkID]) async throws -> [ChunkID] { try await retrying { try await base.missingChunks(ids) } }
    public func putChunk(_ chunk: SealedChunk) async throws { try await retrying { try await base.putChunk(chunk) } }
    public func putChunks(_ chunks: [SealedChunk]) async throws { try await retrying { try await base.putChunks(chunks) } }
    public func chunk(_ id: ChunkID) async throws -> SealedChunk { try await retrying { try await base.chunk(id) } }
    public func append(_ entry: JournalEntry, references: [ChunkID]) async throws -> (seq: JournalSeq, head: ChainHead) {
        try await retrying { try await base.append(entry, references: references) }
    }
    public func entries(after: JournalSeq, limit: Int, wait: Duration) async throws -> EntryPage {
        try await retrying { try await base.entries(after: after, limit: limit, wait: wait) }
    }
    public func putCheckpoint(_ stored: [UInt8]) async throws { try await retrying { try await base.putCheckpoint(stored) } }
    public func latestCheckpoint() async throws -> [UInt8]? { try await retrying { try await base.latestCheckpoint() } }
}
