import AsyncHTTPClient
import Foundation
import LockTesting
import LockCrypto
import LockWire
import NIOCore
import NIOHTTP1

/// The keys of every device the server tests enrol (the server wants a new
/// device's keys, and appends only entries its key signed).
let testIdentity = DeviceIdentity.generate()
let testDeviceKeys = DevicePublicKeys(testIdentity)

/// The device a TestVault registered, which its entries are signed as.
final class RegisteredDevice: @unchecked Sendable {
    var id: DeviceID?
}

/// One HTTP client for all server tests (connection pooling, HTTP/1.1).
let sharedHTTPClient = HTTPClient(eventLoopGroupProvider: .singleton)

/// A client that holds up to 64 connections to one host (the shared one
/// queues requests past 8): for tests of many requests held open at once.
let wideHTTPClient: HTTPClient = {
    var configuration = HTTPClient.Configuration()
    configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
}()

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
    var http: HTTPClient = sharedHTTPClient

    static let binary = APIv1.binaryContentType

    func send(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, contentType: String? = nil,
              headers extra: [(String, String)] = [], timeout: TimeAmount = .seconds(60)) async throws -> APIResponse {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        for (k, v) in extra { request.headers.add(name: k, value: v) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await http.execute(request, timeout: timeout)
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

    /// - Parameter format: "2" asks for version 2 pages (with the head at `after`).
    func pull(after: UInt64, limit: Int = 1000, wait: Double = 0, format: String? = nil) async throws -> EntryPage {
        let r = try await send(.GET, "/v1/journal?after=\(after)&limit=\(limit)&wait=\(wait)" + (format.map { "&format=\($0)" } ?? ""),
                               timeout: .seconds(120))
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
    let recovery: RecoveryKey
    var recoveryProof: [UInt8] { recovery.proof.withUnsafeBytes { Array($0) } }
    /// Set by `register(on:)`: `entry(…)` signs as that device.
    let registered = RegisteredDevice()

    /// Fast (INTERACTIVE) Argon2id parameters, still above the client's floor.
    static func make(user: String, password: String = "correct horse battery staple") throws -> TestVault {
        let keys = VaultKeys.generate()
        let parameters = KDFParameters.generate(.interactive)
        let pw = try PasswordKeys.derive(password: password, parameters: parameters)
        let recovery = RecoveryKey.generate()
        let keyring = try Keyring.make(keys: keys, password: pw, parameters: parameters, recovery: recovery)
        return TestVault(user: user, password: password, keys: keys, parameters: parameters, keyring: keyring,
                         loginSecret: pw.loginSecret.withUnsafeBytes { Array($0) }, recovery: recovery)
    }

    /// Registers on `server` (with an invite made by the admin command) and returns a logged-in client.
    func register(on server: ServerProcess, deviceName: String = "test device") async throws -> APIClient {
        let invite = try await server.admin(["user", "add", user]).output.split(separator: "\n").last.map(String.init) ?? ""
        let client = APIClient(baseURL: server.baseURL)
        let r = try await client.json(.POST, "/v1/register", RegisterRequest(
            user: user, invite: invite, loginSecret: loginSecret, keyring: keyring, deviceName: deviceName, recoveryProof: recoveryProof, device: testDeviceKeys))
        guard r.status == 201, let token = r.json["token"] as? String, let device = (r.json["device"] as? String).flatMap(DeviceID.init(hex:)) else {
            throw TestFailure("register \(user): HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
        registered.id = device
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
        let entry = try JournalEntry.seal(batch, keys: keys, baseSeq: baseSeq, baseHead: baseHead)
        // Signed as the registered device, which is what appends it in these tests.
        return registered.id.map { entry.signed(by: testIdentity, device: $0, vault: keys.vaultID) } ?? entry
    }

    var genesis: ChainHead { ChainHead.genesis(of: keys.vaultID) }
}

// MARK: - Helpers for IsolationTests, BadInputTests and AdminTests

extension APIClient {
    /// The same server with another token (nil: none).
    func with(token: String?) -> APIClient { APIClient(baseURL: baseURL, token: token) }

    /// `GET /v1/account`, decoded; throws unless 200.
    func accountInfo() async throws -> AccountInfo {
        let r = try await send(.GET, "/v1/account")
        guard r.status == 200 else { throw TestFailure("account: HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
        return try AccountInfo.decodeStrictly(Data(r.body))
    }

    /// `GET /v1/devices`, decoded; throws unless 200.
    func deviceList() async throws -> [DeviceInfo] {
        let r = try await send(.GET, "/v1/devices")
        guard r.status == 200 else { throw TestFailure("devices: HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
        return try DeviceList.decodeStrictly(Data(r.body)).devices
    }

    /// The id of the device whose token this client holds.
    func currentDeviceID() async throws -> String {
        guard let me = try await deviceList().first(where: \.current) else { throw TestFailure("devices: no current device") }
        return me.id
    }

    /// `GET /v1/health`'s status.
    func healthStatus() async throws -> Int { try await with(token: nil).send(.GET, "/v1/health", timeout: .seconds(10)).status }
}

extension TestVault {
    /// Logs in a further device; returns its client and device id (hex).
    func login(on server: ServerProcess, deviceName: String = "another device") async throws -> (APIClient, String) {
        let r = try await APIClient(baseURL: server.baseURL).json(.POST, "/v1/login",
                                                                  LoginRequest(user: user, loginSecret: loginSecret, deviceName: deviceName, device: testDeviceKeys))
        guard r.status == 200, let token = r.json["token"] as? String, let device = r.json["device"] as? String else {
            throw TestFailure("login \(user): HTTP \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
        return (APIClient(baseURL: server.baseURL, token: token), device)
    }

    /// A sealed checkpoint of an empty tree at (`seq`, `head`), as stored on the server.
    func checkpoint(seq: JournalSeq, head: ChainHead) throws -> [UInt8] {
        try Checkpoint(seq: seq, head: head, nodeCount: 0, state: .empty).sealed(keys: keys)
    }
}

extension ServerProcess {
    /// `user add NAME` and its invite code (the last line); throws if the command fails.
    func inviteCode(for user: String) async throws -> String {
        let (status, output) = try await admin(["user", "add", user])
        guard status == 0, let code = output.split(separator: "\n").last.map(String.init) else {
            throw TestFailure("user add \(user): exit \(status): \(output)")
        }
        return code
    }
}

/// A raw TCP connection to 127.0.0.1, for bytes no HTTP client would send.
/// Blocking calls run on a Dispatch queue, never on the cooperative pool.
final class RawTCPConnection: @unchecked Sendable {
    private let fd: Int32

    init(port: Int, receiveTimeout: Duration = .seconds(5)) throws {
        #if canImport(Glibc)
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let s = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard s >= 0 else { throw TestFailure("socket: errno \(errno)") }
        var tv = timeval(tv_sec: Int(receiveTimeout.components.seconds),
                         tv_usec: Int(receiveTimeout.components.attoseconds / 1_000_000_000_000))
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port)).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(s); throw TestFailure("connect: errno \(errno)") }
        fd = s
    }

    /// Writes all of `bytes`; false if the peer closed the connection first.
    func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }

    /// Reads until the peer closes (closed: true) or the receive timeout passes (closed: false).
    func readUntilClosed() async -> (bytes: [UInt8], closed: Bool) {
        let fd = self.fd
        return await withCheckedContinuation { c in
            DispatchQueue.global().async {
                var out: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, 4096, 0) }
                    if n > 0 { out += buffer[0..<n]; continue }
                    if n == 0 { c.resume(returning: (out, true)); return }
                    if errno == EINTR { continue }
                    // ECONNRESET counts as closed; EAGAIN is the timeout.
                    c.resume(returning: (out, errno != EAGAIN && errno != EWOULDBLOCK))
                    return
                }
            }
        }
    }

    deinit { close(fd) }
}

extension ServerProcess {
    /// Waits until the server's metrics gauge shows `count` open long-polls
    /// (a poll just sent may not be waiting yet); false after `limit`.
    func longPollsOpen(_ count: Int, within limit: Duration = .seconds(10)) async -> Bool {
        await PostgresFixture.eventually(within: limit) {
            let m = try? await APIClient(baseURL: baseURL).send(.GET, "/metrics")
            return m.map { String(decoding: $0.body, as: UTF8.self).contains("lockfs_long_polls_open \(count)") } ?? false
        }
    }
}
