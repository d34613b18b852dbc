import LockCrypto
import LockWire

/// A logged-in device: its bearer token and ids.
public struct Session: Sendable, Equatable {
    public let token: String
    public let device: DeviceID
    public let vault: VaultID
    public init(token: String, device: DeviceID, vault: VaultID) {
        self.token = token
        self.device = device
        self.vault = vault
    }
}

/// Why the server did not do what was asked.
public enum RemoteError: Error, Sendable, Equatable {
    /// No answer: connection refused, timeout, TLS failure. Retry later.
    case unreachable(String)
    /// The server answered 5xx. Retry later.
    case unavailable(status: Int, message: String)
    /// Too many attempts; retry after that many seconds.
    case rateLimited(retryAfter: Int)
    /// The device token is missing, unknown or revoked: log in again.
    case unauthorized
    /// Wrong user name or password; or a missing, wrong or used invite.
    case forbidden(String)
    /// No such chunk, device or checkpoint.
    case notFound
    /// The append references chunks the server lacks.
    case missingChunks([ChunkID])
    /// A conflict with the server's state: `bad_base`, `user_exists`, `bad_checkpoint`.
    case conflict(code: String, message: String)
    /// The account's quota is full.
    case quotaExceeded(String)
    /// Any other refusal (a bug on one side, or input the server will never accept).
    case rejected(status: Int, code: String, message: String)
    /// The answer was not what the protocol says (a broken or hostile server).
    case malformedResponse(String)

    /// Whether trying the same request again later can succeed.
    public var isRetryable: Bool {
        switch self {
        case .unreachable, .unavailable, .rateLimited: true
        default: false
        }
    }
}

/// The server: its account side and its vault side. `HTTPRemote` talks to
/// lockfs-server; an in-memory fake serves the engine's tests. Every method
/// throws `RemoteError`. Nothing a Remote returns is trusted: callers verify
/// chunk envelopes and ids, the journal's chain and the keyring themselves.
public typealias Remote = AccountRemote & VaultRemote

/// The account side of the server: enrolment, the keyring, devices
/// (`VaultAccount` and the engine's key generations use it).
public protocol AccountRemote: Sendable {
    /// The account's KDF parameters (unknown names get plausible fakes).
    func preLogin(user: String) async throws -> KDFParameters
    /// Creates the account and vault; returns this device's session.
    func register(_ request: RegisterRequest) async throws -> Session
    /// Enrols a device.
    func login(_ request: LoginRequest) async throws -> Session
    /// Enrols a device with the recovery proof instead of the password.
    func recover(_ request: RecoverRequest) async throws -> Session

    func keyring() async throws -> VaultKeyring
    /// Replaces the keyring and login secret together (a password change or
    /// a recovery), with the owner's proof.
    func replaceKeyring(_ request: KeyringReplaceRequest) async throws
    func devices() async throws -> [DeviceInfo]
    /// Revokes a device: this one itself with no proof (logout), another
    /// with the current login secret.
    func revokeDevice(_ id: DeviceID, loginSecret: [UInt8]?) async throws
}

/// The vault side of the server: chunks, the journal, checkpoints (the
/// engine's puller, uploader and reader use it).
public protocol VaultRemote: Sendable {
    /// The ids among `ids` the server does not have (≤ 10,000 per call).
    func missingChunks(_ ids: [ChunkID]) async throws -> [ChunkID]
    /// Stores one chunk; storing one the server has succeeds.
    func putChunk(_ chunk: SealedChunk) async throws
    /// Stores many small chunks in one request (≤ 1,000 and 16 MiB).
    func putChunks(_ chunks: [SealedChunk]) async throws
    /// The chunk's envelope as the server has it. - Throws: `.notFound`.
    func chunk(_ id: ChunkID) async throws -> SealedChunk

    /// Appends an entry; returns the sequence number and chain head the server assigned.
    /// - Throws: `.missingChunks`, `.conflict("bad_base")`.
    func append(_ entry: JournalEntry, references: [ChunkID]) async throws -> (seq: JournalSeq, head: ChainHead)
    /// Entries after `after`, waiting up to `wait` for one if there are none.
    func entries(after: JournalSeq, limit: Int, wait: Duration) async throws -> EntryPage

    func putCheckpoint(_ stored: [UInt8]) async throws
    /// The latest checkpoint, or nil.
    func latestCheckpoint() async throws -> [UInt8]?
}
