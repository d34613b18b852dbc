import Foundation
import LockCrypto
import LockWire

/// An account's row id in the metadata store.
public struct AccountID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int64
    public init(_ rawValue: Int64) { self.rawValue = rawValue }
    public var description: String { String(rawValue) }
}

/// An account and its vault (one vault per account).
public struct Account: Sendable, Equatable {
    public let id: AccountID
    public let name: String
    public let vaultID: VaultID
    /// The encoded KDF parameters (29 bytes), served at pre-login.
    public let kdf: [UInt8]
    /// The encoded Keyring record.
    public let keyring: [UInt8]
    /// Salt and keyed BLAKE2b-256 of the login secret (docs/security.md, "Login").
    public let loginSalt: [UInt8]
    public let loginHash: [UInt8]
    /// Bytes of sealed chunks stored, and the limit (nil: the server's default).
    public let storedBytes: Int64
    public let quota: Int64?
    /// Salt ‖ keyed hash of the recovery proof (docs/security.md, "Recovery
    /// key"); nil for accounts made before the server checked recovery keys.
    public let recoveryVerifier: [UInt8]?

    public init(id: AccountID, name: String, vaultID: VaultID, kdf: [UInt8], keyring: [UInt8], loginSalt: [UInt8],
                loginHash: [UInt8], storedBytes: Int64, quota: Int64?, recoveryVerifier: [UInt8]? = nil) {
        self.id = id
        self.name = name
        self.vaultID = vaultID
        self.kdf = kdf
        self.keyring = keyring
        self.loginSalt = loginSalt
        self.loginHash = loginHash
        self.storedBytes = storedBytes
        self.quota = quota
        self.recoveryVerifier = recoveryVerifier
    }
}

/// What `lockfs-server user list` shows.
public struct AccountSummary: Sendable, Equatable {
    public let name: String
    public let devices: Int
    public let storedBytes: Int64
    public let entries: Int64

    public init(name: String, devices: Int, storedBytes: Int64, entries: Int64) {
        self.name = name
        self.devices = devices
        self.storedBytes = storedBytes
        self.entries = entries
    }
}

/// A pending invitation to register NAME.
public struct NewInvite: Sendable {
    public let user: String
    public let codeHash: [UInt8]
    public let expiresAt: Date
    public init(user: String, codeHash: [UInt8], expiresAt: Date) {
        self.user = user
        self.codeHash = codeHash
        self.expiresAt = expiresAt
    }
}

/// A new account, as registration creates it.
public struct NewAccount: Sendable {
    public let name: String
    public let vaultID: VaultID
    public let kdf: [UInt8]
    public let keyring: [UInt8]
    public let loginSalt: [UInt8]
    public let loginHash: [UInt8]
    public let recoveryVerifier: [UInt8]?
    public init(name: String, vaultID: VaultID, kdf: [UInt8], keyring: [UInt8], loginSalt: [UInt8], loginHash: [UInt8],
                recoveryVerifier: [UInt8]? = nil) {
        self.name = name
        self.vaultID = vaultID
        self.kdf = kdf
        self.keyring = keyring
        self.loginSalt = loginSalt
        self.loginHash = loginHash
        self.recoveryVerifier = recoveryVerifier
    }
}

/// A new keyring and login secret (a password change or a recovery).
public struct KeyringChange: Sendable {
    public let keyring: [UInt8]
    public let kdf: [UInt8]
    public let loginSalt: [UInt8]
    public let loginHash: [UInt8]
    /// A new recovery verifier; nil keeps the account's.
    public let recoveryVerifier: [UInt8]?
    /// Revoke every other device of the account than this one, in the same
    /// transaction (a recovery signs the others out).
    public let revokeAllBut: DeviceID?
    /// Apply only if the login hash is still this one (the proof was checked
    /// against it): two changes cannot both win. nil: unconditionally.
    public let expectedLoginHash: [UInt8]?

    public init(keyring: [UInt8], kdf: [UInt8], loginSalt: [UInt8], loginHash: [UInt8],
                recoveryVerifier: [UInt8]? = nil, revokeAllBut: DeviceID? = nil, expectedLoginHash: [UInt8]? = nil) {
        self.keyring = keyring
        self.kdf = kdf
        self.loginSalt = loginSalt
        self.loginHash = loginHash
        self.recoveryVerifier = recoveryVerifier
        self.revokeAllBut = revokeAllBut
        self.expectedLoginHash = expectedLoginHash
    }
}

