import Foundation
import LockCrypto

/// Bodies of the lockfs-server HTTP API, version 1 (routes under `/v1`;
/// docs/protocol.md). Control bodies are JSON with strict decoding; chunk
/// and journal bodies are binary records with their own version byte.
public enum APIv1 {
    /// The path prefix of every route of this version.
    public static let pathPrefix = "/v1"
    /// Content type of the binary bodies.
    public static let binaryContentType = "application/vnd.lockfs.v1"
    /// Chunk ids in one existence query.
    public static let maxIDsPerQuery = 10_000
    /// Chunks in one batched upload, and their total sealed size.
    public static let maxChunksPerBatch = 1_000
    public static let maxBatchBytes = 16 << 20
    /// Entries in one pull page.
    public static let maxEntriesPerPage = 1_000
    /// Entry bytes after which a pull page ends (it holds at least one
    /// entry, so a page is at most this plus one entry); the client asks
    /// again from the last entry it got.
    public static let maxPageBytes = 8 << 20
    /// Chunk ids one journal entry may reference: more than a batch of the
    /// largest size (8 MiB, 36 bytes per chunk of a manifest) can name.
    public static let maxReferencesPerEntry = 1 << 18
    /// Concurrent long-polls of one account (its devices' pullers, `lockfs
    /// sync`) by default (`lockfs-server serve --long-polls-per-account`);
    /// more are answered 429.
    public static let maxLongPollsPerAccount = 32
    /// Response header of `GET /v1/entries`: the key generation of the
    /// account's keyring, so that devices learn a rotation at their next page.
    public static let keyringGenerationHeader = "Lockfs-Keyring-Generation"
}

// MARK: - Binary bodies

/// A list of chunk ids: an existence query ("which are missing?") and its answer.
///
///     0   1   version 0x01
///     1   4   count n (u32 BE, ≤ 10,000)
///     5   32n chunk ids
public struct ChunkIDList: WireRecord {
    public static let wireVersion: UInt8 = 1
    public static let recordName = "chunk id list"
    public let ids: [ChunkID]

    public init(ids: [ChunkID]) throws {
        guard ids.count <= APIv1.maxIDsPerQuery else {
            throw WireError.lengthOutOfRange(field: "chunk ids", length: ids.count, limit: APIv1.maxIDsPerQuery)
        }
        self.ids = ids
    }

    public func encode(to w: inout WireWriter) {
        w.u8(Self.wireVersion)
        w.u32(UInt32(ids.count))
        for id in ids { w.id(id) }
    }

    public init(from r: inout WireReader) throws {
        try r.version(Self.wireVersion)
        let n = try r.count(field: "chunk ids", limit: APIv1.maxIDsPerQuery, minimumItemSize: 32)
        var ids: [ChunkID] = []
        ids.reserveCapacity(n)
        for _ in 0..<n { ids.append(try r.id()) }
        self.ids = ids
    }
}

/// Many small chunks in one upload.
///
///     0   1   version 0x01
///     1   4   count n (u32 BE, ≤ 1,000)
///     5   …   n × (chunk id 32 ‖ length u32 BE ‖ chunk envelope)
///
/// Each envelope's framing is checked on decode; the total is bounded by
/// `APIv1.maxBatchBytes` at the server.
public struct ChunkBatch: WireRecord {
    public static let wireVersion: UInt8 = 1
    public static let recordName = "chunk batch"
    public let chunks: [SealedChunk]

    public init(chunks: [SealedChunk]) throws {
        guard chunks.count <= APIv1.maxChunksPerBatch else {
            throw WireError.lengthOutOfRange(field: "chunks", length: chunks.count, limit: APIv1.maxChunksPerBatch)
        }
        self.chunks = chunks
    }

    public func encode(to w: inout WireWriter) {
        w.u8(Self.wireVersion)
        w.u32(UInt32(chunks.count))
        for c in chunks {
            w.id(c.id)
            w.bytes32(c.bytes)
        }
    }

