import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A server that answers with a gigabyte (issue 15): the client reads no
/// more than the protocol allows for that answer and calls it malformed.
@Suite struct ResponseLimitTests {
    /// A tiny HTTP server (Python) that answers every request with `body`
    /// bytes of zeros, with a Content-Length or streamed (chunked).
    static func hostileServer(bytes: Int, chunked: Bool) async throws -> (Process, Int) {
        let script = """
        import http.server, socketserver, sys
        N = \(bytes); CHUNKED = \(chunked ? "True" : "False")
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *a): pass
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.lockfs.v1")
                if CHUNKED: self.send_header("Transfer-Encoding", "chunked")
                else: self.send_header("Content-Length", str(N))
                self.end_headers()
                block = bytes(1 << 20); sent = 0
                try:
                    while sent < N:
                        if CHUNKED: self.wfile.write(b"%x\\r\\n" % len(block) + block + b"\\r\\n")
                        else: self.wfile.write(block)
                        sent += len(block)
                    if CHUNKED: self.wfile.write(b"0\\r\\n\\r\\n")
                except (BrokenPipeError, ConnectionResetError): pass
        s = socketserver.TCPServer(("127.0.0.1", 0), H)
        print(s.server_address[1], flush=True)
        s.serve_forever()
        """
        let dir = try makeTemporaryDirectory("hostile-http")
        let out = dir.appendingPathComponent("port")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script]
        p.standardOutput = try FileHandle(forWritingTo: out)
        // No pipe of the test runner is inherited (it would wait for it to close).
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        for _ in 0..<200 {
            if let text = try? String(contentsOf: out, encoding: .utf8), let port = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                return (p, port)
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        p.terminate()
        throw TestFailure("the hostile server did not start")
    }

    @Test(arguments: [false, true]) func aGigabyteAnswerIsRefusedNotRead(chunked: Bool) async throws {
        let (server, port) = try await Self.hostileServer(bytes: 1 << 30, chunked: chunked)
        defer {
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        let remote = HTTPRemote(baseURL: "http://127.0.0.1:\(port)", token: "t", transport: transport)
        for call in ["chunk", "page"] {
            do {
                if call == "chunk" { _ = try await remote.chunk(ChunkID(hex: String(repeating: "0", count: 64))!) } else {
                    _ = try await remote.entries(after: .start, limit: 10, wait: .zero)
                }
                Issue.record("\(call): a gigabyte answer was accepted")
            } catch RemoteError.malformedResponse(let why) {
                let cap = call == "chunk" ? HTTPRemote.maxChunkResponse : HTTPRemote.maxPageResponse
                #expect(why.contains("longer than \(cap) bytes"), "\(why)")
            }
        }
        // The transfer ended at the cap ("longer than N bytes": the message names the cap, so
        // nothing past it was kept). Not measured as this process's RSS: other suites run
        // beside this one and allocate as they please.
    }
}