/// An enrolled device.
public struct DeviceRecord: Sendable, Equatable {
    public let id: DeviceID
    public let account: AccountID
    public let name: String
    public let createdAt: Date
    public let lastSeenAt: Date?
    /// The Ed25519 key its journal entries must be signed with; nil for a
    /// device enrolled before lockfs 0.2 that has not signed an entry yet.
    public let signingKey: [UInt8]?
    /// Its X25519 key (key generations); nil as for `signingKey`.
    public let boxKey: [UInt8]?
    /// `boxKey` signed by `signingKey` ("lockfs box key v1"): a rotating
    /// client wraps a new generation only to box keys it can verify. Nil for
    /// devices enrolled before it was kept.
    public let boxKeySignature: [UInt8]?

    public init(id: DeviceID, account: AccountID, name: String, createdAt: Date, lastSeenAt: Date?,
                signingKey: [UInt8]? = nil, boxKey: [UInt8]? = nil, boxKeySignature: [UInt8]? = nil) {
        self.boxKeySignature = boxKeySignature
        self.id = id
        self.account = account
        self.name = name
        self.createdAt = createdAt
        self.lastSeenAt = lastSeenAt
        self.signingKey = signingKey
        self.boxKey = boxKey
    }
}

/// A device to enrol, with the hash of its bearer token.
public struct NewDevice: Sendable {
    public let id: DeviceID
    public let name: String
    public let tokenHash: [UInt8]
    public let signingKey: [UInt8]?
    public let boxKey: [UInt8]?
    public let boxKeySignature: [UInt8]?
    public init(id: DeviceID, name: String, tokenHash: [UInt8], signingKey: [UInt8]? = nil, boxKey: [UInt8]? = nil,
                boxKeySignature: [UInt8]? = nil) {
        self.boxKeySignature = boxKeySignature
        self.id = id
        self.name = name
        self.tokenHash = tokenHash
        self.signingKey = signingKey
        self.boxKey = boxKey
    }
}

/// A journal entry as stored: its number, the chain head after it, its bytes.
public struct StoredEntry: Sendable, Equatable {
    public let seq: JournalSeq
    public let head: ChainHead
    public let bytes: [UInt8]

    public init(seq: JournalSeq, head: ChainHead, bytes: [UInt8]) {
        self.seq = seq
        self.head = head
        self.bytes = bytes
    }
}

/// The server's metadata: accounts, devices, which chunks each account
/// has, the journal and checkpoints.
///
/// `SQLiteMetadataStore` is the embedded default; `PostgresMetadataStore`
/// (module LockServerPostgres) is for several instances on one database. One conformance suite runs on every implementation. Every
/// method is scoped to one account: nothing here lets one account reach
/// another's data.
public protocol MetadataStore: Sendable {
    /// A random 32-byte secret of this deployment, made on first use
    /// (it keys the fake pre-login answers for unknown names).
    func serverSecret() async throws -> [UInt8]
    /// Bytes of chunk envelopes stored, all accounts together (a metric).
    func totalStoredBytes() async throws -> Int64

    // Accounts and invites
    /// Creates or replaces the invite for `user`.
    /// - Throws: `ServerError.conflict("user_exists")` if the account exists.
    func createInvite(_ invite: NewInvite) async throws
    /// Creates the account and its first device in one transaction,
    /// consuming the invite whose hash is `inviteHash` (nil: open registration).
    /// - Throws: `ServerError.forbidden` for a missing, wrong or expired invite,
    ///   `.conflict("user_exists")`.
    func register(_ account: NewAccount, inviteHash: [UInt8]?, device: NewDevice, now: Date) async throws -> Account
    func account(named name: String) async throws -> Account?
    func accounts() async throws -> [AccountSummary]
    /// Removes the account and everything of it; returns its vault id (to delete blobs), nil if none.
    func removeAccount(named name: String) async throws -> VaultID?
    /// Replaces the keyring, KDF parameters and login hash together (a
    /// password change), and the recovery verifier if the change has one;
    /// revokes the other devices in the same transaction if it says so.
    /// - Throws: `ServerError.conflict("keyring_changed")` when
    ///   `expectedLoginHash` is no longer the account's (nothing is changed).
    func replaceKeyring(account: AccountID, _ change: KeyringChange, now: Date) async throws