    public init(from r: inout WireReader) throws {
        try r.version(Self.wireVersion)
        let n = try r.count(field: "chunks", limit: APIv1.maxChunksPerBatch, minimumItemSize: 36 + Envelope.minimumSize)
        var chunks: [SealedChunk] = []
        for _ in 0..<n {
            let id: ChunkID = try r.id()
            let bytes = try r.bytes32(field: "chunk envelope", allowed: Envelope.minimumSize...EnvelopeKind.chunk.maxSealedSize)
            try bytes.withUnsafeBytes { try Envelope.validateFraming($0, kind: .chunk) }
            chunks.append(SealedChunk(id: id, bytes: bytes))
        }
        self.chunks = chunks
    }
}

/// An append request: the entry and the chunk ids it references (which the
/// server checks it has, and keeps for garbage collection).
///
///     0   1   version 0x01
///     1   4   entry length e (u32 BE)
///     5   e   JournalEntry
///     …   4   reference count n (u32 BE)
///     …   32n chunk ids
public struct AppendRequest: WireRecord {
    public static let wireVersion: UInt8 = 1
    public static let recordName = "append request"
    public let entry: JournalEntry
    public let references: [ChunkID]

    public init(entry: JournalEntry, references: [ChunkID]) {
        self.entry = entry
        self.references = references
    }

    public func encode(to w: inout WireWriter) {
        w.u8(Self.wireVersion)
        w.bytes32(entry.encoded)
        w.u32(UInt32(references.count))
        for id in references { w.id(id) }
    }

    public init(from r: inout WireReader) throws {
        try r.version(Self.wireVersion)
        let bytes = try r.bytes32(field: "entry", allowed: (JournalEntry.headerSize + Envelope.minimumSize)...(JournalEntry.signedHeaderSize + EnvelopeKind.journalEntry.maxSealedSize))
        entry = try JournalEntry(decoding: bytes)
        let n = try r.count(field: "references", limit: APIv1.maxReferencesPerEntry, minimumItemSize: 32)
        var refs: [ChunkID] = []
        refs.reserveCapacity(n)
        for _ in 0..<n { refs.append(try r.id()) }
        references = refs
    }
}

/// A page of journal entries after a cursor, as the server numbered and chained them.
///
///     0   1   version 0x01
///     1   4   count n (u32 BE, ≤ 1,000)
///     5   …   n × (seq u64 BE ‖ chain head after it 32 ‖ length u32 BE ‖ JournalEntry)
///     …   8   the vault's latest seq (u64 BE), so a reader knows if more remain
///
/// Version 0x02 (sent when the request asks for it, `format=2`) also says
/// where the page starts: the cursor asked after and the server's chain
/// head there, which the reader checks against the head it verified at
/// that seq (a server that shows it another history of the same length, or
/// will not say, is caught at every poll):
///
///     0   1   version 0x02
///     1   8   after: the seq the page was asked after (u64 BE)
///     9   32  the chain head at `after` (the vault's genesis head at 0)
///     41  4   count n
///     45  …   items as in version 1
///     …   8   latest seq
public struct EntryPage: WireRecord {
    public static let wireVersion: UInt8 = 2
    public static let readableVersions: ClosedRange<UInt8> = 1...2
    public static let recordName = "entry page"
    /// The value of the `format` query parameter that asks for version 2.
    public static let formatQuery = "2"

    public struct Item: Equatable, Sendable {
        public let seq: JournalSeq
        public let head: ChainHead
        public let entry: JournalEntry
        public init(seq: JournalSeq, head: ChainHead, entry: JournalEntry) {
            self.seq = seq
            self.head = head
            self.entry = entry
        }
    }

    /// Where a version 2 page starts: the seq asked after, and the head there.
    public struct Start: Equatable, Sendable {
        public let after: JournalSeq
        public let head: ChainHead
        public init(after: JournalSeq, head: ChainHead) {
            self.after = after
            self.head = head
        }
    }

    /// nil for a version 1 page.
    public let start: Start?
    public let items: [Item]
    public let latest: JournalSeq
    /// The keyring's key generation, from the response header
    /// (`APIv1.keyringGenerationHeader`; not part of the record). Nil from a
    /// server that does not send it.
    public var keyringGeneration: UInt32?

