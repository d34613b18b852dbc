import Foundation
import GRDB
import LockCrypto
import LockTesting
import LockWire
import Testing

/// A token alone writes nothing (issue 13, point 3): the server appends an
/// entry only if the calling device's key signed it. Before, any token
/// holder could append a framing-valid entry that no client can open, and
/// every device stopped at the integrity alarm for good.
@Suite struct SignedEntryTests {
    /// A device enrolled with keys, over real HTTP.
    static func enrol(_ vault: TestVault, on server: ServerProcess, name: String, identity: DeviceIdentity?) async throws -> (APIClient, DeviceID) {
        let r = try await APIClient(baseURL: server.baseURL).json(.POST, "/v1/login", LoginRequest(
            user: vault.user, loginSecret: vault.loginSecret, deviceName: name, device: identity.map(DevicePublicKeys.init)))
        guard r.status == 200, let token = r.json["token"] as? String, let id = (r.json["device"] as? String).flatMap(DeviceID.init(hex:)) else {
            throw TestFailure("login: HTTP \(r.status) \(r.json)")
        }
        return (APIClient(baseURL: server.baseURL, token: token), id)
    }

    /// An entry that no client can open: framing-valid random bytes at the genesis head.
    static func garbage(_ vault: TestVault) throws -> JournalEntry {
        let sealed = try [UInt8](repeating: 0, count: 100).withUnsafeBytes {
            try Envelope.seal($0, kind: .journalEntry, key: VaultKeys.generate().metadata, context: [])
        }
        return try JournalEntry(baseSeq: .start, baseHead: vault.genesis, sealedBatch: sealed)
    }

    @Test func aStolenTokenCannotPostAnEntryThatHaltsTheVault() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "signed")
        _ = try await vault.register(on: server)
        let identity = DeviceIdentity.generate()
        let (phone, phoneID) = try await Self.enrol(vault, on: server, name: "phone", identity: identity)

        // The thief holds the phone's token, not its signing seed.
        let garbage = try Self.garbage(vault)
        let unsigned = try await phone.append(garbage, references: [])
        #expect(unsigned.status == 409 && unsigned.errorCode == "upgrade_required", "\(unsigned.status) \(unsigned.json)")
        let ownKey = garbage.signed(by: .generate(), device: phoneID, vault: vault.keys.vaultID)
        #expect(try await phone.append(ownKey, references: []).status == 403)
        let forged = try JournalEntry(baseSeq: .start, baseHead: vault.genesis, signer: EntrySigner(
            device: phoneID, publicKey: identity.signingPublicKey, signature: Sodium.randomBytes(64)), sealedBatch: garbage.sealedBatch)
        #expect(try await phone.append(forged, references: []).status == 403)
        #expect(try await phone.pull(after: 0).latest == .start)

        // The phone itself signs: accepted, and served signed.
        let entry = try vault.entry(creating: "from the phone", baseSeq: .start, baseHead: vault.genesis)
        let signed = entry.signed(by: identity, device: phoneID, vault: vault.keys.vaultID)
        let ok = try await phone.append(signed, references: [])
        #expect(ok.status == 201, "\(ok.json)")
        #expect(try await phone.pull(after: 0).items.map(\.entry) == [signed])
    }

    @Test func anEntryMustBeSignedAsTheDeviceThatSendsIt() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "signed-as")
        _ = try await vault.register(on: server)
        let laptopKey = DeviceIdentity.generate(), phoneKey = DeviceIdentity.generate()
        let (_, laptopID) = try await Self.enrol(vault, on: server, name: "laptop", identity: laptopKey)
        let (phone, _) = try await Self.enrol(vault, on: server, name: "phone", identity: phoneKey)
        let entry = try vault.entry(creating: "claimed", baseSeq: .start, baseHead: vault.genesis)
        // The phone's token with an entry the laptop signed (replayed from elsewhere).
        let r = try await phone.append(entry.signed(by: laptopKey, device: laptopID, vault: vault.keys.vaultID), references: [])
        #expect(r.status == 403, "\(r.json)")
    }

    @Test func aDeviceFromBeforeKeysRegistersItsKeyWithItsFirstSignedEntry() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "legacy")
        _ = try await vault.register(on: server)
        let (old, oldID) = try await Self.enrol(vault, on: server, name: "old", identity: .generate())
        // A device enrolled by lockfs 0.1 has no keys on the server: made so in the database.
        server.stop()
        let db = try DatabaseQueue(path: server.dataDirectory.appendingPathComponent("metadata.sqlite").path)
        try await db.write { try $0.execute(sql: "UPDATE devices SET signing_key = NULL, box_key = NULL WHERE id = ?", arguments: [Data(oldID.bytes)]) }
        try await server.restart()
        let old2 = APIClient(baseURL: server.baseURL, token: old.token)
        // As lockfs 0.1 wrote: unsigned, accepted while the device has no key.
        let first = try vault.entry(creating: "one", baseSeq: .start, baseHead: vault.genesis).unsigned
        #expect(try await old2.append(first, references: []).status == 201)
        let page = try await old2.pull(after: 0)
        let head = page.items[0].head
        // Upgraded: its first signed entry binds its key …
        let identity = DeviceIdentity.generate()
        let second = try vault.entry(creating: "two", baseSeq: JournalSeq(1), baseHead: head).unsigned
        #expect(try await old2.append(second.signed(by: identity, device: oldID, vault: vault.keys.vaultID), references: []).status == 201)
        let head2 = try await old2.pull(after: 1).items[0].head
        // … and from then on nothing unsigned or signed with another key goes in.
        let third = try vault.entry(creating: "three", baseSeq: JournalSeq(2), baseHead: head2).unsigned
        #expect(try await old2.append(third, references: []).status == 409)
        #expect(try await old2.append(third.signed(by: .generate(), device: oldID, vault: vault.keys.vaultID), references: []).status == 403)
        #expect(try await old2.append(third.signed(by: identity, device: oldID, vault: vault.keys.vaultID), references: []).status == 201)
    }
}
