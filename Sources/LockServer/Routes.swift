import Foundation
import Hummingbird
import LockCrypto
import LockWire
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Settings of one server instance.
public struct ServerSettings: Sendable {
    /// Let anyone register without an invite (demos only).
    public var openRegistration = false
    /// Quota per account in bytes of stored envelopes; nil for none.
    public var defaultQuota: Int64? = nil
    /// The longest a journal long-poll may wait.
    public var maxLongPoll: Duration = .seconds(60)
    /// Login attempts per account name and client address: burst, then one per interval.
    public var loginBurst = 10
    public var loginInterval: Duration = .seconds(6)

    public init() {}
}

/// The lockfs API (docs/protocol.md): everything under /v1, plus /metrics.
public struct ServerAPI: Sendable {
    public let store: any MetadataStore
    public let blobs: any BlobStore
    public let settings: ServerSettings
    public let notifier = JournalNotifier()
    public let metrics = ServerMetrics()
    let limiter: LoginLimiter
    let secretCache = SecretCache(nil)

    static let binary = APIv1.binaryContentType
    static let json = "application/json"

    public init(store: any MetadataStore, blobs: any BlobStore, settings: ServerSettings = .init()) {
        self.store = store
        self.blobs = blobs
        self.settings = settings
        limiter = LoginLimiter(burst: settings.loginBurst, interval: settings.loginInterval)
    }