    public init(start: Start? = nil, items: [Item], latest: JournalSeq) throws {
        guard items.count <= APIv1.maxEntriesPerPage else {
            throw WireError.lengthOutOfRange(field: "entries", length: items.count, limit: APIv1.maxEntriesPerPage)
        }
        if let start, let first = items.first, first.seq <= start.after {
            throw WireError.invalidValue(field: "entries", reason: "a page holds entries after its start only")
        }
        self.start = start
        self.items = items
        self.latest = latest
    }

    public func encode(to w: inout WireWriter) {
        w.u8(start == nil ? 1 : 2)
        if let start {
            w.u64(start.after.rawValue)
            w.id(start.head)
        }
        w.u32(UInt32(items.count))
        for item in items {
            w.u64(item.seq.rawValue)
            w.id(item.head)
            w.bytes32(item.entry.encoded)
        }
        w.u64(latest.rawValue)
    }

    public init(from r: inout WireReader) throws {
        let version = try r.version(in: Self.readableVersions)
        let start = version >= 2 ? Start(after: JournalSeq(try r.u64()), head: try r.id()) : nil
        let n = try r.count(field: "entries", limit: APIv1.maxEntriesPerPage, minimumItemSize: 44 + JournalEntry.headerSize)
        var items: [Item] = []
        for _ in 0..<n {
            let seq = JournalSeq(try r.u64())
            let head: ChainHead = try r.id()
            let bytes = try r.bytes32(field: "entry", allowed: (JournalEntry.headerSize + Envelope.minimumSize)...(JournalEntry.signedHeaderSize + EnvelopeKind.journalEntry.maxSealedSize))
            items.append(Item(seq: seq, head: head, entry: try JournalEntry(decoding: bytes)))
        }
        try self.init(start: start, items: items, latest: JournalSeq(try r.u64()))
    }
}

// MARK: - JSON bodies

/// A JSON body of the control API. Decoding is strict: unknown keys, wrong
/// types and missing keys are errors (JSONDecoder alone ignores unknown keys).
public protocol JSONBody: Codable, Sendable, Equatable {
    associatedtype Keys: CodingKey & CaseIterable
}

extension JSONBody {
    /// Compact JSON with sorted keys (stable bytes, for golden vectors).
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    /// Decodes `data`, refusing keys the type does not define.
    /// - Throws: `WireError.invalidValue` for unknown keys or malformed JSON.
    public static func decodeStrictly(_ data: Data) throws -> Self {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw WireError.invalidValue(field: "body", reason: "not a JSON object")
        }
        let known = Set(Keys.allCases.map(\.stringValue))
        if let unknown = object.keys.filter({ !known.contains($0) }).sorted().first {
            throw WireError.invalidValue(field: "body", reason: "unknown key “\(unknown)”")
        }
        do {
            return try JSONDecoder().decode(Self.self, from: data)
        } catch {
            throw WireError.invalidValue(field: "body", reason: "\(error)")
        }
    }
}

/// `GET /v1/accounts/NAME/prelogin`: what a client needs before it can derive its keys.
public struct PreLoginResponse: JSONBody {
    /// The 29-byte KDF parameters, hex.
    public let kdf: String
    public init(kdf: KDFParameters) { self.kdf = Hex.encode(kdf.encoded) }
    /// - Throws: `WireError` / `CryptoError` for malformed or unacceptable parameters.
    public func parameters() throws -> KDFParameters {
        guard let bytes = Hex.decode(kdf) else { throw WireError.invalidValue(field: "kdf", reason: "not hex") }
        return try KDFParameters(encoded: bytes)
    }
    public enum Keys: String, CodingKey, CaseIterable { case kdf }
    typealias CodingKeys = Keys
}

