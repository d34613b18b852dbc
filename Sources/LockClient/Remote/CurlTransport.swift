import CCurl
import Foundation
import Synchronization

/// An HTTP request for `CurlTransport`.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]?
    /// The whole transfer must finish within this (a long-poll sets it above its wait).
    public var timeout: Duration
    /// The largest response body accepted: a longer one ends the transfer
    /// with `TransportError.responseTooLarge` (a server cannot make the
    /// client hold a gigabyte).
    public var maxResponseBytes: Int

    public init(method: String, url: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
                timeout: Duration = .seconds(120), maxResponseBytes: Int = 1 << 20) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.maxResponseBytes = maxResponseBytes
    }
}

/// An HTTP response: status, the headers lockfs reads, and the body.
public struct HTTPResponse: Sendable {
    public let status: Int
    public let contentType: String?
    public let retryAfter: Int?
    public let body: [UInt8]
    /// Every response header, names in lower case.
    public var headers: [String: String] = [:]
}

/// Why a transfer produced no HTTP response (always worth a retry).
public struct TransportError: Error, Sendable, CustomStringConvertible {
    public let code: Int
    public let message: String
    public var description: String { "network error: \(message) (curl \(code))" }

    /// The code of a response longer than the request allowed.
    public static let responseTooLargeCode = -2
    public var isResponseTooLarge: Bool { code == Self.responseTooLargeCode }
}

/// TLS and connection settings.
public struct TransportSettings: Sendable {
    /// A PEM file of CA certificates to trust instead of the system's (a private CA).
    public var caFile: String?
    public var connectTimeout: Duration = .seconds(10)
    /// Connections kept per host (transfers beyond it queue).
    public var maxConnectionsPerHost = 8
    public init(caFile: String? = nil) { self.caFile = caFile }
}

/// libcurl's multi interface on one dedicated thread.
///
/// Transfers from any task are queued, added to one multi handle (which
/// keeps connections alive and reuses them) and driven together; each
/// caller awaits its own continuation. TLS peer and host verification stay
/// on (libcurl's default); `caFile` replaces the trusted roots.
///
/// Thread safety: the multi handle and `active` are used only by the driver
/// thread, except `curl_multi_wakeup`, which libcurl makes safe to call from
/// any thread; everything else shared is behind `state`'s mutex.
public final class CurlTransport: @unchecked Sendable {
    private final class Transfer: @unchecked Sendable {
        let easy: UnsafeMutableRawPointer
        var headerList: UnsafeMutablePointer<curl_slist>?
        /// The request body, copied to memory that stays put until cleanup.
        var requestBody: UnsafeMutableRawBufferPointer?
        var responseBody: [UInt8] = []
        var maxResponseBytes = 1 << 20
        var tooLarge = false
        var responseHeaders: [String: String] = [:]
        var continuation: CheckedContinuation<HTTPResponse, any Error>?
        let id: UInt64

