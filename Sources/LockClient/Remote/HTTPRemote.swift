import Foundation
import LockCrypto
import LockWire

/// `Remote` over HTTP(S) to lockfs-server (docs/protocol.md), with libcurl.
public struct HTTPRemote: Remote {
    public let baseURL: String
    public let token: String?
    let transport: CurlTransport

    /// - Parameters:
    ///   - baseURL: e.g. "https://sync.example.org:7440" (no trailing slash needed).
    ///   - token: the device token; nil before login.
    public init(baseURL: String, token: String? = nil, transport: CurlTransport) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.transport = transport
    }

    /// The same server with a device token.
    public func authenticated(_ token: String) -> HTTPRemote { HTTPRemote(baseURL: baseURL, token: token, transport: transport) }

    // MARK: Plumbing

    /// The largest answers: a chunk, a journal page (its byte cap, one more
    /// entry, and the framing), a checkpoint; anything else (JSON, the keyring) 1 MiB.
    static let maxChunkResponse = EnvelopeKind.chunk.maxSealedSize + 1024
    static let maxPageResponse = APIv1.maxPageBytes + JournalEntry.signedHeaderSize + EnvelopeKind.journalEntry.maxSealedSize
        + APIv1.maxEntriesPerPage * 48 + 1024
    static let maxCheckpointResponse = 41 + EnvelopeKind.checkpoint.maxSealedSize + 1024

    private func call(_ method: String, _ path: String, body: [UInt8]? = nil, contentType: String? = nil,
                      timeout: Duration = .seconds(120), maxResponse: Int = 1 << 20) async throws -> HTTPResponse {
        var headers: [(String, String)] = [("Accept", "*/*")]
        if let token { headers.append(("Authorization", "Bearer \(token)")) }
        if let contentType { headers.append(("Content-Type", contentType)) }
        let response: HTTPResponse
        do {
            response = try await transport.perform(HTTPRequest(method: method, url: baseURL + APIv1.pathPrefix + path,
                                                               headers: headers, body: body, timeout: timeout, maxResponseBytes: maxResponse))
        } catch let error as TransportError {
            // No faithful server answers longer than the protocol allows.
            if error.isResponseTooLarge { throw RemoteError.malformedResponse("\(method) \(path.split(separator: "?")[0]): \(error.message)") }
            throw RemoteError.unreachable(error.message)
        }
        guard (200..<300).contains(response.status) else { throw Self.error(for: response) }
        return response
    }

    /// Maps an error response to a `RemoteError` through its stable code.
    static func error(for r: HTTPResponse) -> RemoteError {
        let body = try? ErrorBody.decodeStrictly(Data(r.body))
        let message = body?.message ?? "HTTP \(r.status)"
        switch (r.status, body?.error) {
        case (401, _): return .unauthorized
        case (403, _): return .forbidden(message)
        case (404, _): return .notFound
        case (409, "missing_chunks"):
            return .missingChunks((body?.missing ?? []).compactMap { ChunkID(hex: $0) })
        case (409, let code?): return .conflict(code: code, message: message)
        case (429, _): return .rateLimited(retryAfter: r.retryAfter ?? 5)
        case (507, _): return .quotaExceeded(message)
        case (500..., _): return .unavailable(status: r.status, message: message)
        default: return .rejected(status: r.status, code: body?.error ?? "unknown", message: message)
        }
    }

    private func json<T: JSONBody>(_ type: T.Type, _ r: HTTPResponse) throws -> T {
        do { return try T.decodeStrictly(Data(r.body)) } catch { throw RemoteError.malformedResponse("\(T.self): \(error)") }
    }

    private func binary<T: WireRecord>(_ type: T.Type, _ r: HTTPResponse) throws -> T {
        do { return try T(decoding: r.body) } catch { throw RemoteError.malformedResponse("\(T.recordName): \(error)") }
    }

    private func session(_ r: HTTPResponse) throws -> Session {
        let body = try json(LoginResponse.self, r)
        guard let device = DeviceID(hex: body.device), let vault = VaultID(hex: body.vault), !body.token.isEmpty else {
            throw RemoteError.malformedResponse("login response")
        }
        return Session(token: body.token, device: device, vault: vault)
    }

    static let binaryType = APIv1.binaryContentType
    static let jsonType = "application/json"

    // MARK: Accounts

    public func preLogin(user: String) async throws -> KDFParameters {
        let escaped = user.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? user
        let body = try json(PreLoginResponse.self, try await call("GET", "/accounts/\(escaped)/prelogin"))
        do { return try body.parameters() } catch { throw RemoteError.malformedResponse("pre-login parameters: \(error)") }
    }

    public func register(_ request: RegisterRequest) async throws -> Session {
        try session(try await call("POST", "/register", body: Array(try request.jsonData()), contentType: Self.jsonType))
    }

    public func login(_ request: LoginRequest) async throws -> Session {
        try session(try await call("POST", "/login", body: Array(try request.jsonData()), contentType: Self.jsonType))
    }

    public func recover(_ request: RecoverRequest) async throws -> Session {
        try session(try await call("POST", "/recover", body: Array(try request.jsonData()), contentType: Self.jsonType))
    }

    public func keyring() async throws -> VaultKeyring { try binary(VaultKeyring.self, try await call("GET", "/keyring")) }

    public func replaceKeyring(_ request: KeyringReplaceRequest) async throws {
        _ = try await call("PUT", "/keyring", body: Array(try request.jsonData()), contentType: Self.jsonType)
    }

    public func devices() async throws -> [DeviceInfo] { try json(DeviceList.self, try await call("GET", "/devices?keys=1")).devices }

    public func revokeDevice(_ id: DeviceID, loginSecret: [UInt8]?) async throws {
        if let loginSecret {
            _ = try await call("POST", "/devices/\(id.hex)/revoke", body: Array(try RevokeDeviceRequest(loginSecret: loginSecret).jsonData()),
                               contentType: Self.jsonType)
        } else {
            _ = try await call("DELETE", "/devices/\(id.hex)")
        }
    }

    // MARK: Chunks

    public func missingChunks(_ ids: [ChunkID]) async throws -> [ChunkID] {
        let r = try await call("POST", "/chunks/missing", body: try ChunkIDList(ids: ids).encoded, contentType: Self.binaryType)
        return try binary(ChunkIDList.self, r).ids
    }

    public func putChunk(_ chunk: SealedChunk) async throws {
        _ = try await call("PUT", "/chunks/\(chunk.id.hex)", body: chunk.bytes, contentType: Self.binaryType)
    }

    public func putChunks(_ chunks: [SealedChunk]) async throws {
        _ = try await call("POST", "/chunks/batch", body: try ChunkBatch(chunks: chunks).encoded, contentType: Self.binaryType)
    }

    public func chunk(_ id: ChunkID) async throws -> SealedChunk {
        SealedChunk(id: id, bytes: try await call("GET", "/chunks/\(id.hex)", maxResponse: Self.maxChunkResponse).body)
    }

    // MARK: Journal

    public func append(_ entry: JournalEntry, references: [ChunkID]) async throws -> (seq: JournalSeq, head: ChainHead) {
        let r = try await call("POST", "/journal", body: AppendRequest(entry: entry, references: references).encoded,
                               contentType: Self.binaryType)
        let body = try json(AppendResponse.self, r)
        guard let head = ChainHead(hex: body.head) else { throw RemoteError.malformedResponse("append head") }
        return (JournalSeq(body.seq), head)
    }

    public func entries(after: JournalSeq, limit: Int, wait: Duration) async throws -> EntryPage {
        let seconds = Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18
        let r = try await call("GET", "/journal?after=\(after.rawValue)&limit=\(limit)&wait=\(seconds)&format=\(EntryPage.formatQuery)",
                               timeout: wait + .seconds(60), maxResponse: Self.maxPageResponse)
        var page = try binary(EntryPage.self, r)
        page.keyringGeneration = r.headers[APIv1.keyringGenerationHeader.lowercased()].flatMap { UInt32($0) }
        return page
    }

    public func putCheckpoint(_ stored: [UInt8]) async throws {
        _ = try await call("PUT", "/checkpoint", body: stored, contentType: Self.binaryType)
    }

    public func latestCheckpoint() async throws -> [UInt8]? {
        do { return try await call("GET", "/checkpoint", maxResponse: Self.maxCheckpointResponse).body } catch RemoteError.notFound { return nil }
    }
}