/// `POST /v1/register`: create an account (with an invite) and its vault.
public struct RegisterRequest: JSONBody {
    public let user: String
    public let invite: String?
    /// The login secret, base64 (the server stores only a slow hash of it).
    public let loginSecret: String
    /// The encoded Keyring, base64.
    public let keyring: String
    public let deviceName: String
    /// The recovery proof, base64 (`RecoveryKey.proof`; the server stores a
    /// hash of it, so that the recovery key works without a device). Required
    /// since lockfs 0.2; optional in the type so that an older client gets
    /// a clear "upgrade lockfs" answer instead of a parse error.
    public let recoveryProof: String?
    /// The new device's public keys (`DeviceKeysBody`), base64; nil from
    /// clients older than 0.2 (such a device signs nothing until its first
    /// signed entry registers its key).
    public let signingKey: String?
    public let boxKey: String?
    /// The box key signed by the signing key (`DeviceIdentity.boxKeySignature`), base64.
    public let boxKeySignature: String?

    public init(user: String, invite: String?, loginSecret: [UInt8], keyring: some WireRecord, deviceName: String, recoveryProof: [UInt8],
                device: DevicePublicKeys? = nil) {
        self.user = user
        self.invite = invite
        self.loginSecret = Data(loginSecret).base64EncodedString()
        self.keyring = Data(keyring.encoded).base64EncodedString()
        self.deviceName = deviceName
        self.recoveryProof = Data(recoveryProof).base64EncodedString()
        signingKey = device.map { Data($0.signing).base64EncodedString() }
        boxKey = device.map { Data($0.box).base64EncodedString() }
        boxKeySignature = device?.boxSignature.map { Data($0).base64EncodedString() }
    }
    public enum Keys: String, CodingKey, CaseIterable { case user, invite, loginSecret, keyring, deviceName, recoveryProof, signingKey, boxKey, boxKeySignature }
    typealias CodingKeys = Keys
}

/// `POST /v1/login`: enrol a device.
public struct LoginRequest: JSONBody {
    public let user: String
    public let loginSecret: String
    public let deviceName: String
    public let signingKey: String?
    public let boxKey: String?
    /// The box key signed by the signing key (`DeviceIdentity.boxKeySignature`), base64.
    public let boxKeySignature: String?
    public init(user: String, loginSecret: [UInt8], deviceName: String, device: DevicePublicKeys? = nil) {
        self.user = user
        self.loginSecret = Data(loginSecret).base64EncodedString()
        self.deviceName = deviceName
        signingKey = device.map { Data($0.signing).base64EncodedString() }
        boxKey = device.map { Data($0.box).base64EncodedString() }
        boxKeySignature = device?.boxSignature.map { Data($0).base64EncodedString() }
    }
    public enum Keys: String, CodingKey, CaseIterable { case user, loginSecret, deviceName, signingKey, boxKey, boxKeySignature }
    typealias CodingKeys = Keys
}

/// A device's public keys as enrolment sends them: Ed25519 and X25519, 32 bytes each.
public struct DevicePublicKeys: Sendable, Equatable {
    public let signing: [UInt8]
    public let box: [UInt8]
    /// `box` signed by `signing` (64 bytes); nil from a client that predates
    /// key generations (such a device gets no seal at a rotation).
    public let boxSignature: [UInt8]?
    public init(signing: [UInt8], box: [UInt8], boxSignature: [UInt8]? = nil) {
        self.signing = signing
        self.box = box
        self.boxSignature = boxSignature
    }
    public init(_ identity: DeviceIdentity) {
        self.init(signing: identity.signingPublicKey, box: identity.boxPublicKey, boxSignature: identity.boxKeySignature())
    }

