import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// `lockfs verify` (issue 15): a server that loses or corrupts blobs is
/// noticed without anyone reading them.
@Suite struct AuditTests {
    /// Three files on an in-memory server; returns the reader device's engine.
    static func vault() async throws -> (InMemoryVaultServer, Engine) {
        let (server, d) = try makeDevices(2)
        for (i, size) in [10_000, 300_000, 5_000_000].enumerated() {
            try await d[0].engine.put("f\(i)", seededText(size, seed: UInt64(i)))
        }
        try await d[0].engine.syncNow()
        try await d[1].engine.pullOnce()
        return (server, d[1].engine)
    }

    @Test func aFaithfulServerPasses() async throws {
        let (_, e) = try await Self.vault()
        let report = try await e.audit()
        #expect(report.ok && report.chunksChecked == report.chunksTotal && report.chunksTotal >= 3)
        #expect(report.journalEntries == 1)
        let sample = try await e.audit(samplePercent: 34)
        #expect(sample.chunksChecked == Int((Double(sample.chunksTotal) * 0.34).rounded(.up)) && sample.ok)
        // Nothing was cached by it.
        #expect(e.status().cacheSize == 0)
    }

    @Test func aLostChunkIsReportedAndACorruptOneIsTheAlarm() async throws {
        let (server, e) = try await Self.vault()
        let f1 = try #require(e.snapshot()["/f1"]?.manifest?.chunks.first?.id)
        let f2 = try #require(e.snapshot()["/f2"]?.manifest?.chunks.last?.id)
        server.state.withLock { s in
            s.chunks[f1] = nil
            s.chunks[f2]![100] ^= 1
        }
        let report = try await e.audit()
        #expect(report.missing == ["/f1 (chunk \(f1.hex.prefix(12)))"])
        #expect(report.corrupt == ["/f2 (chunk \(f2.hex.prefix(12)))"])
        #expect(e.status().integrityAlarm?.contains("wrong bytes") == true)
    }

    @Test func aLostChunkAloneIsNoAlarm() async throws {
        let (server, e) = try await Self.vault()
        let f0 = try #require(e.snapshot()["/f0"]?.manifest?.chunks.first?.id)
        server.state.withLock { _ = $0.chunks.removeValue(forKey: f0) }
        let report = try await e.audit()
        #expect(report.missing.count == 1 && report.corrupt.isEmpty && !report.ok)
        #expect(e.status().integrityAlarm == nil)
    }

    @Test func aJournalThatDiffersIsTheAlarm() async throws {
        let (server, e) = try await Self.vault()
        server.state.withLock { $0.entries.removeAll() }
        await HostileServerTests.expectIntegrity("verify: the server's journal ends at 0") { _ = try await e.audit() }
        #expect(e.status().integrityAlarm != nil)
    }

    /// As a binary against a real server: exit 0 and "ok"; a blob deleted on
    /// the server: exit 76, the file named, the metrics file written.
    @Test func theCommandAgainstARealServer() async throws {
        let v = try await LogoutTests.Vault("vera")
        defer { v.stop() }
        let home = v.home("laptop")
        let file = v.dir.appendingPathComponent("data.bin")
        try Data(seededText(2_000_000, seed: 3).utf8).write(to: file)
        #expect(try await LogoutTests.lockfs(["put", "--home", home, file.path, "/data.bin"]).status == 0)
        let good = try await LogoutTests.lockfs(["verify", "--home", home])
        #expect(good.status == 0 && good.stdout.contains("ok"), "\(good.stdout) \(good.stderr)")
        let status = try await LogoutTests.lockfs(["status", "--home", home, "--offline"])
        #expect(status.stdout.contains("verified:   ") && status.stdout.contains(": ok"), "\(status.stdout)")

        let blobs = v.server.dataDirectory.appendingPathComponent("blobs")
        let victim = try #require(FileManager.default.enumerator(at: blobs, includingPropertiesForKeys: nil)?
            .compactMap { $0 as? URL }.first { $0.lastPathComponent.count == 64 })
        try FileManager.default.removeItem(at: victim)
        let metrics = v.dir.appendingPathComponent("verify.prom").path
        let bad = try await LogoutTests.lockfs(["verify", "--home", home, "--metrics-file", metrics])
        #expect(bad.status == 76 && bad.stdout.contains("MISSING  /data.bin"), "\(bad.stdout) \(bad.stderr)")
        #expect(try String(contentsOfFile: metrics, encoding: .utf8).contains("lockfs_verify_chunks_missing 1"))
        let json = try await LogoutTests.lockfs(["verify", "--home", home, "--sample", "100", "--json"])
        #expect(json.stdout.contains("\"missing\""), "\(json.stdout)")
    }
}
