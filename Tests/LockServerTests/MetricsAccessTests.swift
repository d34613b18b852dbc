import Foundation
@testable import LockServer
import LockTesting
import Testing

/// `/metrics` shows per-route counts and bytes, a live view of the users'
/// activity: only this machine gets it, or whoever holds the metrics token
/// (issue 15). Before, anyone who reached the API port did.
@Suite struct MetricsAccessTests {
    @Test func whoGetsTheMetrics() {
        let token = "a-metrics-token-of-some-length"
        let cases: [(String, String, Bool, String?, String?, Bool)] = [
            ("loopback, no token configured", "127.0.0.1", false, nil, nil, true),
            ("IPv6 loopback", "::1", false, nil, nil, true),
            ("IPv4-mapped loopback", "::ffff:127.0.0.1", false, nil, nil, true),
            ("another machine", "192.0.2.7", false, nil, nil, false),
            ("through a proxy on this host", "127.0.0.1", true, nil, nil, false),
            ("token configured, none given, even locally", "127.0.0.1", false, nil, token, false),
            ("the token, from anywhere", "192.0.2.7", true, "Bearer " + token, token, true),
            ("a wrong token", "192.0.2.7", false, "Bearer " + token.dropLast() + "x", token, false),
            ("a device token's shape", "192.0.2.7", false, "Bearer", token, false),
        ]
        for (name, peer, proxied, authorization, configured, allowed) in cases {
            #expect(ServerAPI.metricsAllowed(peer: peer, proxied: proxied, authorization: authorization, token: configured) == allowed, "\(name)")
        }
    }

    @Test func overHTTP() async throws {
        let dir = try makeTemporaryDirectory("metrics-token")
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokenFile = dir.appendingPathComponent("token")
        try Data("scrape-me-with-this-token\n".utf8).write(to: tokenFile)
        let open = try await ServerProcess.start()
        defer { open.stop() }
        let client = APIClient(baseURL: open.baseURL)
        #expect(try await client.send(.GET, "/metrics").status == 200)
        let proxied = try await client.send(.GET, "/metrics", headers: [("X-Forwarded-For", "198.51.100.4")])
        #expect(proxied.status == 403, "\(proxied.status)")
        let guarded = try await ServerProcess.start(arguments: ["--metrics-token-file", tokenFile.path])
        defer { guarded.stop() }
        let g = APIClient(baseURL: guarded.baseURL)
        #expect(try await g.send(.GET, "/metrics").status == 403)
        let scraped = try await g.send(.GET, "/metrics", headers: [("Authorization", "Bearer scrape-me-with-this-token")])
        #expect(scraped.status == 200 && String(decoding: scraped.body, as: UTF8.self).contains("lockfs_requests_total"))
    }
}