    /// The keys of an enrolment body: both or neither, 32 bytes each, and
    /// the box key's signature if given (it must verify).
    /// - Throws: `WireError.invalidValue` otherwise.
    public static func decode(signing: String?, box: String?, boxSignature: String? = nil) throws -> DevicePublicKeys? {
        switch (signing, box) {
        case (nil, nil): return nil
        case (let s?, let b?):
            guard let sb = Data(base64Encoded: s).map(Array.init), sb.count == 32,
                  let bb = Data(base64Encoded: b).map(Array.init), bb.count == 32 else {
                throw WireError.invalidValue(field: "signingKey/boxKey", reason: "each must be 32 bytes, base64")
            }
            guard let text = boxSignature else { return DevicePublicKeys(signing: sb, box: bb) }
            guard let sig = Data(base64Encoded: text).map(Array.init),
                  DeviceIdentity.verifyBoxKey(bb, signature: sig, signingKey: sb) else {
                throw WireError.invalidValue(field: "boxKeySignature", reason: "must be the signing key's signature of the box key, base64")
            }
            return DevicePublicKeys(signing: sb, box: bb, boxSignature: sig)
        default:
            throw WireError.invalidValue(field: "signingKey/boxKey", reason: "give both or neither")
        }
    }
}

/// `POST /v1/recover`: enrol a device with the recovery key instead of the
/// password (a machine that was never enrolled). The device it makes can do
/// one useful thing: replace the keyring with the same proof.
public struct RecoverRequest: JSONBody {
    public let user: String
    /// The recovery proof, base64.
    public let recoveryProof: String
    public let deviceName: String
    public let signingKey: String?
    public let boxKey: String?
    /// The box key signed by the signing key (`DeviceIdentity.boxKeySignature`), base64.
    public let boxKeySignature: String?
    public init(user: String, recoveryProof: [UInt8], deviceName: String, device: DevicePublicKeys? = nil) {
        self.user = user
        self.recoveryProof = Data(recoveryProof).base64EncodedString()
        self.deviceName = deviceName
        signingKey = device.map { Data($0.signing).base64EncodedString() }
        boxKey = device.map { Data($0.box).base64EncodedString() }
        boxKeySignature = device?.boxSignature.map { Data($0).base64EncodedString() }
    }
    public enum Keys: String, CodingKey, CaseIterable { case user, recoveryProof, deviceName, signingKey, boxKey, boxKeySignature }
    typealias CodingKeys = Keys
}

/// The answer to register and login: a bearer token for this device.
public struct LoginResponse: JSONBody {
    /// Random 256-bit token, base64url; the server keeps only its hash.
    public let token: String
    /// The device's id, hex.
    public let device: String
    /// The vault's id, hex.
    public let vault: String
    public init(token: String, device: DeviceID, vault: VaultID) {
        self.token = token
        self.device = device.hex
        self.vault = vault.hex
    }
    public enum Keys: String, CodingKey, CaseIterable { case token, device, vault }
    typealias CodingKeys = Keys
}

/// The answer to an append: the sequence number and chain head the server assigned.
public struct AppendResponse: JSONBody {
    public let seq: UInt64
    /// Chain head after the entry, hex.
    public let head: String
    public init(seq: JournalSeq, head: ChainHead) {
        self.seq = seq.rawValue
        self.head = head.hex
    }
    public enum Keys: String, CodingKey, CaseIterable { case seq, head }
    typealias CodingKeys = Keys
}

/// Every error response: a stable machine code and a sentence for people.
public struct ErrorBody: JSONBody {
    public let error: String
    public let message: String
    /// For `missing_chunks`: the ids the server does not have, hex.
    public let missing: [String]?
    public init(error: String, message: String, missing: [ChunkID]? = nil) {
        self.error = error
        self.message = message
        self.missing = missing?.map(\.hex)
    }
    public enum Keys: String, CodingKey, CaseIterable { case error, message, missing }
    typealias CodingKeys = Keys
}

/// What proves, beyond a device token, that the owner asks (docs/security.md,
/// "What a stolen token can do").
public enum OwnerProof: Sendable, Equatable {
    /// The current login secret (derived from the current password).
    case password([UInt8])
    /// The recovery proof (derived from the recovery key).
    case recovery([UInt8])
}