    /// The router with every route.
    public func router() -> Router<ServerContext> {
        let router = Router(context: ServerContext.self)
        router.add(middleware: ErrorAndMetricsMiddleware(metrics: metrics))
        router.get("/metrics") { _, _ in try await self.metricsResponse() }

        let v1 = router.group("v1")
        v1.get("health") { _, _ in Self.jsonResponse(#"{"status":"ok"}"#) }
        v1.get("accounts/:user/prelogin") { _, context in try await self.prelogin(context.parameters.require("user")) }
        v1.post("register") { request, context in try await self.register(request, context) }
        v1.post("login") { request, context in try await self.login(request, context) }

        let authed = v1.group().add(middleware: AuthMiddleware(store: store))
        authed.get("devices") { _, context in try await self.devices(context) }
        authed.delete("devices/:id") { _, context in try await self.revoke(context) }
        authed.get("keyring") { _, context in Self.binaryResponse(try context.caller().account.keyring) }
        authed.put("keyring") { request, context in try await self.replaceKeyring(request, context) }
        authed.get("account") { _, context in try await self.accountInfo(context) }
        authed.post("chunks/missing") { request, context in try await self.missing(request, context) }
        authed.post("chunks/batch") { request, context in try await self.uploadBatch(request, context) }
        authed.put("chunks/:id") { request, context in try await self.upload(request, context) }
        authed.get("chunks/:id") { _, context in try await self.download(context) }
        authed.post("journal") { request, context in try await self.append(request, context) }
        authed.get("journal") { request, context in try await self.pull(request, context) }
        authed.put("checkpoint") { request, context in try await self.putCheckpoint(request, context) }
        authed.get("checkpoint") { _, context in try await self.getCheckpoint(context) }
        return router
    }

    // MARK: Accounts and devices

    func prelogin(_ user: String) async throws -> Response {
        if let account = try await store.account(named: user) {
            return try Self.json(PreLoginResponse(kdf: KDFParameters(encoded: account.kdf)))
        }
        // Unknown names get stable, plausible parameters, so that pre-login
        // does not reveal which accounts exist.
        let secret = try await serverSecret()
        let salt = secret.withUnsafeBytes { Array(Hash.blake2b256(Array("lockfs fake prelogin v1".utf8) + Array(user.utf8), key: $0).prefix(16)) }
        let params = try KDFParameters(opsLimit: 3, memLimit: 256 << 20, salt: salt)
        return try Self.json(PreLoginResponse(kdf: params))
    }

    func register(_ request: Request, _ context: ServerContext) async throws -> Response {
        try request.require(contentType: Self.json)
        let body = try RegisterRequest.decodeStrictly(Data(try await request.bytes(limit: 16 << 10)))
        try Self.validate(user: body.user)
        try Self.validate(deviceName: body.deviceName)
        guard let secret = Data(base64Encoded: body.loginSecret).map(Array.init), secret.count == 32 else {
            throw ServerError.badRequest("loginSecret must be 32 bytes, base64")
        }
        guard let keyringBytes = Data(base64Encoded: body.keyring).map(Array.init) else {
            throw ServerError.badRequest("keyring must be base64")
        }
        let keyring = try Keyring(decoding: keyringBytes)
        var inviteHash: [UInt8]? = nil
        if !settings.openRegistration {
            guard let code = body.invite, let hash = Credentials.inviteHash(code) else {
                throw ServerError.forbidden("registration needs an invite code (the admin runs: lockfs-server user add \(body.user))")
            }
            inviteHash = hash
        }
        if let retry = limiter.attempt("register \(context.remoteAddress)") { throw ServerError.tooManyRequests(retryAfterSeconds: retry) }
        let salt = Sodium.randomBytes(16)
        let (token, tokenHash) = Credentials.newToken()
        let device = NewDevice(id: .random(), name: body.deviceName, tokenHash: tokenHash)
        let account = try await store.register(
            NewAccount(name: body.user, vaultID: keyring.vaultID, kdf: keyring.parameters.encoded, keyring: keyringBytes,
                       loginSalt: salt, loginHash: Credentials.loginHash(secret: secret, salt: salt)),
            inviteHash: inviteHash, device: device, now: Date())
        context.logger.info("registered account", metadata: ["account": "\(account.id)"])
        return try Self.json(LoginResponse(token: token, device: device.id, vault: account.vaultID), status: .created)
    }

    func login(_ request: Request, _ context: ServerContext) async throws -> Response {
        try request.require(contentType: Self.json)
        let body = try LoginRequest.decodeStrictly(Data(try await request.bytes(limit: 16 << 10)))
        try Self.validate(deviceName: body.deviceName)
        if let retry = limiter.attempt("login \(body.user) \(context.remoteAddress)") {
            throw ServerError.tooManyRequests(retryAfterSeconds: retry)
        }
        guard let secret = Data(base64Encoded: body.loginSecret).map(Array.init), secret.count == 32,
              let account = try await store.account(named: body.user),
              Credentials.verifyLogin(secret: secret, salt: account.loginSalt, hash: account.loginHash) else {
            // One answer for an unknown name and a wrong password.
            throw ServerError.forbidden("wrong user name or password")
        }
        let (token, tokenHash) = Credentials.newToken()
        let device = NewDevice(id: .random(), name: body.deviceName, tokenHash: tokenHash)
        try await store.addDevice(device, account: account.id, now: Date())
        return try Self.json(LoginResponse(token: token, device: device.id, vault: account.vaultID))
    }

    func devices(_ context: ServerContext) async throws -> Response {
        let (account, me) = try context.caller()
        let list = try await store.devices(account: account.id).map {
            DeviceInfo(id: $0.id.hex, name: $0.name, createdAt: $0.createdAt.timeIntervalSince1970,
                       lastSeenAt: $0.lastSeenAt?.timeIntervalSince1970, current: $0.id == me.id)
        }
        return try Self.json(DeviceList(devices: list))
    }

    func revoke(_ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        guard let id = DeviceID(hex: try context.parameters.require("id")) else { throw ServerError.badRequest("device id must be 32 hex digits") }
        guard try await store.revokeDevice(account: account.id, id: id) else { throw ServerError.notFound("no such device") }
        return Response(status: .noContent)
    }

    func replaceKeyring(_ request: Request, _ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        try request.require(contentType: Self.json)
        let body = try KeyringReplaceRequest.decodeStrictly(Data(try await request.bytes(limit: 16 << 10)))
        guard let secret = Data(base64Encoded: body.loginSecret).map(Array.init), secret.count == 32,
              let bytes = Data(base64Encoded: body.keyring).map(Array.init) else {
            throw ServerError.badRequest("loginSecret (32 bytes) and keyring must be base64")
        }
        let keyring = try Keyring(decoding: bytes)
        guard keyring.vaultID == account.vaultID else { throw ServerError.badRequest("the keyring belongs to another vault") }
        let salt = Sodium.randomBytes(16)
        try await store.replaceKeyring(account: account.id, keyring: bytes, kdf: keyring.parameters.encoded,
                                       loginSalt: salt, loginHash: Credentials.loginHash(secret: secret, salt: salt))
        return Response(status: .noContent)
    }

    func accountInfo(_ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        let fresh = try await store.account(named: account.name) ?? account
        return try Self.json(AccountInfo(user: fresh.name, vault: fresh.vaultID.hex, storedBytes: fresh.storedBytes,
                                         quota: fresh.quota ?? settings.defaultQuota))
    }

    // MARK: Chunks

    func missing(_ request: Request, _ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        try request.require(contentType: Self.binary)
        let query = try ChunkIDList(decoding: try await request.bytes(limit: 5 + 32 * APIv1.maxIDsPerQuery))
        return Self.binaryResponse(try ChunkIDList(ids: try await store.missingChunks(account: account.id, ids: query.ids)).encoded)
    }

    func upload(_ request: Request, _ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        try request.require(contentType: Self.binary)
        guard let id = ChunkID(hex: try context.parameters.require("id")) else { throw ServerError.badRequest("chunk id must be 64 hex digits") }
        let bytes = try await request.bytes(limit: EnvelopeKind.chunk.maxSealedSize)
        try bytes.withUnsafeBytes { try Envelope.validateFraming($0, kind: .chunk) }
        try await store(chunks: [SealedChunk(id: id, bytes: bytes)], account: account)
        return Response(status: .created)
    }

    func uploadBatch(_ request: Request, _ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        try request.require(contentType: Self.binary)
        let batch = try ChunkBatch(decoding: try await request.bytes(limit: APIv1.maxBatchBytes))
        guard Set(batch.chunks.map(\.id)).count == batch.chunks.count else {
            throw ServerError.badRequest("a chunk id appears twice in the batch")
        }
        try await store(chunks: batch.chunks, account: account)
        return Response(status: .created)
    }

    /// Writes blobs first (durably), then records them: a recorded chunk always has its blob.
    private func store(chunks: [SealedChunk], account: Account) async throws {
        let missing = Set(try await store.missingChunks(account: account.id, ids: chunks.map(\.id)))
        let new = chunks.filter { missing.contains($0.id) }
        guard !new.isEmpty else { return }
        let added = new.reduce(Int64(0)) { $0 + Int64($1.bytes.count) }
        if let quota = account.quota ?? settings.defaultQuota, account.storedBytes + added > quota {
            throw ServerError.quotaExceeded(used: account.storedBytes, limit: quota)
        }
        if new.count == 1 {
            try await blobs.put(new[0].bytes, for: BlobKey(vault: account.vaultID, chunk: new[0].id))
        } else {
            try await blobs.put(batch: new.map { (BlobKey(vault: account.vaultID, chunk: $0.id), $0.bytes) })
        }
        try await store.recordChunks(account: account.id, new.map { ($0.id, $0.bytes.count) })
        metrics.received(Int(added))
    }

    func download(_ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        guard let id = ChunkID(hex: try context.parameters.require("id")) else { throw ServerError.badRequest("chunk id must be 64 hex digits") }
        guard try await store.missingChunks(account: account.id, ids: [id]).isEmpty,
              let bytes = try await blobs.get(BlobKey(vault: account.vaultID, chunk: id)) else {
            throw ServerError.notFound("no such chunk")
        }
        metrics.sent(bytes.count)
        return Self.binaryResponse(bytes)
    }

    // MARK: Journal

    func append(_ request: Request, _ context: ServerContext) async throws -> Response {
        let (account, device) = try context.caller()
        try request.require(contentType: Self.binary)
        let limit = 9 + JournalEntry.headerSize + EnvelopeKind.journalEntry.maxSealedSize + 32 * APIv1.maxReferencesPerEntry
        let body = try AppendRequest(decoding: try await request.bytes(limit: limit))
        let stored = try await store.append(account: account.id, vault: account.vaultID, entry: body.entry,
                                            bytes: body.entry.encoded, references: body.references,
                                            device: device.id, now: Date())
        notifier.notify(account.id)
        return try Self.json(AppendResponse(seq: stored.seq, head: stored.head), status: .created)
    }

    func pull(_ request: Request, _ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        let query = request.uri.queryParameters
        guard let after = query["after"].map({ UInt64(String($0)) }) ?? 0 else { throw ServerError.badRequest("after must be a sequence number") }
        guard let limit = query["limit"].map({ Int(String($0)) }) ?? APIv1.maxEntriesPerPage,
              (1...APIv1.maxEntriesPerPage).contains(limit) else {
            throw ServerError.badRequest("limit must be 1…\(APIv1.maxEntriesPerPage)")
        }
        guard let waitSeconds = query["wait"].map({ Double(String($0)) }) ?? 0, waitSeconds >= 0, waitSeconds.isFinite else {
            throw ServerError.badRequest("wait must be a number of seconds")
        }
        // Clamp before converting: a huge number must not trap.
        let maxSeconds = Double(settings.maxLongPoll.components.seconds)
        let wait = Duration.milliseconds(Int64(min(waitSeconds, maxSeconds) * 1000))
        let generation = notifier.generation(of: account.id)
        var page = try await store.entries(account: account.id, after: JournalSeq(after), limit: limit)
        if page.items.isEmpty && wait > .zero {
            metrics.longPoll(1)
            // A graceful shutdown ends every long-poll at once (an empty page;
            // the client polls again), so SIGTERM never waits out a poll.
            await withGracefulShutdownHandler {
                await notifier.wait(for: account.id, after: generation, timeout: wait)
            } onGracefulShutdown: {
                notifier.shutdown()
            }
            metrics.longPoll(-1)
            page = try await store.entries(account: account.id, after: JournalSeq(after), limit: limit)
        }
        let items = try page.items.map { EntryPage.Item(seq: $0.seq, head: $0.head, entry: try JournalEntry(decoding: $0.bytes)) }
        return Self.binaryResponse(try EntryPage(items: items, latest: page.latest).encoded)
    }

    func putCheckpoint(_ request: Request, _ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        try request.require(contentType: Self.binary)
        let bytes = try await request.bytes(limit: 41 + EnvelopeKind.checkpoint.maxSealedSize)
        var reader = WireReader(bytes, record: "stored checkpoint")
        try reader.version(Checkpoint.wireVersion)
        let seq = JournalSeq(try reader.u64())
        let head: ChainHead = try reader.id()
        try reader.rest().withUnsafeBytes { try Envelope.validateFraming($0, kind: .checkpoint) }
        try await store.putCheckpoint(account: account.id, vault: account.vaultID, seq: seq, head: head, bytes: bytes)
        return Response(status: .created)
    }

    func getCheckpoint(_ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        guard let bytes = try await store.latestCheckpoint(account: account.id) else { throw ServerError.notFound("no checkpoint yet") }
        return Self.binaryResponse(bytes)
    }

    func metricsResponse() async throws -> Response {
        metrics.stored(total: try await store.totalStoredBytes())
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
    }

    // MARK: Helpers

    /// The deployment secret, read from the store once.
    func serverSecret() async throws -> [UInt8] {
        if let cached = secretCache.withLock({ $0 }) { return cached }
        let secret = try await store.serverSecret()
        secretCache.withLock { $0 = secret }
        return secret
    }

    public static func validate(user: String) throws {
        func alnum(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7A) }
        let utf8 = Array(user.utf8)
        let ok = (1...64).contains(utf8.count) && alnum(utf8[0])
            && utf8.allSatisfy { alnum($0) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
        guard ok else {
            throw ServerError.badRequest("user names are 1–64 characters of a–z, 0–9, “.”, “-” and “_”, starting with a letter or digit")
        }
    }

    static func validate(deviceName: String) throws {
        guard (1...128).contains(deviceName.utf8.count), !deviceName.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw ServerError.badRequest("device names are 1–128 bytes without control characters")
        }
    }

    static func json(_ body: some JSONBody, status: HTTPResponse.Status = .ok) throws -> Response {
        Response(status: status, headers: [.contentType: Self.json], body: .init(byteBuffer: ByteBuffer(bytes: try body.jsonData())))
    }

    static func jsonResponse(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: Self.json], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func binaryResponse(_ bytes: [UInt8]) -> Response {
        Response(status: .ok, headers: [.contentType: Self.binary], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

/// A lock-protected optional secret (Mutex is not copyable, so it lives in a class).
final class SecretCache: Sendable {
    private let value: Mutex<[UInt8]?>
    init(_ initial: [UInt8]?) { value = Mutex(initial) }
    func withLock<R>(_ body: (inout [UInt8]?) -> R) -> R { value.withLock { body(&$0) } }
}
