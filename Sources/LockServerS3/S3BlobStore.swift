import AsyncHTTPClient
import Foundation
import LockCrypto
import LockServer
import NIOCore
import NIOHTTP1

/// Blobs as objects in an S3-compatible store (AWS S3, MinIO, Ceph RGW,
/// Garage): object `PREFIX` + `VAULTHEX/CHUNKHEX` in one bucket.
///
/// - A put is one `PUT` with `If-None-Match: *`: the store creates the
///   object only if the name is free, and answers 412 when it is taken —
///   a success here, since a blob's name is its content's id and the first
///   one stays (the `BlobStore` contract). An S3 PUT is atomic: the object
///   appears whole once the store has it all, or not at all.
/// - The body is bound by `x-amz-content-sha256` (its SHA-256, signed):
///   the store refuses a body that does not match, so a truncated or
///   altered upload is never stored as complete.
/// - Every request is retried on connection errors, time-outs, 5xx, 429
///   and 409 (a concurrent conditional write), with exponential backoff,
///   a bounded number of times, each attempt with a time limit; then the
///   store throws `ServerError.unavailable`, which the routes answer with
///   a retryable 503.
/// - `put(batch:)` keeps at most `maxConcurrentRequests` requests in flight.
///
/// See docs/design.md, "S3-compatible blob store".
public final class S3BlobStore: BlobStore {
    /// Limits and retries.
    public struct Configuration: Sendable {
        /// Tries per request (1 = no retry). With the defaults a dead store
        /// fails a request in about 10 s (3 × 3 s to connect, plus backoff), a
        /// store that accepts but never answers in about 46 s — inside the
        /// client's 120 s request time-out, so the client sees the 503.
        public var attempts = 3
        /// Time limit of one try, from sending to the last byte of the answer
        /// (a 4.2 MiB envelope needs 2.3 Mbit/s to fit).
        public var attemptTimeout: Duration = .seconds(15)
        /// Wait before the second try; doubled each time (plus up to 50 % jitter), at most `maxBackoff`.
        public var backoff: Duration = .milliseconds(200)
        public var maxBackoff: Duration = .seconds(2)
        /// Requests in flight for one `put(batch:)` or `deleteAll`.
        public var maxConcurrentRequests = 8
        /// Largest object body read back (a chunk envelope is at most about 4.2 MiB).
        public var maxObjectSize = 64 << 20

        public init() {}
    }

    public let location: S3Location
    public let configuration: Configuration
    private let signer: SigV4Signer
    private let client: HTTPClient

