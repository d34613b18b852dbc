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
    /// Long-polls one account may hold open at once.
    public var longPollsPerAccount = APIv1.maxLongPollsPerAccount
    /// Login attempts per account name and client address: burst, then one per interval.
    public var loginBurst = 10
    public var loginInterval: Duration = .seconds(6)
    /// The bearer token `GET /metrics` needs (`--metrics-token-file`); nil:
    /// only requests from this machine get it. Per-route counts and bytes are
    /// a live view of the users' activity, not for anyone on the API port.
    public var metricsToken: String? = nil

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
    /// Long-polls waiting, per account (at most `settings.longPollsPerAccount`).
    let longPolls: LongPollSlots
    let secretCache = SecretCache(nil)

    static let binary = APIv1.binaryContentType
    static let json = "application/json"

    public init(store: any MetadataStore, blobs: any BlobStore, settings: ServerSettings = .init()) {
        self.store = store
        self.blobs = blobs
        self.settings = settings
        limiter = LoginLimiter(burst: settings.loginBurst, interval: settings.loginInterval)
        longPolls = LongPollSlots(limit: settings.longPollsPerAccount)
    }

    /// The router with every route.
    public func router() -> Router<ServerContext> {
        let router = Router(context: ServerContext.self)
        router.add(middleware: ErrorAndMetricsMiddleware(metrics: metrics))
        router.get("/metrics") { request, context in
            let proxied = ["X-Forwarded-For", "Forwarded", "X-Real-IP"].contains { HTTPFields.Element.Name($0).map { request.headers[$0] != nil } ?? false }
            guard Self.metricsAllowed(peer: context.remoteAddress, proxied: proxied, authorization: request.headers[.authorization],
                                      token: self.settings.metricsToken) else {
                throw ServerError.forbidden("/metrics is for this machine, or for the token of --metrics-token-file")
            }
            return try await self.metricsResponse()
        }

        let v1 = router.group("v1")
        v1.get("health") { _, _ in Self.jsonResponse(#"{"status":"ok"}"#) }
        v1.get("accounts/:user/prelogin") { _, context in try await self.prelogin(context.parameters.require("user")) }
        v1.post("register") { request, context in try await self.register(request, context) }
        v1.post("login") { request, context in try await self.login(request, context) }
        v1.post("recover") { request, context in try await self.recover(request, context) }

        let authed = v1.group().add(middleware: AuthMiddleware(store: store))
        authed.get("devices") { request, context in try await self.devices(request, context) }
        authed.delete("devices/:id") { _, context in try await self.revokeSelf(context) }
        authed.post("devices/:id/revoke") { request, context in try await self.revoke(request, context) }
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
        return try Self.json(PreLoginResponse(kdf: Self.fakeParameters(user: user, secret: try await serverSecret(), now: Date())))
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
        guard let recoveryText = body.recoveryProof else { throw Self.upgradeRequired("registration needs a recovery proof") }
        let recoveryProof = try Self.secret(recoveryText, "recoveryProof")
        let keyring = try VaultKeyring(decoding: keyringBytes)
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
        let keys = try Self.requireKeys(DevicePublicKeys.decode(signing: body.signingKey, box: body.boxKey, boxSignature: body.boxKeySignature))
        let device = NewDevice(id: .random(), name: body.deviceName, tokenHash: tokenHash, signingKey: keys.signing, boxKey: keys.box, boxKeySignature: keys.boxSignature)
        let account = try await store.register(
            NewAccount(name: body.user, vaultID: keyring.vaultID, kdf: keyring.parameters.encoded, keyring: keyringBytes,
                       loginSalt: salt, loginHash: Credentials.loginHash(secret: secret, salt: salt),
                       recoveryVerifier: Credentials.recoveryVerifier(proof: recoveryProof)),
            inviteHash: inviteHash, device: device, now: Date())
        context.logger.info("registered account", metadata: ["account": "\(account.id)"])
        return try Self.json(LoginResponse(token: token, device: device.id, vault: account.vaultID), status: .created)
    }

    func login(_ request: Request, _ context: ServerContext) async throws -> Response {
        try request.require(contentType: Self.json)
        let body = try LoginRequest.decodeStrictly(Data(try await request.bytes(limit: 16 << 10)))
        try Self.validate(deviceName: body.deviceName)
        let offered = try DevicePublicKeys.decode(signing: body.signingKey, box: body.boxKey, boxSignature: body.boxKeySignature)
        if let retry = limiter.attempt("login \(body.user) \(context.remoteAddress)") {
            throw ServerError.tooManyRequests(retryAfterSeconds: retry)
        }
        guard let secret = Data(base64Encoded: body.loginSecret).map(Array.init), secret.count == 32,
              let account = try await store.account(named: body.user),
              Credentials.verifyLogin(secret: secret, salt: account.loginSalt, hash: account.loginHash) else {
            // One answer for an unknown name and a wrong password.
            throw ServerError.forbidden("wrong user name or password")
        }
        let keys = try Self.requireKeys(offered)
        let (token, tokenHash) = Credentials.newToken()
        let device = NewDevice(id: .random(), name: try await uniqueName(body.deviceName, account: account.id), tokenHash: tokenHash,
                               signingKey: keys.signing, boxKey: keys.box, boxKeySignature: keys.boxSignature)
        try await store.addDevice(device, account: account.id, now: Date(), ifLoginHash: account.loginHash)
        return try Self.json(LoginResponse(token: token, device: device.id, vault: account.vaultID))
    }

    /// `GET /v1/devices`; with `?keys=1` each device's public keys too
    /// (asked for, so that a client that reads the list strictly and
    /// predates them still can).
    func devices(_ request: Request, _ context: ServerContext) async throws -> Response {
        let (account, me) = try context.caller()
        let withKeys = request.uri.queryParameters["keys"] == "1"
        let list = try await store.devices(account: account.id).map { d in
            DeviceInfo(id: d.id.hex, name: d.name, createdAt: d.createdAt.timeIntervalSince1970,
                       lastSeenAt: d.lastSeenAt?.timeIntervalSince1970, current: d.id == me.id,
                       keys: withKeys ? d.signingKey.flatMap { s in d.boxKey.map { DevicePublicKeys(signing: s, box: $0, boxSignature: d.boxKeySignature) } } : nil)
        }
        return try Self.json(DeviceList(devices: list))
    }

    /// `POST /v1/recover`: a new device from the recovery proof (no password,
    /// no device). Rate-limited and answered like a wrong login on failure.
    func recover(_ request: Request, _ context: ServerContext) async throws -> Response {
        try request.require(contentType: Self.json)
        let body = try RecoverRequest.decodeStrictly(Data(try await request.bytes(limit: 16 << 10)))
        try Self.validate(deviceName: body.deviceName)
        let keys = try Self.requireKeys(DevicePublicKeys.decode(signing: body.signingKey, box: body.boxKey, boxSignature: body.boxKeySignature))
        if let retry = limiter.attempt("login \(body.user) \(context.remoteAddress)") {
            throw ServerError.tooManyRequests(retryAfterSeconds: retry)
        }
        guard let proof = Data(base64Encoded: body.recoveryProof).map(Array.init), proof.count == 32,
              let account = try await store.account(named: body.user), let verifier = account.recoveryVerifier,
              Credentials.verifyRecovery(proof: proof, verifier: verifier) else {
            throw ServerError.forbidden("wrong user name or recovery key")
        }
        let (token, tokenHash) = Credentials.newToken()
        let device = NewDevice(id: .random(), name: try await uniqueName(body.deviceName, account: account.id), tokenHash: tokenHash,
                               signingKey: keys.signing, boxKey: keys.box, boxKeySignature: keys.boxSignature)
        try await store.addDevice(device, account: account.id, now: Date())
        context.logger.notice("device enrolled by recovery key", metadata: ["account": "\(account.id)"])
        return try Self.json(LoginResponse(token: token, device: device.id, vault: account.vaultID))
    }

    /// `DELETE /v1/devices/ID`: a device logs itself out. Revoking another
    /// device needs a password proof (`POST /v1/devices/ID/revoke`).
    func revokeSelf(_ context: ServerContext) async throws -> Response {
        let (account, me) = try context.caller()
        guard let id = DeviceID(hex: try context.parameters.require("id")) else { throw ServerError.badRequest("device id must be 32 hex digits") }
        guard id == me.id else {
            throw ServerError.conflict(code: "proof_required", message: "revoking another device needs the password: POST /v1/devices/ID/revoke (lockfs devices revoke asks for it; upgrade lockfs if this client does not)")
        }
        guard try await store.revokeDevice(account: account.id, id: id) else { throw ServerError.notFound("no such device") }
        return Response(status: .noContent)
    }

    /// `POST /v1/devices/ID/revoke`: revokes a device of the caller's account,
    /// with a fresh password proof, so that a stolen token cannot sign the
    /// owner's devices out.
    func revoke(_ request: Request, _ context: ServerContext) async throws -> Response {
        let (account, me) = try context.caller()
        guard let id = DeviceID(hex: try context.parameters.require("id")) else { throw ServerError.badRequest("device id must be 32 hex digits") }
        try request.require(contentType: Self.json)
        let body = try RevokeDeviceRequest.decodeStrictly(Data(try await request.bytes(limit: 4 << 10)))
        try checkProof(.password(try Self.secret(body.loginSecret, "loginSecret")), account: account, caller: me.id, what: "revoke")
        guard try await store.revokeDevice(account: account.id, id: id) else { throw ServerError.notFound("no such device") }
        context.logger.notice("device revoked", metadata: ["account": "\(account.id)"])
        return Response(status: .noContent)
    }

    /// `PUT /v1/keyring`: needs the current login secret or the recovery
    /// proof as well as the token. A recovery signs every other device out.
    func replaceKeyring(_ request: Request, _ context: ServerContext) async throws -> Response {
        let (account, me) = try context.caller()
        try request.require(contentType: Self.json)
        // A keyring of generation g holds g − 1 links and a seal per device.
        let body = try KeyringReplaceRequest.decodeStrictly(Data(try await request.bytes(limit: 1 << 20)))
        let secret = try Self.secret(body.loginSecret, "loginSecret")
        guard let bytes = Data(base64Encoded: body.keyring).map(Array.init) else { throw ServerError.badRequest("keyring must be base64") }
        let proof: OwnerProof
        switch (body.currentLoginSecret, body.recoveryProof) {
        case (let current?, nil): proof = .password(try Self.secret(current, "currentLoginSecret"))
        case (nil, let recovery?): proof = .recovery(try Self.secret(recovery, "recoveryProof"))
        case (nil, nil): throw Self.upgradeRequired("replacing the keyring needs the current password or the recovery key")
        default: throw ServerError.badRequest("give one proof: currentLoginSecret or recoveryProof")
        }
        let keyring = try VaultKeyring(decoding: bytes)
        guard keyring.vaultID == account.vaultID else { throw ServerError.badRequest("the keyring belongs to another vault") }
        try checkProof(proof, account: account, caller: me.id, what: "keyring")
        let current = Self.keyringGeneration(account.keyring)
        if let why = Self.generationProblem(replacing: account.keyring, with: keyring) {
            throw ServerError.conflict(code: "keyring_changed", message: why)
        }
        var verifier: [UInt8]? = nil
        if let set = body.setRecoveryProof {
            // Registering is for accounts that have none; replacing one needs the
            // recovery key itself (else a phished password would take the
            // recovery key's power away from its owner for good).
            if account.recoveryVerifier != nil, case .password = proof {
                throw ServerError.forbidden("this account's recovery key is registered already; replacing it needs the recovery key")
            }
            verifier = Credentials.recoveryVerifier(proof: try Self.secret(set, "setRecoveryProof"))
        }
        let recovering = if case .recovery = proof { true } else { false }
        let salt = Sodium.randomBytes(16)
        try await store.replaceKeyring(account: account.id, KeyringChange(
            keyring: bytes, kdf: keyring.parameters.encoded, loginSalt: salt,
            loginHash: Credentials.loginHash(secret: secret, salt: salt), recoveryVerifier: verifier,
            revokeAllBut: recovering ? me.id : nil, expectedLoginHash: account.loginHash), now: Date())
        context.logger.notice(recovering ? "keyring replaced by recovery; other devices revoked" : "keyring replaced",
                              metadata: ["account": "\(account.id)", "generation": "\(keyring.generation)"])
        // Long-polls return, so that devices see the new generation in the
        // header of their next page at once (a rotation must reach them).
        if keyring.generation > current { notifier.notify(account.id) }
        return Response(status: .noContent)
    }

    /// Checks an owner proof against the account, rate-limited per account
    /// and calling device: a token thief cannot guess passwords through it
    /// faster than at login, nor empty the owner's bucket from its own device.
    /// - Throws: `.tooManyRequests`; `.forbidden` for a wrong proof, or a
    ///   recovery proof on an account that has no verifier.
    func checkProof(_ proof: OwnerProof, account: Account, caller: DeviceID, what: String) throws {
        if let retry = limiter.attempt("\(what) \(account.id) \(caller.hex)") { throw ServerError.tooManyRequests(retryAfterSeconds: retry) }
        switch proof {
        case .password(let secret):
            guard Credentials.verifyLogin(secret: secret, salt: account.loginSalt, hash: account.loginHash) else {
                throw ServerError.forbidden("the password is wrong")
            }
        case .recovery(let proof):
            guard let verifier = account.recoveryVerifier else {
                throw ServerError.forbidden("this account has no recovery key registered on the server (it was made before lockfs 0.2; `lockfs passwd` registers it)")
            }
            guard Credentials.verifyRecovery(proof: proof, verifier: verifier) else { throw ServerError.forbidden("the recovery key is wrong") }
        }
    }

    /// `name`, or `name (2)`… if another live device of the account has it.
    func uniqueName(_ name: String, account: AccountID) async throws -> String {
        DeviceName.unique(name, taken: Set(try await store.devices(account: account).map(\.name)))
    }

    static func secret(_ base64: String, _ field: String) throws -> [UInt8] {
        guard let bytes = Data(base64Encoded: base64).map(Array.init), bytes.count == 32 else {
            throw ServerError.badRequest("\(field) must be 32 bytes, base64")
        }
        return bytes
    }

    /// A new device's public keys; an enrolment without them comes from a
    /// client older than 0.2 (its device could sign nothing).
    static func requireKeys(_ keys: DevicePublicKeys?) throws -> DevicePublicKeys {
        guard let keys else { throw upgradeRequired("a new device must send its public keys") }
        return keys
    }

    /// What an older client meets when it skips a proof this server requires.
    static func upgradeRequired(_ what: String) -> ServerError {
        .conflict(code: "upgrade_required", message: "\(what); this client is too old for the server: upgrade lockfs")
    }

    func accountInfo(_ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        let fresh = try await store.account(named: account.name) ?? account
        return try Self.json(AccountInfo(user: fresh.name, vault: fresh.vaultID.hex, storedBytes: fresh.storedBytes,
                                         quota: fresh.quota ?? settings.defaultQuota,
                                         recoveryKeyRegistered: fresh.recoveryVerifier != nil))
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
        let limit = 9 + JournalEntry.signedHeaderSize + EnvelopeKind.journalEntry.maxSealedSize + 32 * APIv1.maxReferencesPerEntry
        let body = try AppendRequest(decoding: try await request.bytes(limit: limit))
        try await checkSigner(of: body.entry, account: account, device: device)
        try checkJournalQuota(account, adding: body.entry.encoded.count)
        let stored = try await store.append(account: account.id, vault: account.vaultID, entry: body.entry,
                                            bytes: body.entry.encoded, references: body.references,
                                            device: device.id, now: Date())
        notifier.notify(account.id)
        return try Self.json(AppendResponse(seq: stored.seq, head: stored.head), status: .created)
    }

    /// Journal entries and checkpoints count against the quota. Past it they
    /// may still take a headroom (an eighth of the quota, at least 16 MiB), so
    /// that a full account can still delete and move files; beyond that, 413.
    func checkJournalQuota(_ account: Account, adding bytes: Int) throws {
        guard let quota = account.quota ?? settings.defaultQuota else { return }
        let headroom = max(quota / 8, 16 << 20)
        let allowed = quota.addingReportingOverflow(headroom)
        let wanted = account.storedBytes.addingReportingOverflow(Int64(bytes))
        if !allowed.overflow, wanted.overflow || wanted.partialValue > allowed.partialValue {
            throw ServerError.quotaExceeded(used: account.storedBytes, limit: quota)
        }
    }

    /// A token alone writes nothing: an entry must be signed by the calling
    /// device's key. A device enrolled before lockfs 0.2 has no key yet: its
    /// first signed entry registers the key it carries (and from then on it
    /// must sign); until then it may append unsigned entries, as 0.1 did.
    func checkSigner(of entry: JournalEntry, account: Account, device: DeviceRecord) async throws {
        guard let signer = entry.signer else {
            if device.signingKey == nil { return }
            throw Self.upgradeRequired("this device signs its journal entries (lockfs 0.2); an unsigned entry from it is refused")
        }
        guard signer.device == device.id else {
            throw ServerError.forbidden("the entry is signed as another device than the one whose token sent it")
        }
        guard entry.hasValidSignature(vault: account.vaultID) else {
            throw ServerError.forbidden("the entry's signature is not valid")
        }
        var registered = device.signingKey
        if registered == nil { registered = try await store.bindSigningKey(account: account.id, device: device.id, key: signer.publicKey) }
        guard let registered, Sodium.constantTimeEqual(registered, signer.publicKey) else {
            throw ServerError.forbidden("the entry is signed with another key than the one registered for this device")
        }
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
        var keyring = account.keyring
        var page = try await store.entries(account: account.id, after: JournalSeq(after), limit: limit, maxBytes: APIv1.maxPageBytes)
        if page.items.isEmpty && wait > .zero {
            // One account cannot hold every connection of the server open.
            guard longPolls.take(account.id) else { throw ServerError.tooManyRequests(retryAfterSeconds: 1) }
            defer { longPolls.give(account.id) }
            metrics.longPoll(1)
            // A graceful shutdown ends every long-poll at once (an empty page;
            // the client polls again), so SIGTERM never waits out a poll.
            await withGracefulShutdownHandler {
                await notifier.wait(for: account.id, after: generation, timeout: wait)
            } onGracefulShutdown: {
                notifier.shutdown()
            }
            metrics.longPoll(-1)
            page = try await store.entries(account: account.id, after: JournalSeq(after), limit: limit, maxBytes: APIv1.maxPageBytes)
            if let now = try await store.account(named: account.name) { keyring = now.keyring }
        }
        let items = try page.items.map { EntryPage.Item(seq: $0.seq, head: $0.head, entry: try JournalEntry(decoding: $0.bytes)) }
        // Version 2 pages say the head at the cursor, so that a client checks it
        // against the one it verified at every poll (none: the journal is shorter).
        var start: EntryPage.Start?
        if query["format"].map(String.init) == EntryPage.formatQuery,
           let head = try await store.head(account: account.id, vault: account.vaultID, at: JournalSeq(after)) {
            start = EntryPage.Start(after: JournalSeq(after), head: head)
        }
        var response = Self.binaryResponse(try EntryPage(start: start, items: items, latest: page.latest).encoded)
        response.headers[HTTPFields.Element.Name(APIv1.keyringGenerationHeader)!] = "\(Self.keyringGeneration(keyring))"
        return response
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
        try checkJournalQuota(account, adding: bytes.count)
        try await store.putCheckpoint(account: account.id, vault: account.vaultID, seq: seq, head: head, bytes: bytes)
        return Response(status: .created)
    }

    func getCheckpoint(_ context: ServerContext) async throws -> Response {
        let (account, _) = try context.caller()
        guard let bytes = try await store.latestCheckpoint(account: account.id) else { throw ServerError.notFound("no checkpoint yet") }
        return Self.binaryResponse(bytes)
    }

    /// Whether a request for `/metrics` is served: with a token configured,
    /// only with `Authorization: Bearer TOKEN`; without one, only from a
    /// loopback address and not through a proxy (one on this host would make
    /// every request look local). Pure; table-tested.
    static func metricsAllowed(peer: String, proxied: Bool, authorization: String?, token: String?) -> Bool {
        if let token {
            guard let given = authorization, given.hasPrefix("Bearer ") else { return false }
            return Sodium.constantTimeEqual(Array(given.dropFirst(7).utf8), Array(token.utf8))
        }
        guard !proxied else { return false }
        let address = peer.lowercased().hasPrefix("::ffff:") ? String(peer.dropFirst(7)) : peer
        return Loopback.contains(host: address) && address != "localhost"
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

    /// Plausible parameters for a name that has no account, so that pre-login
    /// does not reveal which accounts exist: the defaults of `lockfs init`
    /// and a salt keyed by the deployment secret. A real salt changes when its
    /// owner runs `lockfs passwd`, now and then; a fake one does too: in each
    /// 90-day cell of the calendar, with probability 1/4, on a day drawn per
    /// name and cell from the secret. So neither "it changed" nor "it never
    /// changed" tells a fake name from a real one.
    static func fakeParameters(user: String, secret: [UInt8], now: Date) throws -> KDFParameters {
        func draw(_ label: String, _ n: UInt64) -> [UInt8] {
            secret.withUnsafeBytes { Hash.blake2b256(Array("lockfs fake prelogin v2 \(label)".utf8) + ByteOrder.bigEndian(n) + Array(user.utf8), key: $0) }
        }
        let day = UInt64(max(0, now.timeIntervalSince1970) / 86_400)
        let cell = day / 90
        var changes: UInt64 = 0
        for c in 0...cell where draw("change", c)[0] < 64 {
            let changeDay = UInt64(draw("change day", c)[1]) % 90
            if c < cell || day % 90 >= changeDay { changes += 1 }
        }
        return try KDFParameters(opsLimit: 3, memLimit: 256 << 20, salt: Array(draw("salt", changes).prefix(16)))
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
        if let problem = DeviceName.problem(deviceName) { throw ServerError.badRequest(problem) }
    }

    static func json(_ body: some JSONBody, status: HTTPResponse.Status = .ok) throws -> Response {
        Response(status: status, headers: [.contentType: Self.json], body: .init(byteBuffer: ByteBuffer(bytes: try body.jsonData())))
    }

    static func jsonResponse(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: Self.json], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Why `new` may not replace the stored keyring `old`, or nil. A
    /// replacement keeps the generation (a password change: the generation's
    /// recovery seal and links unchanged, so its master key is the same) or
    /// adds exactly one (a rotation). So a stale client cannot take a
    /// generation away, nor two racing rotations swap one that devices
    /// adopted already.
    static func generationProblem(replacing old: [UInt8], with new: VaultKeyring) -> String? {
        let stored = try? VaultKeyring(decoding: old)
        let current = stored?.generation ?? 1
        switch new.generation {
        case current + 1: return nil
        case current:
            if case .v2(let o)? = stored, case .v2(let n) = new, o.recoverySeal != n.recoverySeal || o.links != n.links {
                return "the keyring is at key generation \(current) already, with other keys: fetch it again"
            }
            return nil
        default:
            return "the keyring is at key generation \(current); this one is at \(new.generation): fetch it again"
        }
    }

    /// The key generation of stored keyring bytes (1 for version 1; the
    /// server checked the record when it stored it): from the header alone,
    /// since every journal page names it.
    static func keyringGeneration(_ bytes: [UInt8]) -> UInt32 {
        VaultKeyring.generation(ofEncoded: bytes) ?? 1
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
