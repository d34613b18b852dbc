import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// Key generations end to end, over real HTTP: revoking a device makes a
/// new generation it does not get (issue 13, "what a revoked device can read").
@Suite struct KeyRotationTests {
    static let password = "password of rotation tests"

    /// Three devices write; the tablet is revoked (it keeps its device.json);
    /// the laptop writes, then the phone. With its saved credentials and every
    /// byte the server stored afterwards (as an operator, a backup or a leaked
    /// bucket would give it), the tablet opens no entry, no chunk and no seal.
    @Test func aRevokedDeviceOpensNothingWrittenAfterItsRevocation() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (laptop, _) = try await VaultAccountTests.create(server, "rota", password: Self.password)
        let phone = try await VaultAccountTests.login(server, "rota", password: Self.password, device: "phone")
        let tablet = try await VaultAccountTests.login(server, "rota", password: Self.password, device: "tablet")
        let homes = try (0..<3).map { try makeTemporaryDirectory("rotation-\($0)") }
        defer { for h in homes { try? FileManager.default.removeItem(at: h) } }
        let a = try RealVault.engine(homes[0], laptop, server, testOptions())
        let b = try RealVault.engine(homes[1], phone, server, testOptions())
        let t = try RealVault.engine(homes[2], tablet, server, testOptions())
        // Everyone writes once, so that the journal vouches for every key.
        try await a.put("before.txt", "written before the revocation")
        try await a.syncNow()
        try await b.put("phone.txt", "the phone was here")
        try await b.syncNow()
        try await t.put("tablet.txt", "the tablet was here")
        try await t.syncNow()
        try await a.pullOnce()
        #expect(Set(a.boundSigners.keys) == [laptop.device, phone.device, tablet.device])
        // The thief's copy of the tablet's device.json.
        let stolen = homes[2].appendingPathComponent("stolen-device.json")
        try tablet.save(to: stolen)

        try await VaultAccount.revoke(tablet.device, password: Self.password, credentials: laptop,
                                      remote: VaultAccountTests.remote(laptop))
        let rotation = try await VaultAccount.rotateKeys(password: Self.password, credentials: laptop,
                                                         remote: VaultAccountTests.remote(laptop), signers: a.boundSigners)
        #expect(rotation.generation == 2)
        #expect(rotation.sealedFor == ["phone"])
        #expect(rotation.left.isEmpty)
        #expect(rotation.credentials.generations.count == 2)
        let revokedAt = a.status().cursor

        // The laptop's running engine learns the generation from the next page's header.
        try await a.pullOnce()
        #expect(a.generations.generation == 2)
        let secret = seededText(300 << 10, seed: 77)
        try await a.put("after.txt", secret)
        try await a.syncNow()
        // The phone learns it too, reads the new file and the old ones, and writes with it.
        try await b.pullOnce()
        #expect(b.generations.generation == 2)
        #expect(try await b.text("after.txt") == secret)
        #expect(try await b.text("before.txt") == "written before the revocation")
        try await b.put("phone-after.txt", "the phone after the revocation")
        try await b.syncNow()

        // Everything the server holds that was written after the revocation.
        let operator_ = VaultAccountTests.remote(laptop)
        let page = try await operator_.entries(after: JournalSeq(revokedAt), limit: 1000, wait: .zero)
        #expect(page.items.count >= 2)
        #expect(page.keyringGeneration == 2)
        try await a.pullOnce()
        let manifests = ["/after.txt", "/phone-after.txt"].compactMap { a.snapshot()[$0]?.manifest }
        #expect(manifests.count == 2)
        var chunks: [SealedChunk] = []
        for m in manifests { for c in m.chunks { chunks.append(try await operator_.chunk(c.id)) } }
        #expect(chunks.count >= 2)
        let keyring = try await operator_.keyring()

