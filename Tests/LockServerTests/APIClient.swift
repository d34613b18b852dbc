import AsyncHTTPClient
import Foundation
import LockCrypto
import LockWire
import NIOCore
import NIOHTTP1

/// One HTTP client for all server tests (connection pooling, HTTP/1.1).
let sharedHTTPClient = HTTPClient(eventLoopGroupProvider: .singleton)

/// A response: status, headers and body bytes.
struct APIResponse: Sendable {
    let status: Int
    let headers: HTTPHeaders
    let body: [UInt8]

    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]) ?? [:] }
    var errorCode: String? { json["error"] as? String }
}

/// A thin client of the lockfs-server API for tests and benchmarks.
struct APIClient: Sendable {
    let baseURL: String
    var token: String?

    static let binary = APIv1.binaryContentType

    func send(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, contentType: String? = nil,
              headers extra: [(String, String)] = [], timeout: TimeAmount = .seconds(60)) async throws -> APIResponse {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        for (k, v) in extra { request.headers.add(name: k, value: v) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await sharedHTTPClient.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 64 << 20)
        return APIResponse(status: Int(response.status.code), headers: response.headers, body: Array(buffer: bytes))
    }

    func json(_ method: HTTPMethod, _ path: String, _ body: some JSONBody) async throws -> APIResponse {
        try await send(method, path, body: Array(try body.jsonData()), contentType: "application/json")
    }

    // MARK: Conveniences for the routes

    func putChunk(_ chunk: SealedChunk) async throws -> APIResponse {
        try await send(.PUT, "/v1/chunks/\(chunk.id.hex)", body: chunk.bytes, contentType: Self.binary)
    }

    func getChunk(_ id: ChunkID) async throws -> APIResponse { try await send(.GET, "/v1/chunks/\(id.hex)") }

    func missing(_ ids: [ChunkID]) async throws -> [ChunkID] {
        let r = try await send(.POST, "/v1/chunks/missing", body: try ChunkIDList(ids: ids).encoded, contentType: Self.binary)
        guard r.status == 200 else { throw TestFailure("missing: HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
        return try ChunkIDList(decoding: r.body).ids
    }

    func putBatch(_ chunks: [SealedChunk]) async throws -> APIResponse {
        try await send(.POST, "/v1/chunks/batch", body: try ChunkBatch(chunks: chunks).encoded, contentType: Self.binary)
    }

    func append(_ entry: JournalEntry, references: [ChunkID]) async throws -> APIResponse {
        try await send(.POST, "/v1/journal", body: AppendRequest(entry: entry, references: references).encoded, contentType: Self.binary)
    }

    func pull(after: UInt64, limit: Int = 1000, wait: Double = 0) async throws -> EntryPage {
        let r = try await send(.GET, "/v1/journal?after=\(after)&limit=\(limit)&wait=\(wait)", timeout: .seconds(120))
        guard r.status == 200 else { throw TestFailure("pull: HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
        return try EntryPage(decoding: r.body)
    }
}

/// A vault and the account that holds it, as a client would make them.
struct TestVault: Sendable {
    let user: String
    let password: String
    let keys: VaultKeys
    let parameters: KDFParameters
    let keyring: Keyring
    let loginSecret: [UInt8]

    /// Fast (INTERACTIVE) Argon2id parameters, still above the client's floor.
    static func make(user: String, password: String = "correct horse battery staple") throws -> TestVault {
        let keys = VaultKeys.generate()
        let parameters = KDFParameters.generate(.interactive)
        let pw = try PasswordKeys.derive(password: password, parameters: parameters)
        let keyring = try Keyring.make(keys: keys, password: pw, parameters: parameters, recovery: .generate())
        return TestVault(user: user, password: password, keys: keys, parameters: parameters, keyring: keyring,
                         loginSecret: pw.loginSecret.withUnsafeBytes { Array($0) })
    }

    /// Registers on `server` (with an invite made by the admin command) and returns a logged-in client.
    func register(on server: ServerProcess, deviceName: String = "test device") async throws -> APIClient {
        let invite = try server.admin(["user", "add", user]).output.split(separator: "\n").last.map(String.init) ?? ""
        let client = APIClient(baseURL: server.baseURL)
        let r = try await client.json(.POST, "/v1/register", RegisterRequest(
            user: user, invite: invite, loginSecret: loginSecret, keyring: keyring, deviceName: deviceName))
        guard r.status == 201, let token = r.json["token"] as? String else {
            throw TestFailure("register \(user): HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
        return APIClient(baseURL: server.baseURL, token: token)
    }

    /// A sealed chunk of `text`.
    func chunk(_ text: String) throws -> SealedChunk { try Array(text.utf8).withUnsafeBytes { try keys.sealChunk($0) } }

    /// A one-operation entry creating a file with `manifest`, sealed at (`seq`, `head`).
    func entry(creating name: String, manifest: Manifest = .empty, baseSeq: JournalSeq, baseHead: ChainHead) throws -> JournalEntry {
        let op = Operation.create(node: .random(), parent: .root, name: try Name(name), revision: .random(),
                                  attributes: try NodeAttributes(mode: 0o644, mtime: Timestamp(nanoseconds: 0)),
                                  content: .file(manifest))
        let batch = try OperationBatch(device: .random(), createdAt: Timestamp(nanoseconds: 0), operations: [op])
        return try JournalEntry.seal(batch, keys: keys, baseSeq: baseSeq, baseHead: baseHead)
    }

    var genesis: ChainHead { ChainHead.genesis(of: keys.vaultID) }
}
