import AsyncHTTPClient
import Foundation
import LockTesting
import LockCrypto
import LockWire
import NIOCore
import NIOSSL
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `lockfs-server serve` as a process: shutdown, TLS, metrics, quotas.
@Suite struct ServeTests {
    @Test func sigtermEndsOpenLongPollsAndExitsCleanly() async throws {
        let server = try await ServerProcess.start()
        let vault = try TestVault.make(user: "carol")
        let carol = try await vault.register(on: server)
        let poll = Task { try await carol.pull(after: 0, wait: 60) }
        // Wait until the poll is really open (the metrics gauge says so).
        _ = await server.longPollsOpen(1)
        let start = ContinuousClock.now
        kill(server.pid, SIGTERM)
        server.process.waitUntilExit()
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(server.process.terminationStatus == 0)
        #expect(try await poll.value.items.isEmpty)
    }

    @Test func plainHTTPBeyondLoopbackNeedsInsecureHTTP() async throws {
        let dir = try makeTemporaryDirectory("plain")
        defer { try? FileManager.default.removeItem(at: dir) }
        let refused = try await runProcess(ServerProcess.binary, ["serve", "--data", dir.path, "--listen", "0.0.0.0:0"],
                                           timeout: .seconds(30))
        #expect(refused.status == 64 && refused.stderr.contains("refusing to serve plain HTTP") && refused.stderr.contains("--tls-cert"),
                "\(refused.status) \(refused.stderr)")
        let allowed = try await ServerProcess.start(dataDirectory: dir, arguments: ["--listen", "0.0.0.0:0", "--insecure-http"])
        defer { allowed.stop() }
        let health = try await sharedHTTPClient.execute(HTTPClientRequest(url: "http://127.0.0.1:\(allowed.port)/v1/health"), timeout: .seconds(10))
        #expect(health.status == .ok)
    }

    @Test func servesOverTLSWithAGivenCertificate() async throws {
        let dir = try makeTemporaryDirectory("tls")
        let cert = dir.appendingPathComponent("cert.pem").path, key = dir.appendingPathComponent("key.pem").path
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                             "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                             "-addext", "subjectAltName=IP:127.0.0.1"]
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        try #require(openssl.terminationStatus == 0, "openssl could not make a test certificate")

        let server = try await ServerProcess.start(arguments: ["--tls-cert", cert, "--tls-key", key])
        defer { server.stop() }
        #expect(server.baseURL.hasPrefix("https://"))

        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(cert))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        let response = try? await client.execute(HTTPClientRequest(url: server.baseURL + "/v1/health"), timeout: .seconds(10))
        #expect(response?.status == .ok)
        try await client.shutdown()

        // A client that does not trust the certificate is refused.
        let untrusting = HTTPClient(eventLoopGroupProvider: .singleton)
        await #expect(throws: (any Error).self) {
            _ = try await untrusting.execute(HTTPClientRequest(url: server.baseURL + "/v1/health"), timeout: .seconds(3))
        }
        try await untrusting.shutdown()
        // Plain HTTP on the TLS port gets no HTTP answer.
        await #expect(throws: (any Error).self) {
            let r = try await sharedHTTPClient.execute(HTTPClientRequest(url: "http://127.0.0.1:\(server.port)/v1/health"), timeout: .seconds(3))
            if r.status == .ok { return }
            throw TestFailure("no answer expected")
        }
    }

    @Test func metricsCountRequestsBytesAndStorage() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "dave")
        let dave = try await vault.register(on: server)
        let chunk = try vault.chunk(String(repeating: "x", count: 1000))
        #expect(try await dave.putChunk(chunk).status == 201)
        let text = String(decoding: try await APIClient(baseURL: server.baseURL).send(.GET, "/metrics").body, as: UTF8.self)
        #expect(text.contains(#"lockfs_requests_total{method="PUT",route="/v1/chunks/{id}",status="201"} 1"#))
        #expect(text.contains("lockfs_chunk_bytes_received_total \(chunk.bytes.count)"))
        #expect(text.contains("lockfs_stored_bytes \(chunk.bytes.count)"))
        #expect(text.contains("lockfs_request_duration_seconds_bucket"))
    }

    @Test func quotaRefusesUploadsPastTheLimit() async throws {
        let server = try await ServerProcess.start(arguments: ["--quota", "10K"])
        defer { server.stop() }
        let vault = try TestVault.make(user: "erin")
        let erin = try await vault.register(on: server)
        let small = try vault.chunk(String(repeating: "a", count: 6000))
        #expect(try await erin.putChunk(small).status == 201)
        let big = try vault.chunk(String(repeating: "b", count: 6000))
        let refused = try await erin.putChunk(big)
        #expect(refused.status == 507 && refused.errorCode == "quota_exceeded")
        #expect(try await erin.missing([big.id]) == [big.id])
        let info = try await erin.send(.GET, "/v1/account")
        #expect(info.json["storedBytes"] as? Int == small.bytes.count && info.json["quota"] as? Int == 10 * 1024)
        // Re-uploading a chunk already stored costs nothing and succeeds.
        #expect(try await erin.putChunk(small).status == 201)
    }
}
