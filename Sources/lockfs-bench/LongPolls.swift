import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Many concurrent journal long-polls over raw TCP sockets: one connection
/// each, the HTTP/1.1 request written by hand, so the bench holds exactly
/// as many connections as it opens (no client pool in between).
final class RawLongPolls {
    private(set) var sockets: [Int32] = []

    /// Opens `count` connections to 127.0.0.1:`port`, each sending
    /// `GET /v1/journal?after=AFTER&wait=WAIT` with the bearer token.
    init(count: Int, port: Int, token: String, after: UInt64, wait: Int) throws {
        let request = Array(("GET /v1/journal?after=\(after)&wait=\(wait) HTTP/1.1\r\n" +
                             "Host: 127.0.0.1:\(port)\r\n" +
                             "Authorization: Bearer \(token)\r\n" +
                             "Connection: close\r\n\r\n").utf8)
        do {
            for _ in 0..<count {
                let fd = try Self.connect(port: port)
                sockets.append(fd)
                try Self.writeAll(fd, request)
            }
        } catch {
            closeAll()
            throw error
        }
    }

    deinit { closeAll() }

    func closeAll() {
        for fd in sockets { close(fd) }
        sockets = []
    }

    /// Reads one HTTP response from every socket (blocking, `timeout` each)
    /// and returns how many had status 200.
    func readResponses(timeout: Int = 30) throws -> Int {
        var ok = 0
        for fd in sockets {
            var tv = timeval(tv_sec: timeout, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let response = try Self.readResponse(fd)
            if response.starts(with: Array("HTTP/1.1 200".utf8)) { ok += 1 }
        }
        return ok
    }

    private static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchFailure("socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let status = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard status == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw BenchFailure("connect: \(message)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw BenchFailure("write: \(String(cString: strerror(errno)))") }
                offset += n
            }
        }
    }

    /// Head and body of one response (Content-Length bodies; EOF ends it too).
    private static func readResponse(_ fd: Int32) throws -> [UInt8] {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        var expected: Int? = nil
        while expected.map({ data.count < $0 }) ?? true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw BenchFailure("long-poll read: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            data += buffer[0..<n]
            if expected == nil, let end = headerEnd(data) {
                let head = String(decoding: data[0..<end], as: UTF8.self).lowercased()
                let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) } ?? 0
                expected = end + 4 + length
            }
        }
        return data
    }

    private static func headerEnd(_ data: [UInt8]) -> Int? {
        guard data.count >= 4 else { return nil }
        for i in 0...(data.count - 4) where data[i] == 13 && data[i + 1] == 10 && data[i + 2] == 13 && data[i + 3] == 10 {
            return i
        }
        return nil
    }
}
