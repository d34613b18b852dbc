import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// A vault on a real lockfs-server with two enrolled devices: a laptop that
/// registered it and a phone that logged in. Each device keeps its own home.
struct RealVault {
    let laptop: DeviceCredentials
    let phone: DeviceCredentials
    let laptopHome: URL
    let phoneHome: URL

    /// Registers `user` on `server` (Argon2id at INTERACTIVE strength) and logs a second device in.
    static func create(on server: ServerProcess, user: String) async throws -> RealVault {
        let password = "password of \(user)"
        let (laptop, _) = try await VaultAccountTests.create(server, user, password: password)
        let phone = try await VaultAccountTests.login(server, user, password: password)
        return RealVault(laptop: laptop, phone: phone,
                         laptopHome: try makeTemporaryDirectory("real-laptop"), phoneHome: try makeTemporaryDirectory("real-phone"))
    }

    /// The laptop's engine on `server` (a new Engine on the same home: the
    /// index keeps the cursor, trusted head, queue and alarm).
    func laptop(on server: ServerProcess, options: EngineOptions = testOptions()) throws -> Engine {
        try Self.engine(laptopHome, laptop, server, options)
    }

    func phone(on server: ServerProcess, options: EngineOptions = testOptions()) throws -> Engine {
        try Self.engine(phoneHome, phone, server, options)
    }

    /// The server's address is taken from `server`, not the credentials: a
    /// restarted server listens on a new port.
    static func engine(_ home: URL, _ credentials: DeviceCredentials, _ server: ServerProcess, _ options: EngineOptions) throws -> Engine {
        let remote = HTTPRemote(baseURL: server.baseURL, token: credentials.token, transport: transport)
        return try Engine(home: ClientHome(directory: home), credentials: credentials, remote: remote, options: options)
    }
}

/// Pseudo-random printable text of `size` bytes (so the chunker cuts it in several chunks).
func seededText(_ size: Int, seed: UInt64) -> String {
    var rng = SeededGenerator(seed: seed)
    return String(decoding: (0..<size).map { _ in UInt8.random(in: 97...122, using: &rng) }, as: UTF8.self)
}

/// Two devices syncing through a real lockfs-server over HTTP.
@Suite struct RealServerEngineTests {
    @Test func twoDevicesConvergeThroughARealServer() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try await RealVault.create(on: server, user: "erin")
        let a = try vault.laptop(on: server), b = try vault.phone(on: server)

        // Folders, small files and a file of several chunks (batched and single uploads).
        _ = try a.mkdir(parent: 1, name: "docs", mode: 0o755)
        _ = try a.mkdir(parent: 1, name: "archive", mode: 0o700)
        try await a.put("docs/a.txt", "alpha")
        try await a.put("docs/b.txt", "bravo")
        try await a.put("top.txt", "v1")
        let big = seededText(3 << 20, seed: 11)
        try await a.put("docs/big.bin", big)
        #expect(try await a.text("docs/big.bin") == big)
        #expect(a.snapshot()["/docs/big.bin"]!.manifest!.chunks.count > 1)
        try await a.syncNow()
        #expect(a.status().queuedOperations == 0)
        try await b.pullOnce()
        #expect(try await b.text("docs/a.txt") == "alpha")
        #expect(try await b.text("docs/big.bin") == big)
        #expect(try b.getattr(try b.resolve("archive")).mode == 0o700)

        // The phone renames across folders, deletes and rewrites.
        try b.rename(parent: try b.resolve("docs"), name: "a.txt", newParent: try b.resolve("archive"), newName: "a-old.txt")
        try b.unlink(parent: try b.resolve("docs"), name: "b.txt")
        try await b.put("top.txt", "v2")
        try await b.syncNow()
        try await a.pullOnce()
        #expect(try await a.text("archive/a-old.txt") == "alpha")
        #expect(throws: LockError.notFound) { try a.resolve("docs/a.txt") }
        #expect(throws: LockError.notFound) { try a.resolve("docs/b.txt") }
        #expect(try await a.text("top.txt") == "v2")

        // Both edit one file without seeing the other's edit: both versions survive.
        try await a.put("shared.txt", "base")
        try await a.syncNow()
        try await b.pullOnce()
        try await a.put("shared.txt", "laptop's edit")
        try await b.put("shared.txt", "phone's edit")
        try await a.syncNow()
        try await b.syncNow()
        try await a.pullOnce()
        let shared = a.snapshot().keys.filter { $0.hasPrefix("/shared") }.sorted()
        #expect(shared.count == 2, "\(shared)")
        #expect(shared.contains { $0.contains("(conflict from ") })
        var texts: Set<String> = []
        for p in shared { texts.insert(try await a.text(p)) }
        #expect(texts == ["laptop's edit", "phone's edit"])
        // The first append wins the name; the other lands beside it.
        #expect(try await a.text("shared.txt") == "laptop's edit")

        #expect(try await a.tree() == (try await b.tree()))
        #expect(Set(a.snapshot().keys) == ["/docs", "/archive", "/archive/a-old.txt", "/docs/big.bin", "/top.txt",
                                          "/shared.txt", shared.first { $0 != "/shared.txt" }!])
        for e in [a, b] {
            #expect(e.status().integrityAlarm == nil)
            #expect(e.status().queuedOperations == 0)
        }
    }

    @Test func backgroundLoopsConvergeOverLongPolls() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try await RealVault.create(on: server, user: "frank")
        let a = try vault.laptop(on: server), b = try vault.phone(on: server)
        a.start()
        b.start()
        try await a.put("from-laptop.txt", "1")
        _ = try b.mkdir(parent: 1, name: "from-phone", mode: 0o755)
        try await b.put("from-phone/f.txt", "2")
        try await a.waitUntilSynced()
        try await b.waitUntilSynced()
        // Each sees the other's change within a few seconds, woken by its long-poll.
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            if try await a.tree().count == 3, try await a.tree() == (try await b.tree()) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        await a.stop()
        await b.stop()
        #expect(try await a.tree() == (try await b.tree()))
        #expect(try await a.text("from-phone/f.txt") == "2")
        #expect(try await b.text("from-laptop.txt") == "1")
    }
}