    /// One HTTP client for every S3 store of the process, never shut down
    /// (a store lives as long as its process): 16 connections per host,
    /// 3 s to connect, no redirects (a redirected request would be signed
    /// for the wrong host).
    private static let sharedClient = HTTPClient(
        eventLoopGroup: HTTPClient.defaultEventLoopGroup,
        configuration: HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(3), read: .seconds(30)),
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 16)))

    public init(location: S3Location, credentials: S3Credentials, configuration: Configuration = .init()) {
        self.location = location
        self.configuration = configuration
        self.signer = SigV4Signer(credentials: credentials, region: location.region)
        self.client = Self.sharedClient
    }

    /// The object name of a blob.
    public func objectName(_ key: BlobKey) -> String { location.prefix + key.description }

    // MARK: BlobStore

    public func put(_ bytes: [UInt8], for key: BlobKey) async throws {
        let name = objectName(key)
        let response = try await send("PUT", key: name, body: bytes,
                                      headers: [("Content-Type", "application/octet-stream"), ("If-None-Match", "*")],
                                      accept: [200, 201, 204, 412], what: "store \(name)")
        _ = response  // 412: the name is taken, by this blob (first wins)
    }

    public func put(batch: [(key: BlobKey, bytes: [UInt8])]) async throws {
        try await forEach(batch) { item in try await self.put(item.bytes, for: item.key) }
    }

    public func get(_ key: BlobKey) async throws -> [UInt8]? {
        let name = objectName(key)
        let response = try await send("GET", key: name, accept: [200, 404], what: "read \(name)")
        return response.status == 404 ? nil : response.body
    }

    public func exists(_ key: BlobKey) async throws -> Bool {
        let name = objectName(key)
        return try await send("HEAD", key: name, accept: [200, 404], what: "look up \(name)").status == 200
    }

    public func delete(_ key: BlobKey) async throws {
        let name = objectName(key)
        _ = try await send("DELETE", key: name, accept: [200, 204, 404], what: "delete \(name)")
    }

    /// Lists the vault's objects (ListObjectsV2, prefix `PREFIX` + `VAULTHEX/`,
    /// a page of up to 1,000 at a time) and deletes them, `maxConcurrentRequests`
    /// at a time. Single DELETEs, not DeleteObjects: every S3-compatible store
    /// has them, and removing an account is rare.
    public func deleteAll(vault: VaultID) async throws {
        try await forEachPage(of: vault) { names in
            try await self.forEach(names) { name in
                _ = try await self.send("DELETE", key: name, accept: [200, 204, 404], what: "delete \(name)")
            }
        }
    }

    /// The chunks of `vault` in the bucket (a listing, one request per 1,000
    /// objects): what `lockfs-server migrate` need not copy again.
    /// Objects under the vault's prefix whose name is not a chunk id are ignored.
    /// - Throws: `ServerError.unavailable` when the store fails.
    public func storedChunks(vault: VaultID) async throws -> Set<ChunkID> {
        let prefix = location.prefix + vault.hex + "/"
        var out: Set<ChunkID> = []
        try await forEachPage(of: vault) { names in
            for name in names where name.hasPrefix(prefix) {
                if let id = ChunkID(hex: name.dropFirst(prefix.count)) { out.insert(id) }
            }
        }
        return out
    }

    /// Calls `body` with the object names of each listing page under `PREFIX` + `VAULTHEX/`.
    private func forEachPage(of vault: VaultID, _ body: ([String]) async throws -> Void) async throws {
        let prefix = location.prefix + vault.hex + "/"
        var token: String? = nil
        repeat {
            var query = [("list-type", "2"), ("prefix", prefix)]
            if let token { query.append(("continuation-token", token)) }
            let page = try await send("GET", key: "", query: query, accept: [200], what: "list \(prefix)")
            let listing = ListObjectsV2Page(xml: String(decoding: page.body, as: UTF8.self))
            try await body(listing.keys)
            token = listing.isTruncated ? listing.nextContinuationToken : nil
            if listing.isTruncated && token == nil {
                throw ServerError.unavailable("object store: a truncated listing of \(prefix) came without a continuation token")
            }
        } while token != nil
    }

    /// Checks that the bucket exists and the credentials are accepted (HEAD on the bucket).
    /// - Throws: `ServerError.unavailable` with the store's answer.
    public func checkBucket() async throws {
        let response = try await send("HEAD", key: "", accept: [200, 403, 404], what: "open bucket \(location.bucket)")
        switch response.status {
        case 404: throw ServerError.unavailable("object store: bucket \(location.bucket) does not exist at \(location.description); create it first")
        case 403: throw ServerError.unavailable("object store: access to bucket \(location.bucket) was refused (403): check the credentials and the bucket policy")
        default: return
        }
    }

    // MARK: Requests

    struct Answer: Sendable {
        let status: Int
        let body: [UInt8]
    }

    /// Sends a signed request and returns an answer whose status is in
    /// `accept`, retrying transient failures; anything else is
    /// `ServerError.unavailable` naming `what` failed and why.
    func send(_ method: String, key: String, query: [(String, String)] = [], body: [UInt8] = [],
              headers: [(String, String)] = [], accept: Set<Int>, what: String) async throws -> Answer {
        let payloadSHA256 = body.isEmpty ? SigV4Signer.emptyPayloadSHA256 : Hex.encode(SHA256.hash(body))
        var lastReason = ""
        for attempt in 0..<max(1, configuration.attempts) {
            if attempt > 0 { try await Task.sleep(for: backoff(before: attempt)) }
            do {
                let answer = try await withTimeout(configuration.attemptTimeout) {
                    try await self.once(method, key: key, query: query, body: body, headers: headers, payloadSHA256: payloadSHA256)
                }
                if accept.contains(answer.status) { return answer }
                let reason = Self.describe(status: answer.status, body: answer.body)
                guard [409, 429, 500, 502, 503, 504].contains(answer.status) else {
                    throw ServerError.unavailable("object store: cannot \(what): \(reason)")
                }
                lastReason = reason
            } catch is CancellationError where !Task.isCancelled {
                lastReason = "no answer within \(configuration.attemptTimeout)"
            } catch let error as ServerError {
                throw error
            } catch {
                if Task.isCancelled { throw error }
                lastReason = "\(error)"
            }
        }
        throw ServerError.unavailable("object store: cannot \(what) after \(configuration.attempts) tries: \(lastReason)")
    }

    /// One signed try.
    private func once(_ method: String, key: String, query: [(String, String)], body: [UInt8],
                      headers extra: [(String, String)], payloadSHA256: String) async throws -> Answer {
        let path = location.path(forKey: key)
        let amzDate = SigV4Signer.amzDate(Date())
        var headers: [(String, String)] = [
            ("Host", location.hostHeader),
            ("x-amz-date", amzDate),
            ("x-amz-content-sha256", payloadSHA256),
        ] + extra
        if let token = signer.credentials.sessionToken { headers.append(("x-amz-security-token", token)) }
        let signature = signer.sign(.init(method: method, path: path, query: query, headers: headers, payloadSHA256: payloadSHA256),
                                    amzDate: amzDate)
        var request = HTTPClientRequest(url: location.url(path: path, query: query))
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.headers.add(name: "Authorization", value: signature.authorization)
        if !body.isEmpty || method == "PUT" { request.body = .bytes(body) }
        let response = try await client.execute(request, deadline: .distantFuture)
        let limit = method == "HEAD" ? 0 : configuration.maxObjectSize
        do {
            let buffer = try await response.body.collect(upTo: limit)
            return Answer(status: Int(response.status.code), body: Array(buffer.readableBytesView))
        } catch is NIOTooManyBytesError {
            throw ServerError.unavailable("object store: the answer to \(method) \(key) is larger than \(limit) bytes")
        }
    }

    private func backoff(before attempt: Int) -> Duration {
        var wait = configuration.backoff
        for _ in 1..<attempt { wait = min(wait * 2, configuration.maxBackoff) }
        return wait + wait * Double.random(in: 0..<0.5)
    }

    /// The store's error code and message (`<Code>`, `<Message>` of its XML body), with the status.
    static func describe(status: Int, body: [UInt8]) -> String {
        let xml = String(decoding: body.prefix(4096), as: UTF8.self)
        let code = XMLText.first("Code", in: xml), message = XMLText.first("Message", in: xml)
        return "HTTP \(status)" + (code.map { " \($0)" } ?? "") + (message.map { ": \($0)" } ?? "")
    }

    /// Runs `body` for every item, at most `maxConcurrentRequests` at once; the first error cancels the rest.
    private func forEach<T: Sendable>(_ items: [T], _ body: @escaping @Sendable (T) async throws -> Void) async throws {
        let width = max(1, configuration.maxConcurrentRequests)
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            while next < items.count && next < width {
                let item = items[next]
                group.addTask { try await body(item) }
                next += 1
            }
            while try await group.next() != nil {
                if next < items.count {
                    let item = items[next]
                    group.addTask { try await body(item) }
                    next += 1
                }
            }
        }
    }
}

