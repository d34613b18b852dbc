import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// Engines over HTTPRemote on different `lockfs-server` instances that share
/// one PostgreSQL database and one S3 bucket (moto): what a load balancer
/// in front of several instances gives the clients.
@Suite struct ScaleOutEngineTests {
    /// A device of `user` logged in through `server`, with its own home.
    static func device(_ server: ServerProcess, _ user: String, _ name: String) async throws -> (DeviceCredentials, URL) {
        let credentials = try await VaultAccountTests.login(server, user, password: "password of \(user)", device: name)
        return (credentials, try makeTemporaryDirectory("scale-\(name)"))
    }

    @Test func devicesOnTwoInstancesConverge() async throws {
        let cluster = try await ScaleOutCluster.start(instances: 2, name: "converge")
        defer { for s in cluster.instances { s.stop() } }
        let (one, two) = (cluster.instances[0], cluster.instances[1])
        let vault = try await RealVault.create(on: one, user: "olga")
        let a = try vault.laptop(on: one), b = try vault.phone(on: two)

        _ = try a.mkdir(parent: 1, name: "docs", mode: 0o755)
        try await a.put("docs/a.txt", "alpha")
        try await a.put("top.txt", "v1")
        let big = seededText(3 << 20, seed: 21)
        try await a.put("docs/big.bin", big)
        #expect(a.snapshot()["/docs/big.bin"]!.manifest!.chunks.count > 1)
        try await a.syncNow()
        try await b.pullOnce()
        #expect(try await b.text("docs/a.txt") == "alpha")
        #expect(try await b.text("docs/big.bin") == big)

        try b.rename(parent: try b.resolve("docs"), name: "a.txt", newParent: 1, newName: "a-moved.txt")
        try await b.put("top.txt", "v2")
        try await b.put("from-b.txt", seededText(300 << 10, seed: 22))
        try await b.syncNow()
        try await a.pullOnce()
        #expect(try await a.text("a-moved.txt") == "alpha")
        #expect(try await a.text("top.txt") == "v2")
        #expect(try await a.text("from-b.txt") == seededText(300 << 10, seed: 22))

        // The same file edited on both instances: both versions survive.
        try await a.put("shared.txt", "laptop's edit")
        try await b.put("shared.txt", "phone's edit")
        try await a.syncNow()
        try await b.syncNow()
        try await a.pullOnce()
        let shared = a.snapshot().keys.filter { $0.hasPrefix("/shared") }
        #expect(shared.count == 2 && shared.contains { $0.contains("(conflict from ") }, "\(shared)")
        #expect(try await a.tree() == (try await b.tree()))
        for e in [a, b] {
            #expect(e.status().integrityAlarm == nil)
            #expect(e.status().queuedOperations == 0)
        }
    }

    /// Six devices, three on each instance, write and sync at once: the
    /// server serialises their appends into one chain, every engine ends on
    /// the same tree with no integrity alarm, and a new device verifying the
    /// journal from scratch through instance 2 agrees.
    @Test func concurrentWritersOnTwoInstancesMakeOneChain() async throws {
        let cluster = try await ScaleOutCluster.start(instances: 2, name: "writers")
        defer { for s in cluster.instances { s.stop() } }
        let user = "pia"
        let vault = try await RealVault.create(on: cluster.instances[0], user: user)
        var engines: [Engine] = [try vault.laptop(on: cluster.instances[0]), try vault.phone(on: cluster.instances[1])]
        for i in 2..<6 {
            let server = cluster.instances[i % 2]
            let (credentials, home) = try await Self.device(server, user, "writer\(i)")
            engines.append(try RealVault.engine(home, credentials, server, testOptions()))
        }
        let rounds = 6
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (w, engine) in engines.enumerated() {
                group.addTask {
                    _ = try engine.mkdir(parent: 1, name: "w\(w)", mode: 0o755)
                    for r in 0..<rounds {
                        try await engine.put("w\(w)/f\(r)", "writer \(w) round \(r)")
                        try await engine.syncNow()
                    }
                }
            }
            try await group.waitForAll()
        }
        for e in engines { try await e.pullOnce() }
        let tree = try await engines[0].tree()
        for (w, e) in engines.enumerated() {
            #expect(e.status().integrityAlarm == nil, "engine \(w): \(e.status().integrityAlarm ?? "")")
            #expect(e.status().queuedOperations == 0)
            #expect(try await e.tree() == tree, "engine \(w) disagrees")
        }
        for w in 0..<engines.count {
            for r in 0..<rounds { #expect(try await engines[0].text("w\(w)/f\(r)") == "writer \(w) round \(r)") }
        }

        // A device that never wrote verifies the whole chain through instance 2.
        let (credentials, home) = try await Self.device(cluster.instances[1], user, "verifier")
        let verifier = try RealVault.engine(home, credentials, cluster.instances[1], testOptions())
        try await verifier.pullOnce()
        #expect(verifier.status().integrityAlarm == nil)
        #expect(try await verifier.tree() == tree)

        // And by hand: seq 1…N contiguous, each head chaining from genesis, each base on the chain.
        let remote = HTTPRemote(baseURL: cluster.instances[1].baseURL, token: credentials.token, transport: transport)
        var items: [EntryPage.Item] = []
        while true {
            let page = try await remote.entries(after: items.last?.seq ?? .start, limit: 1000, wait: .zero)
            items += page.items
            if page.items.isEmpty || items.last!.seq >= page.latest { break }
        }
        var head = ChainHead.genesis(of: credentials.keys.vaultID)
        var heads = [JournalSeq.start: head]
        for (i, item) in items.enumerated() {
            #expect(item.seq.rawValue == UInt64(i + 1))
            head = head.next(seq: item.seq.rawValue, entry: item.entry.encoded)
            #expect(item.head == head, "the head of \(item.seq) does not chain")
            #expect(heads[item.entry.baseSeq] == item.entry.baseHead, "the base of \(item.seq) is not on the chain")
            heads[item.seq] = item.head
        }
        // Each writer appended at least once per round (mkdir and puts may share entries).
        #expect(items.count >= engines.count * rounds)
    }

    /// An engine's long-poll on instance 1 wakes for an append made through
    /// instance 2 within a second (the poll waits 20 s, so only the
    /// cross-instance notification can end it early).
    @Test func aLongPollOnOneInstanceWakesForAnAppendOnTheOther() async throws {
        let cluster = try await ScaleOutCluster.start(instances: 2, name: "enginewake")
        defer { for s in cluster.instances { s.stop() } }
        let vault = try await RealVault.create(on: cluster.instances[0], user: "quinn")
        var options = testOptions()
        options.pollWait = .seconds(20)
        let watcher = try vault.laptop(on: cluster.instances[0], options: options)
        let writer = try vault.phone(on: cluster.instances[1])
        watcher.start()
        try await Task.sleep(for: .milliseconds(500))  // its first long-poll is open
        for round in 1...3 {
            try await writer.put("r\(round).txt", "round \(round)")
            try await writer.syncNow()
            let appended = ContinuousClock.now
            var seen = false
            while ContinuousClock.now - appended < .seconds(5) {
                if (try? watcher.resolve("r\(round).txt")) != nil { seen = true; break }
                try await Task.sleep(for: .milliseconds(10))
            }
            let elapsed = ContinuousClock.now - appended
            #expect(seen && elapsed < .seconds(1), "round \(round): seen \(seen) after \(elapsed)")
        }
        await watcher.stop()
        #expect(try await watcher.text("r3.txt") == "round 3")
    }
}