        init(easy: UnsafeMutableRawPointer, requestBody: [UInt8]?, id: UInt64) {
            self.easy = easy
            self.id = id
            if let body = requestBody {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(body.count, 1), alignment: 1)
                body.withUnsafeBytes { buffer.copyMemory(from: $0) }
                self.requestBody = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<body.count])
            }
        }
    }

    private struct State {
        var pending: [Transfer] = []
        var cancelled: [UInt64] = []
        var running = true
        var nextID: UInt64 = 0
    }

    private let multi: UnsafeMutableRawPointer
    private let settings: TransportSettings
    private let state = Mutex(State())
    /// Transfers in the multi handle; touched only by the driver thread.
    private nonisolated(unsafe) var active: [UInt64: Transfer] = [:]

    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    public init(settings: TransportSettings = .init()) {
        _ = Self.globalInit
        multi = curl_multi_init()
        self.settings = settings
        _ = lockfs_curl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, settings.maxConnectionsPerHost)
        // The driver thread holds the transport until `shutdown()`.
        let t = Thread { self.drive() }
        t.name = "lockfs-curl"
        t.start()
    }

    /// Stops the driver thread; transfers in flight fail. Call it when done.
    public func shutdown() {
        let wasRunning = state.withLock { s -> Bool in
            defer { s.running = false }
            return s.running
        }
        if wasRunning { curl_multi_wakeup(multi) }
    }

    /// Performs `request`. Throws `TransportError` when no response arrived
    /// (connection refused, timeout, TLS failure…); HTTP errors are responses.
    public func perform(_ request: HTTPRequest) async throws -> HTTPResponse {
        guard let easy = curl_easy_init() else { throw TransportError(code: -1, message: "curl_easy_init failed") }
        let id = state.withLock { s -> UInt64 in s.nextID += 1; return s.nextID }
        let transfer = Transfer(easy: easy, requestBody: request.body, id: id)
        configure(transfer, request)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                transfer.continuation = continuation
                let accepted = state.withLock { s -> Bool in
                    guard s.running else { return false }
                    s.pending.append(transfer)
                    return true
                }
                if accepted {
                    curl_multi_wakeup(multi)
                } else {
                    Self.cleanup(transfer)
                    continuation.resume(throwing: TransportError(code: -1, message: "the HTTP client is shut down"))
                }
            }
        } onCancel: {
            state.withLock { $0.cancelled.append(id) }
            curl_multi_wakeup(multi)
        }
    }

    private func configure(_ t: Transfer, _ r: HTTPRequest) {
        let easy = t.easy
        r.url.withCString { _ = lockfs_curl_setopt_ptr(easy, CURLOPT_URL, $0) }  // libcurl copies strings
        _ = lockfs_curl_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = lockfs_curl_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1)
        _ = lockfs_curl_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(settings.connectTimeout.components.seconds * 1000))
        _ = lockfs_curl_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(r.timeout.components.seconds * 1000 + r.timeout.components.attoseconds / 1_000_000_000_000_000))
        if let ca = settings.caFile { ca.withCString { _ = lockfs_curl_setopt_ptr(easy, CURLOPT_CAINFO, $0) } }
        // A Content-Length above the limit is refused before the body comes.
        t.maxResponseBytes = r.maxResponseBytes
        _ = lockfs_curl_setopt_off(easy, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(r.maxResponseBytes))
        switch r.method {
        case "GET": _ = lockfs_curl_setopt_long(easy, CURLOPT_HTTPGET, 1)
        default: r.method.withCString { _ = lockfs_curl_setopt_ptr(easy, CURLOPT_CUSTOMREQUEST, $0) }
        }
        var list: UnsafeMutablePointer<curl_slist>? = nil
        for (k, v) in r.headers { list = curl_slist_append(list, "\(k): \(v)") }
        if r.method != "GET" {
            // libcurl reads the body from the transfer's own copy, which lives
            // until the transfer is cleaned up.
            let count = t.requestBody?.count ?? 0
            _ = lockfs_curl_setopt_off(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(count))
            _ = lockfs_curl_setopt_ptr(easy, CURLOPT_POSTFIELDS, UnsafeRawPointer(t.requestBody?.baseAddress) ?? UnsafeRawPointer(("" as StaticString).utf8Start))
            list = curl_slist_append(list, "Expect:")  // no 100-continue round trip
        }
        t.headerList = list
        _ = lockfs_curl_setopt_ptr(easy, CURLOPT_HTTPHEADER, UnsafeRawPointer(list))
        let box = Unmanaged.passUnretained(t).toOpaque()
        _ = lockfs_curl_setopt_write(easy) { data, size, count, user in
            let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            guard t.responseBody.count + n <= t.maxResponseBytes else {
                t.tooLarge = true
                return 0  // libcurl ends the transfer (CURLE_WRITE_ERROR)
            }
            data!.withMemoryRebound(to: UInt8.self, capacity: n) { t.responseBody.append(contentsOf: UnsafeBufferPointer(start: $0, count: n)) }
            return n
        }
        _ = lockfs_curl_setopt_ptr(easy, CURLOPT_WRITEDATA, box)
        _ = lockfs_curl_setopt_header(easy) { data, size, count, user in
            let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            let line = data!.withMemoryRebound(to: UInt8.self, capacity: n) { String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self) }
            if line.hasPrefix("HTTP/") {
                t.responseHeaders.removeAll()  // a new response (after 100 Continue or a redirect)
            } else if let colon = line.firstIndex(of: ":") {
                t.responseHeaders[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
            }
            return n
        }
        _ = lockfs_curl_setopt_ptr(easy, CURLOPT_HEADERDATA, box)
        _ = lockfs_curl_setopt_ptr(easy, CURLOPT_PRIVATE, box)
    }

    /// The driver loop: add queued transfers, perform, complete, poll.
    private func drive() {
        while true {
            let (incoming, cancelled, running) = state.withLock { s -> ([Transfer], [UInt64], Bool) in
                defer { s.pending.removeAll(); s.cancelled.removeAll() }
                return (s.pending, s.cancelled, s.running)
            }
            for t in incoming {
                active[t.id] = t
                curl_multi_add_handle(multi, t.easy)
            }
            for id in cancelled {
                if let t = active.removeValue(forKey: id) {
                    curl_multi_remove_handle(multi, t.easy)
                    finish(t, .failure(CancellationError()))
                }
            }
            if !running {
                for (_, t) in active {
                    curl_multi_remove_handle(multi, t.easy)
                    finish(t, .failure(TransportError(code: -1, message: "the HTTP client is shut down")))
                }
                active.removeAll()
                curl_multi_cleanup(multi)
                return
            }
            var stillRunning: Int32 = 0
            curl_multi_perform(multi, &stillRunning)
            var queued: Int32 = 0
            while let msg = curl_multi_info_read(multi, &queued) {
                guard msg.pointee.msg == CURLMSG_DONE, let easy = msg.pointee.easy_handle else { continue }
                let result = msg.pointee.data.result
                var priv: UnsafeMutableRawPointer? = nil
                _ = lockfs_curl_getinfo_ptr(easy, CURLINFO_PRIVATE, &priv)
                let t = Unmanaged<Transfer>.fromOpaque(priv!).takeUnretainedValue()
                active.removeValue(forKey: t.id)
                curl_multi_remove_handle(multi, easy)
                if result == CURLE_OK {
                    var status = 0
                    _ = lockfs_curl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
                    finish(t, .success(HTTPResponse(
                        status: status, contentType: t.responseHeaders["content-type"],
                        retryAfter: t.responseHeaders["retry-after"].flatMap { Int($0) }, body: t.responseBody,
                        headers: t.responseHeaders)))
                } else if t.tooLarge || result == CURLE_FILESIZE_EXCEEDED {
                    finish(t, .failure(TransportError(code: TransportError.responseTooLargeCode,
                                                      message: "the server's answer is longer than \(t.maxResponseBytes) bytes")))
                } else {
                    finish(t, .failure(TransportError(code: Int(result.rawValue), message: String(cString: curl_easy_strerror(result)))))
                }
            }
            curl_multi_poll(multi, nil, 0, 1000, nil)
        }
    }

    private func finish(_ t: Transfer, _ result: Result<HTTPResponse, any Error>) {
        let c = t.continuation
        t.continuation = nil
        Self.cleanup(t)
        c?.resume(with: result)
    }

    private static func cleanup(_ t: Transfer) {
        curl_easy_cleanup(t.easy)
        curl_slist_free_all(t.headerList)
        t.headerList = nil
        t.requestBody.map { UnsafeMutableRawBufferPointer(start: $0.baseAddress, count: max($0.count, 1)).deallocate() }
        t.requestBody = nil
    }
}