/// Runs `body`, cancelling it after `limit` (then throws `CancellationError`).
func withTimeout<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw CancellationError() }
        return value
    }
}

/// The parts of a ListObjectsV2 answer the store needs.
struct ListObjectsV2Page {
    var keys: [String] = []
    var isTruncated = false
    var nextContinuationToken: String?

    init(xml: String) {
        keys = XMLText.all("Key", in: xml)
        isTruncated = XMLText.first("IsTruncated", in: xml) == "true"
        nextContinuationToken = XMLText.first("NextContinuationToken", in: xml)
    }
}

/// Text of simple XML elements (`<Name>text</Name>`, no attributes, no
/// nesting), entities decoded. Enough for S3's listings and errors, whose
/// elements are of that form; no XML library needed.
enum XMLText {
    static func all(_ name: String, in xml: String) -> [String] {
        var out: [String] = []
        var rest = xml[...]
        let open = "<\(name)>", close = "</\(name)>"
        while let start = rest.range(of: open), let end = rest.range(of: close, range: start.upperBound..<rest.endIndex) {
            out.append(decode(String(rest[start.upperBound..<end.lowerBound])))
            rest = rest[end.upperBound...]
        }
        return out
    }

    static func first(_ name: String, in xml: String) -> String? {
        let open = "<\(name)>", close = "</\(name)>"
        guard let start = xml.range(of: open), let end = xml.range(of: close, range: start.upperBound..<xml.endIndex) else { return nil }
        return decode(String(xml[start.upperBound..<end.lowerBound]))
    }

    static func decode(_ text: String) -> String {
        guard text.contains("&") else { return text }
        return text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&#13;", with: "\r").replacingOccurrences(of: "&amp;", with: "&")
    }
}
