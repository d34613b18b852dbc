import Foundation
import LockCrypto
import LockTesting
import LockWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `lockfs-server migrate` as a process: an embedded server's data, made
/// over HTTP, moved to PostgreSQL and moto, then served from there.
@Suite struct MigrateTests {
    typealias P = PostgresFixture
    static let keys = S3ServeTests.keys

    /// Where to migrate to: a fresh database and bucket.
    struct Target {
        let pg: PostgresTestServer
        let database: String
        let passfile: String
        let moto: S3TestServer
        let bucket: String
        var metadataURL: String { pg.url(database: database) }
        var blobsURL: String { "s3://\(bucket)?endpoint=\(moto.endpoint)&region=us-east-1" }
        var serveArguments: [String] { ["--metadata", metadataURL, "--pg-passfile", passfile, "--blobs", blobsURL] }

        static func make(_ name: String) async throws -> Target {
            let pg = try await PostgresTestServer.shared()
            let moto = try await S3TestServer.shared()
            return Target(pg: pg, database: try await pg.createDatabase(name), passfile: try P.passfile(pg), moto: moto,
                          bucket: try moto.makeBucket())
        }

        func migrate(from dir: URL, _ extra: [String] = []) async throws -> ProcessResult {
            try await runProcess(ServerProcess.binary, ["migrate", "--from", dir.path, "--to-metadata", metadataURL, "--pg-passfile", passfile,
                                                        "--to-blobs", blobsURL] + extra, environment: MigrateTests.keys, timeout: .seconds(300))
        }

        func objectStatus(_ vault: VaultID, _ chunk: ChunkID) throws -> Int {
            try S3TestServer.rawRequest(port: moto.port, method: "HEAD", path: "/\(bucket)/\(vault.hex)/\(chunk.hex)")
        }
    }