/// `PUT /v1/keyring`: a password change or a recovery — the rewrapped
/// keyring, the new login secret, and a proof: the current login secret or
/// the recovery proof (a recovery also signs out every other device).
/// `setRecoveryProof` registers a recovery proof for an account made before
/// the server kept one.
public struct KeyringReplaceRequest: JSONBody {
    public let keyring: String
    public let loginSecret: String
    public let currentLoginSecret: String?
    public let recoveryProof: String?
    public let setRecoveryProof: String?
    public init(keyring: some WireRecord, loginSecret: [UInt8], proof: OwnerProof, setRecoveryProof: [UInt8]? = nil) {
        self.keyring = Data(keyring.encoded).base64EncodedString()
        self.loginSecret = Data(loginSecret).base64EncodedString()
        switch proof {
        case .password(let s): currentLoginSecret = Data(s).base64EncodedString(); recoveryProof = nil
        case .recovery(let s): recoveryProof = Data(s).base64EncodedString(); currentLoginSecret = nil
        }
        self.setRecoveryProof = setRecoveryProof.map { Data($0).base64EncodedString() }
    }
    public enum Keys: String, CodingKey, CaseIterable { case keyring, loginSecret, currentLoginSecret, recoveryProof, setRecoveryProof }
    typealias CodingKeys = Keys
}

/// `POST /v1/devices/ID/revoke`: revoke another device, with a fresh
/// password proof (the current login secret).
public struct RevokeDeviceRequest: JSONBody {
    public let loginSecret: String
    public init(loginSecret: [UInt8]) { self.loginSecret = Data(loginSecret).base64EncodedString() }
    public enum Keys: String, CodingKey, CaseIterable { case loginSecret }
    typealias CodingKeys = Keys
}

/// One enrolled device, as `GET /v1/devices` lists it.
public struct DeviceInfo: JSONBody {
    public let id: String
    public let name: String
    /// Seconds since the epoch.
    public let createdAt: Double
    public let lastSeenAt: Double?
    /// True for the device that asked.
    public let current: Bool
    /// Its public keys as registered, base64 (nil for devices enrolled
    /// before they were kept). Not trusted: a rotating client wraps a new
    /// key generation only to a box key signed by the signing key the
    /// journal bound to this device.
    public let signingKey: String?
    public let boxKey: String?
    public let boxKeySignature: String?
    public init(id: String, name: String, createdAt: Double, lastSeenAt: Double?, current: Bool,
                keys: DevicePublicKeys? = nil) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.lastSeenAt = lastSeenAt
        self.current = current
        signingKey = keys.map { Data($0.signing).base64EncodedString() }
        boxKey = keys.map { Data($0.box).base64EncodedString() }
        boxKeySignature = keys?.boxSignature.map { Data($0).base64EncodedString() }
    }
    /// The device's keys if all three are present and the signature verifies.
    public var verifiedKeys: DevicePublicKeys? {
        guard let keys = try? DevicePublicKeys.decode(signing: signingKey, box: boxKey, boxSignature: boxKeySignature),
              keys.boxSignature != nil else { return nil }
        return keys
    }
    public enum Keys: String, CodingKey, CaseIterable { case id, name, createdAt, lastSeenAt, current, signingKey, boxKey, boxKeySignature }
    typealias CodingKeys = Keys
}

/// `GET /v1/devices`.
public struct DeviceList: JSONBody {
    public let devices: [DeviceInfo]
    public init(devices: [DeviceInfo]) { self.devices = devices }
    public enum Keys: String, CodingKey, CaseIterable { case devices }
    typealias CodingKeys = Keys
}

/// `GET /v1/account`: the caller's account, usage and quota.
public struct AccountInfo: JSONBody {
    public let user: String
    public let vault: String
    public let storedBytes: Int64
    public let quota: Int64?
    /// Whether the server can check the recovery key (false for accounts
    /// made before lockfs 0.2 until `lockfs passwd` registers it).
    public let recoveryKeyRegistered: Bool?
    public init(user: String, vault: String, storedBytes: Int64, quota: Int64?, recoveryKeyRegistered: Bool) {
        self.user = user
        self.vault = vault
        self.storedBytes = storedBytes
        self.quota = quota
        self.recoveryKeyRegistered = recoveryKeyRegistered
    }
    public enum Keys: String, CodingKey, CaseIterable { case user, vault, storedBytes, quota, recoveryKeyRegistered }
    typealias CodingKeys = Keys
}