        // The thief: the saved credentials, every key in them, and that ciphertext.
        let thief = try DeviceCredentials.load(from: stolen)
        let thiefKeys = KeyGenerations(thief.generations)
        for item in page.items {
            #expect(thiefKeys.keys(opening: item.entry.sealedBatch) == nil)
            #expect(throws: CryptoError.wrongKey) {
                _ = try thief.keys.openEntry(item.entry.sealedBatch, baseSeq: item.entry.baseSeq.rawValue, baseHead: item.entry.baseHead)
            }
        }
        for chunk in chunks {
            #expect(throws: CryptoError.wrongKey) { _ = try thief.keys.openChunk(chunk) }
        }
        #expect(throws: CryptoError.authenticationFailed) { _ = try keyring.unlock(device: thief.device, identity: thief.identity!) }
        if case .v2(let g) = keyring {
            for seal in g.deviceSeals {
                #expect(throws: CryptoError.authenticationFailed) { _ = try GenerationSeal.open(seal.seal, secret: thief.identity!.boxSecret) }
            }
        } else {
            Issue.record("the rotation wrote a version 1 keyring")
        }
        // And its token is refused.
        await #expect(throws: RemoteError.unauthorized) { _ = try await VaultAccountTests.remote(thief).keyring() }

        // A device logged in later opens every generation from the password.
        let desktop = try await VaultAccountTests.login(server, "rota", password: Self.password, device: "desktop")
        #expect(desktop.generations.count == 2)
        let homeD = try makeTemporaryDirectory("rotation-desktop")
        defer { try? FileManager.default.removeItem(at: homeD) }
        let d = try RealVault.engine(homeD, desktop, server, testOptions())
        try await d.pullOnce()
        #expect(try await d.text("before.txt") == "written before the revocation")
        #expect(try await d.text("after.txt") == secret)
        #expect(try await d.text("tablet.txt") == "the tablet was here")
    }

    /// A device the rotation left out (it had written nothing, so the journal
    /// could not vouch for its key) is told to log in again, and gets in.
    @Test func aDeviceLeftOutIsToldToLogInAgain() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (laptop, _) = try await VaultAccountTests.create(server, "left", password: Self.password)
        let quiet = try await VaultAccountTests.login(server, "left", password: Self.password, device: "quiet")
        let homes = try (0..<2).map { try makeTemporaryDirectory("left-\($0)") }
        defer { for h in homes { try? FileManager.default.removeItem(at: h) } }
        let a = try RealVault.engine(homes[0], laptop, server, testOptions())
        try await a.put("a.txt", "alpha")
        try await a.syncNow()
        let rotation = try await VaultAccount.rotateKeys(password: Self.password, credentials: laptop,
                                                         remote: VaultAccountTests.remote(laptop), signers: a.boundSigners)
        #expect(rotation.sealedFor.isEmpty)
        #expect(rotation.left.map(\.name) == ["quiet"])
        #expect(rotation.left.first?.why.contains("written nothing") == true)
        try await a.pullOnce()
        try await a.put("b.txt", "bravo")
        try await a.syncNow()
        let q = try RealVault.engine(homes[1], quiet, server, testOptions())
        await #expect {
            try await q.pullOnce()
        } throws: { error in
            guard case LockError.unauthorized(let why) = error else { return false }
            return why.contains("left out") && why.contains("lockfs login")
        }
    }

    /// The credentials file keeps every generation, newest first, and reads back.
    @Test func deviceJSONKeepsEveryGeneration() throws {
        let dir = try makeTemporaryDirectory("generations-json")
        defer { try? FileManager.default.removeItem(at: dir) }
        let g1 = VaultKeys.generate()
        let g2 = VaultKeys(vaultID: g1.vaultID, master: .random())
        let c = DeviceCredentials(server: "https://example.org", user: "u", device: .random(), deviceName: "d", vault: g1.vaultID,
                                  token: "t", keys: g2, olderKeys: [g1], identity: .generate())
        let file = dir.appendingPathComponent("device.json")
        try c.save(to: file)
        let back = try DeviceCredentials.load(from: file)
        #expect(back.generations.map(\.master.id) == [g2.master.id, g1.master.id])
        // A file of one generation has no older keys (what lockfs before key generations reads).
        try DeviceCredentials(server: "https://example.org", user: "u", device: .random(), deviceName: "d", vault: g1.vaultID,
                              token: "t", keys: g1).save(to: file)
        #expect(!String(decoding: try Data(contentsOf: file), as: UTF8.self).contains("olderMasterKeys"))
    }
}

/// Which listed devices a rotation seals to: pure, by example.
@Suite struct SealTargetTests {
    static let device = DeviceIdentity.generate()
    static func info(_ keys: DevicePublicKeys?) -> DeviceInfo {
        DeviceInfo(id: DeviceID.random().hex, name: "phone", createdAt: 0, lastSeenAt: nil, current: false, keys: keys)
    }

    @Test func onlyABoxKeySignedByTheKeyTheJournalBoundGetsASeal() {
        let d = Self.device, other = DeviceIdentity.generate()
        let genuine = DevicePublicKeys(d)
        let unsigned = DevicePublicKeys(signing: d.signingPublicKey, box: d.boxPublicKey)
        // The server swaps the box key for its own, signed by its own signing key.
        let swapped = DevicePublicKeys(other)
        let cases: [(String, DevicePublicKeys?, [UInt8]?, Bool)] = [
            ("signed and bound", genuine, d.signingPublicKey, true),
            ("no keys listed (enrolled by 0.1)", nil, d.signingPublicKey, false),
            ("box key without signature", unsigned, d.signingPublicKey, false),
            ("never wrote: not bound", genuine, nil, false),
            ("server's own keys, journal bound the device's", swapped, d.signingPublicKey, false),
        ]
        for (name, keys, bound, sealed) in cases {
            switch VaultAccount.sealTarget(Self.info(keys), bound: bound) {
            case .success(let box): #expect(sealed && box == d.boxPublicKey, "\(name)")
            case .failure: #expect(!sealed, "\(name)")
            }
        }
    }
}