    /// Two users (one with a second and a revoked device), a pending
    /// invite, chunks, entries and a checkpoint, made over HTTP; then the
    /// migrated stores are served and the clients see the same things.
    @Test func migratedDeploymentServesTheSameJournalAndChunks() async throws {
        let target = try await Target.make("migrate")
        defer { Task { try? await target.pg.dropDatabase(target.database) } }
        let old = try await ServerProcess.start()
        defer { old.stop() }

        let aliceVault = try TestVault.make(user: "alice"), bobVault = try TestVault.make(user: "bob")
        let alice = try await aliceVault.register(on: old)
        let bob = try await bobVault.register(on: old)
        let (_, laptopID) = try await aliceVault.login(on: old, deviceName: "laptop")
        let (phone, phoneID) = try await aliceVault.login(on: old, deviceName: "phone")
        #expect(try await old.admin(["device", "revoke", "alice", laptopID]).status == 0)
        let carolInvite = try await old.inviteCode(for: "carol")

        var sent: [(TestVault, APIClient, SealedChunk)] = []
        for (vault, client) in [(aliceVault, alice), (bobVault, bob)] {
            let chunks = try (0..<4).map { try vault.chunk("\(vault.user)'s chunk \($0) " + String(repeating: "·", count: 300 * $0)) }
            #expect(try await client.putBatch(Array(chunks.prefix(2))).status == 201)
            for c in chunks.dropFirst(2) { #expect(try await client.putChunk(c).status == 201) }
            var head = (JournalSeq.start, vault.genesis)
            for (i, c) in chunks.enumerated() {
                let byPhone = i == 3 && vault.user == "alice"
                var entry = try vault.entry(creating: "file \(i)", baseSeq: head.0, baseHead: head.1)
                if byPhone { entry = entry.signed(by: testIdentity, device: DeviceID(hex: phoneID)!, vault: vault.keys.vaultID) }
                let r = try await (byPhone ? phone : client).append(entry, references: [c.id])
                #expect(r.status == 201, "append: \(String(decoding: r.body, as: UTF8.self))")
                head = (head.0.next, head.1.next(seq: head.0.next.rawValue, entry: entry.encoded))
                if i == 2 {
                    let put = try await client.send(.PUT, "/v1/checkpoint", body: try vault.checkpoint(seq: head.0, head: head.1),
                                                    contentType: APIv1.binaryContentType)
                    #expect(put.status == 201)
                }
            }
            sent += chunks.map { (vault, client, $0) }
        }
        let before = (alice: try await alice.pull(after: 0), bob: try await bob.pull(after: 0))
        let checkpointBefore = try await alice.send(.GET, "/v1/checkpoint").body
        let accountBefore = try await alice.accountInfo()
        #expect(before.alice.items.count == 4 && before.bob.items.count == 4)

        // While the server runs, migrate refuses.
        let busy = try await target.migrate(from: old.dataDirectory)
        #expect(busy.status != 0 && busy.stderr.contains("in use"), "\(busy.stdout) \(busy.stderr)")
        old.stop()

        let result = try await target.migrate(from: old.dataDirectory)
        try #require(result.status == 0, "migrate: \(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("8 blobs") && result.stdout.contains("8 copied, 0 already there"), "\(result.stdout)")
        #expect(result.stdout.contains("copying blobs 8/8"), "\(result.stdout)")
        #expect(result.stdout.contains("migrated and verified"), "\(result.stdout)")

        // A second run finds everything done and verifies it again.
        let again = try await target.migrate(from: old.dataDirectory)
        #expect(again.status == 0 && again.stdout.contains("0 copied, 8 already there"), "\(again.stdout)\n\(again.stderr)")
        #expect(again.stdout.contains("already holds this deployment's metadata"), "\(again.stdout)")

        // Serve the migrated stores from a fresh, empty data directory.
        let new = try await ServerProcess.start(arguments: target.serveArguments, environment: Self.keys)
        defer { new.stop() }
        let aliceAgain = alice.retarget(new), bob2 = bob.retarget(new), phoneAgain = phone.retarget(new)
        #expect(try await aliceAgain.pull(after: 0) == before.alice)
        #expect(try await bob2.pull(after: 0) == before.bob)
        #expect(try await phoneAgain.pull(after: 2).items == Array(before.alice.items.dropFirst(2)))
        #expect(try await aliceAgain.send(.GET, "/v1/checkpoint").body == checkpointBefore)
        let accountAfter = try await aliceAgain.accountInfo()
        #expect(accountAfter.storedBytes == accountBefore.storedBytes)
        #expect(Set(try await aliceAgain.deviceList().map(\.name)) == ["test device", "phone"])
        for (vault, client, chunk) in sent {
            let c = client.retarget(new)
            #expect(try await c.getChunk(chunk.id).body == chunk.bytes)
            #expect(try target.objectStatus(vault.keyring.vaultID, chunk.id) == 200)
        }
        // Logging in with the password, a pending invite, and a new account all work.
        _ = try await aliceVault.login(on: new, deviceName: "new laptop")
        let carolVault = try TestVault.make(user: "carol")
        let registered = try await APIClient(baseURL: new.baseURL).json(.POST, "/v1/register", RegisterRequest(
            user: "carol", invite: carolInvite, loginSecret: carolVault.loginSecret, keyring: carolVault.keyring, deviceName: "c", recoveryProof: carolVault.recoveryProof, device: testDeviceKeys))
        #expect(registered.status == 201, "register with the old invite: \(String(decoding: registered.body, as: UTF8.self))")
        _ = try await TestVault.make(user: "dave").register(on: new)
        // Alice's journal goes on from the old head.
        let last = before.alice.items.last!
        let entry = try aliceVault.entry(creating: "after migration", baseSeq: last.seq, baseHead: last.head)
        #expect(try await aliceAgain.append(entry, references: []).status == 201)
    }

    /// kill -9 in the middle of copying blobs: the database stays empty (no
    /// half-migrated metadata), and a second run copies only the rest.
    @Test func interruptedMigrationResumes() async throws {
        let target = try await Target.make("resume")
        defer { Task { try? await target.pg.dropDatabase(target.database) } }
        let old = try await ServerProcess.start()
        defer { old.stop() }
        let vault = try TestVault.make(user: "erin")
        let erin = try await vault.register(on: old)
        let count = 600
        var chunks: [SealedChunk] = []
        for i in 0..<count {
            chunks.append(try vault.chunk("blob \(i) " + Hex.encode(Sodium.randomBytes(2000))))
        }
        for batch in stride(from: 0, to: count, by: 100) {
            #expect(try await erin.putBatch(Array(chunks[batch..<batch + 100])).status == 201)
        }
        let entry = try vault.entry(creating: "one", baseSeq: .start, baseHead: vault.genesis)
        #expect(try await erin.append(entry, references: chunks.prefix(10).map(\.id)).status == 201)
        old.stop()

        let (p, out, err) = try spawnProcess(ServerProcess.binary, [
            "migrate", "--from", old.dataDirectory.path, "--to-metadata", target.metadataURL, "--pg-passfile", target.passfile,
            "--to-blobs", target.blobsURL, "--jobs", "1",
        ], environment: Self.keys)
        // Kill it once a progress line shows some blobs copied, but not all.
        let deadline = ContinuousClock.now + .seconds(120)
        var copiedAtKill = 0
        while ContinuousClock.now < deadline && p.isRunning {
            let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
            let counts = text.matches(of: /copying blobs (\d+)\/600/).compactMap { Int($0.1) }
            if let n = counts.max(), n >= 30 {
                kill(p.processIdentifier, SIGKILL)
                copiedAtKill = n
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        p.waitUntilExit()
        let firstOutput = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
        try #require(p.terminationReason == .uncaughtSignal,
                     "migrate was not killed midway (exit \(p.terminationStatus)): \(firstOutput) \((try? String(contentsOf: err, encoding: .utf8)) ?? "")")
        #expect(copiedAtKill < count)
        // Nothing of the metadata: it is written after the blobs, in one transaction.
        #expect(try await target.pg.psql("SELECT count(*) FROM accounts", database: target.database) == "0\n")

        let resumed = try await target.migrate(from: old.dataDirectory)
        try #require(resumed.status == 0, "resumed: \(resumed.stdout)\n\(resumed.stderr)")
        let match = try #require(resumed.stdout.firstMatch(of: /(\d+) copied, (\d+) already there/), "\(resumed.stdout)")
        let (copied, skipped) = (Int(match.1)!, Int(match.2)!)
        #expect(copied + skipped == count)
        #expect(skipped >= copiedAtKill && copied > 0, "copied \(copied), skipped \(skipped), \(copiedAtKill) at the kill")
        #expect(try await target.pg.psql("SELECT count(*) FROM chunks", database: target.database) == "\(count)\n")

        let new = try await ServerProcess.start(arguments: target.serveArguments, environment: Self.keys)
        defer { new.stop() }
        let client = erin.retarget(new)
        #expect(try await client.missing(chunks.map(\.id)) == [])
        for c in [chunks[0], chunks[count / 2], chunks[count - 1]] { #expect(try await client.getChunk(c.id).body == c.bytes) }
    }

    /// A blob changed in the bucket after copying: the next run's
    /// verification names it and exits nonzero.
    @Test func verificationCatchesACorruptedBlob() async throws {
        let target = try await Target.make("corrupt")
        defer { Task { try? await target.pg.dropDatabase(target.database) } }
        let old = try await ServerProcess.start()
        defer { old.stop() }
        let vault = try TestVault.make(user: "frank")
        let frank = try await vault.register(on: old)
        let chunks = try (0..<3).map { try vault.chunk("frank \($0)") }
        #expect(try await frank.putBatch(chunks).status == 201)
        old.stop()
        let first = try await target.migrate(from: old.dataDirectory)
        try #require(first.status == 0, "\(first.stdout)\n\(first.stderr)")

        // An unconditional PUT with an empty body replaces the object.
        let key = "\(vault.keyring.vaultID.hex)/\(chunks[1].id.hex)"
        #expect(try S3TestServer.rawRequest(port: target.moto.port, method: "PUT", path: "/\(target.bucket)/\(key)") == 200)
        let second = try await target.migrate(from: old.dataDirectory)
        #expect(second.status == 1, "\(second.stdout)\n\(second.stderr)")
        #expect(second.stderr.contains("blob \(key): the bucket's copy differs"), "\(second.stderr)")
        #expect(!second.stderr.contains(chunks[0].id.hex) && !second.stderr.contains(chunks[2].id.hex))
    }

    /// A database with someone else's accounts or invites is refused before
    /// anything is copied.
    @Test func refusesANonEmptyTarget() async throws {
        let target = try await Target.make("nonempty")
        defer { Task { try? await target.pg.dropDatabase(target.database) } }
        let old = try await ServerProcess.start()
        defer { old.stop() }
        let vault = try TestVault.make(user: "gina")
        let gina = try await vault.register(on: old)
        let chunk = try vault.chunk("gina's")
        #expect(try await gina.putChunk(chunk).status == 201)
        old.stop()

        let elsewhere = try makeTemporaryDirectory("other")
        defer { try? FileManager.default.removeItem(at: elsewhere) }
        let invite = try await runProcess(ServerProcess.binary, ["user", "add", "zed", "--data", elsewhere.path, "--metadata", target.metadataURL,
                                                                 "--pg-passfile", target.passfile])
        #expect(invite.status == 0, "\(invite.stderr)")
        let refused = try await target.migrate(from: old.dataDirectory)
        #expect(refused.status == 64, "\(refused.stdout)\n\(refused.stderr)")
        #expect(refused.stderr.contains("is not empty") && refused.stderr.contains("invite for zed"), "\(refused.stderr)")
        #expect(try target.objectStatus(vault.keyring.vaultID, chunk.id) == 404)
        #expect(try await target.pg.psql("SELECT count(*) FROM accounts", database: target.database) == "0\n")

        // Nothing to do, and a directory that is not a server's, are refused too.
        let none = try await runProcess(ServerProcess.binary, ["migrate", "--from", old.dataDirectory.path])
        #expect(none.status == 64 && none.stderr.contains("nothing to migrate"), "\(none.stderr)")
        let notData = try await runProcess(ServerProcess.binary, ["migrate", "--from", elsewhere.path, "--to-blobs", target.blobsURL],
                                           environment: Self.keys)
        #expect(notData.status == 64 && notData.stderr.contains("has no metadata.sqlite"), "\(notData.stderr)")
    }
}

extension APIClient {
    /// The same token on another server.
    func retarget(_ server: ServerProcess) -> APIClient { APIClient(baseURL: server.baseURL, token: token) }
}