    // Devices
    /// Enrols a device; with `ifLoginHash`, only if the account's login hash is
    /// still that one, checked in the same transaction (a login whose password
    /// was replaced meanwhile by a recovery must not add a device after the
    /// recovery signed every other device out).
    /// - Throws: `ServerError.forbidden` when the login hash changed.
    func addDevice(_ device: NewDevice, account: AccountID, now: Date, ifLoginHash: [UInt8]?) async throws
    /// The device whose token hashes to `tokenHash`, with its account; nil if none or revoked.
    func device(tokenHash: [UInt8], now: Date) async throws -> (Account, DeviceRecord)?
    func devices(account: AccountID) async throws -> [DeviceRecord]
    /// Revokes a device of `account`; false if the account has no such device.
    func revokeDevice(account: AccountID, id: DeviceID) async throws -> Bool
    /// Registers `key` as the device's signing key if it has none (a device
    /// enrolled before lockfs 0.2, at its first signed entry); returns the
    /// key registered now (the given one, or the one it had).
    func bindSigningKey(account: AccountID, device: DeviceID, key: [UInt8]) async throws -> [UInt8]?

    // Chunks
    /// The ids among `ids` that `account` does not have, in the order given.
    func missingChunks(account: AccountID, ids: [ChunkID]) async throws -> [ChunkID]
    /// Records chunks as stored for `account` (idempotent) and adds their sizes to its usage.
    func recordChunks(account: AccountID, _ chunks: [(id: ChunkID, size: Int)]) async throws

    // Journal
    /// Appends an entry: checks its base position against the chain and that
    /// every referenced chunk is present, assigns the next sequence number
    /// and chain head, and records the references — all in one transaction.
    /// - Throws: `ServerError.missingChunks(ids)`, `.conflict("bad_base")`.
    func append(account: AccountID, vault: VaultID, entry: JournalEntry, bytes: [UInt8],
                references: [ChunkID], device: DeviceID, now: Date) async throws -> StoredEntry
    /// Entries after `after`, at most `limit`, ending once they hold
    /// `maxBytes` bytes (at least one entry), and the latest sequence number.
    func entries(account: AccountID, after: JournalSeq, limit: Int, maxBytes: Int) async throws -> (items: [StoredEntry], latest: JournalSeq)
    /// The chain head after entry `seq` (the vault's genesis head at 0); nil
    /// when the journal has no such entry.
    func head(account: AccountID, vault: VaultID, at seq: JournalSeq) async throws -> ChainHead?

    // Checkpoints
    /// Stores a checkpoint for `seq`, whose head must be the chain's head at `seq`.
    /// - Throws: `ServerError.conflict("bad_checkpoint")`.
    func putCheckpoint(account: AccountID, vault: VaultID, seq: JournalSeq, head: ChainHead, bytes: [UInt8]) async throws
    /// The checkpoint with the highest seq, if any.
    func latestCheckpoint(account: AccountID) async throws -> [UInt8]?
}

extension MetadataStore {
    /// Entries after `after`, at most `limit` (no byte cap).
    public func entries(account: AccountID, after: JournalSeq, limit: Int) async throws -> (items: [StoredEntry], latest: JournalSeq) {
        try await entries(account: account, after: after, limit: limit, maxBytes: .max)
    }

    /// Enrols a device unconditionally.
    public func addDevice(_ device: NewDevice, account: AccountID, now: Date) async throws {
        try await addDevice(device, account: account, now: now, ifLoginHash: nil)
    }

    /// A password change: keyring, parameters and login hash only.
    public func replaceKeyring(account: AccountID, keyring: [UInt8], kdf: [UInt8], loginSalt: [UInt8], loginHash: [UInt8]) async throws {
        try await replaceKeyring(account: account, KeyringChange(keyring: keyring, kdf: kdf, loginSalt: loginSalt, loginHash: loginHash),
                                 now: Date())
    }
}

/// A metadata store that several server processes share can tell each of
/// them about appends made by the others, so long-polls on every instance
/// wake (docs/design.md, "Server").
///
/// A store adopts this optionally; `ServerAPI.application` runs it as a
/// service beside the HTTP server. Routes stay store-agnostic: they notify
/// the in-process `JournalNotifier` for their own appends as always.
public protocol JournalEventSource: Sendable {
    /// Feeds appends into `notifier` until cancelled or shut down
    /// gracefully: `notify(account)` for each append on the shared storage
    /// (from any process), and `notifyAll()` whenever events may have been
    /// missed (at start and after each reconnect), so that no waiter sleeps
    /// through an append. Reconnects on its own; returns only when stopped.
    func runJournalEvents(into notifier: JournalNotifier) async
}
