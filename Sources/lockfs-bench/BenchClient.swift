import AsyncHTTPClient
import Foundation
import LockCrypto
import LockWire
import NIOCore
import NIOHTTP1

/// A response whose body was read whole.
struct BenchResponse: Sendable {
    let status: Int
    let body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]) ?? [:] }
}

/// A thin client of the lockfs-server API over AsyncHTTPClient (HTTP/1.1,
/// pooled keep-alive connections; up to `connections` at once per host).
struct BenchClient: Sendable {
    let http: HTTPClient
    let baseURL: String
    var token: String?

    static let binary = APIv1.binaryContentType

    static func makeHTTPClient(connections: Int) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(120), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        configuration.timeout = .init(connect: .seconds(10), read: .seconds(120))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    private func request(_ method: HTTPMethod, _ path: String, body: ByteBuffer?, contentType: String?) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        if let body { request.body = .bytes(body) }
        return request
    }

    /// Sends a request and reads the whole answer.
    func send(_ method: HTTPMethod, _ path: String, body: ByteBuffer? = nil, contentType: String? = nil,
              timeout: TimeAmount = .seconds(120)) async throws -> BenchResponse {
        let response = try await http.execute(request(method, path, body: body, contentType: contentType), timeout: timeout)
        let bytes = try await response.body.collect(upTo: 64 << 20)
        return BenchResponse(status: Int(response.status.code), body: Array(buffer: bytes))
    }

    /// Sends a request and counts the answer's body bytes without keeping them.
    func sendCounting(_ method: HTTPMethod, _ path: String, body: ByteBuffer? = nil, contentType: String? = nil,
                      timeout: TimeAmount = .seconds(120)) async throws -> (status: Int, bytes: Int) {
        let response = try await http.execute(request(method, path, body: body, contentType: contentType), timeout: timeout)
        var n = 0
        for try await part in response.body { n += part.readableBytes }
        return (Int(response.status.code), n)
    }

    /// Fails unless the status is `expected`.
    @discardableResult
    func expect(_ expected: Int, _ what: String, _ method: HTTPMethod, _ path: String, body: ByteBuffer? = nil,
                contentType: String? = nil) async throws -> BenchResponse {
        let r = try await send(method, path, body: body, contentType: contentType)
        guard r.status == expected else { throw BenchFailure("\(what): HTTP \(r.status) \(r.text.prefix(500))") }
        return r
    }

    // MARK: Routes

    /// `PUT /v1/chunks/:id` with a prepared body.
    func putChunk(id: String, body: ByteBuffer) async throws {
        let (status, _) = try await sendCounting(.PUT, "/v1/chunks/\(id)", body: body, contentType: Self.binary)
        guard status == 201 else { throw BenchFailure("PUT chunk \(id): HTTP \(status)") }
    }

    /// `GET /v1/chunks/:id`; returns the body size.
    func getChunk(id: String) async throws -> Int {
        let (status, bytes) = try await sendCounting(.GET, "/v1/chunks/\(id)")
        guard status == 200 else { throw BenchFailure("GET chunk \(id): HTTP \(status)") }
        return bytes
    }

    /// `POST /v1/chunks/batch` with a prepared ChunkBatch body.
    func putBatch(body: ByteBuffer) async throws {
        let (status, _) = try await sendCounting(.POST, "/v1/chunks/batch", body: body, contentType: Self.binary)
        guard status == 201 else { throw BenchFailure("POST chunks/batch: HTTP \(status)") }
    }

    /// `POST /v1/journal`; returns the server's (seq, head).
    func append(_ entry: JournalEntry) async throws -> (JournalSeq, ChainHead) {
        let body = ByteBuffer(bytes: AppendRequest(entry: entry, references: []).encoded)
        let r = try await expect(201, "append", .POST, "/v1/journal", body: body, contentType: Self.binary)
        let answer = try AppendResponse.decodeStrictly(Data(r.body))
        guard let head = ChainHead(hex: answer.head) else { throw BenchFailure("append: bad head \(answer.head)") }
        return (JournalSeq(answer.seq), head)
    }

    /// A gauge or counter of `GET /metrics` (the sample without labels).
    func metric(_ name: String) async throws -> Double? {
        let r = try await expect(200, "metrics", .GET, "/metrics")
        for line in r.text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1).split(separator: " ").first ?? "")
        }
        return nil
    }
}
