import Foundation
@testable import LockCrypto
import LockTesting
import Testing
@testable import LockWire

/// Keyring v2 (key generations; issue 13): every way in gives every
/// generation, a revoked device's way gives none, and the record is strict.
@Suite struct GenerationKeyringTests {
    static let password = try! PasswordKeys.derive(password: "pw", parameters: Fixture.kdf)
    static let recovery = RecoveryKey(secret: try! [UInt8](0x70..<0x90).withUnsafeBytes { try SecretKey(copying: $0) })
    /// Generations 3, 2, 1 of the fixture vault (generation 1 is its MK).
    static let generations: [VaultKeys] = [
        VaultKeys(vaultID: Fixture.vault.vaultID, master: try! [UInt8](0x60..<0x80).withUnsafeBytes { try SecretKey(copying: $0) }),
        VaultKeys(vaultID: Fixture.vault.vaultID, master: try! [UInt8](0x40..<0x60).withUnsafeBytes { try SecretKey(copying: $0) }),
        Fixture.vault,
    ]
    static let phone = Fixture.identity, phoneID = Fixture.id16(0x40) as DeviceID

    static func make() throws -> GenerationKeyring {
        try GenerationKeyring.make(generations: generations, password: password, parameters: Fixture.kdf,
                                   recoveryBoxKey: recovery.boxPublicKey, devices: [(phoneID, phone.boxPublicKey)])
    }

    static func ids(_ keys: [VaultKeys]) -> [KeyID] { keys.map(\.master.id) }

    @Test func everyWayInGivesEveryGenerationNewestFirst() throws {
        let keyring = try Self.make()
        let expected = Self.ids(Self.generations)
        #expect(keyring.generation == 3 && keyring.links.count == 2)
        #expect(Self.ids(try keyring.unlock(password: Self.password)) == expected)
        #expect(Self.ids(try keyring.unlock(recovery: Self.recovery)) == expected)
        #expect(Self.ids(try keyring.unlock(device: Self.phoneID, identity: Self.phone)) == expected)
        #expect(try GenerationKeyring(decoding: keyring.encoded) == keyring)
    }

    /// The revoked laptop kept its device.json (generation 2's MK and its
    /// X25519 secret): generation 3's keyring opens for it in no way.
    @Test func aRevokedDeviceGetsNothing() throws {
        let keyring = try Self.make()
        let laptop = DeviceIdentity.generate(), laptopID = DeviceID.random()
        #expect(throws: CryptoError.authenticationFailed) { _ = try keyring.unlock(device: laptopID, identity: laptop) }
        // Its own key on the phone's seal, and its MK on the links: nothing.
        #expect(throws: CryptoError.authenticationFailed) { _ = try keyring.unlock(device: Self.phoneID, identity: laptop) }
        #expect(throws: (any Error).self) { _ = try Self.generations[1].openLink(keyring.links[0], generation: 3) }
        #expect(throws: CryptoError.wrongPassword) {
            _ = try keyring.unlock(password: PasswordKeys.derive(password: "not pw", parameters: Fixture.kdf))
        }
    }

    /// A server serving generation 2's password slot as generation 3's.
    @Test func anOlderSlotCannotPassForTheCurrentOne() throws {
        let keyring = try Self.make()
        let older = try GenerationKeyring.make(generations: Array(Self.generations.dropFirst()), password: Self.password,
                                               parameters: Fixture.kdf, recoveryBoxKey: Self.recovery.boxPublicKey, devices: [])
        let swapped = GenerationKeyring(vaultID: keyring.vaultID, parameters: keyring.parameters, generation: 3,
                                        recoveryBoxKey: keyring.recoveryBoxKey, passwordSlot: older.passwordSlot,
                                        recoverySeal: older.recoverySeal, links: keyring.links, deviceSeals: keyring.deviceSeals)
        #expect(throws: (any Error).self) { _ = try swapped.unlock(password: Self.password) }
        #expect(throws: CryptoError.authenticationFailed) { _ = try swapped.unlock(recovery: Self.recovery) }
    }

    @Test func theRecordIsStrict() throws {
        let bytes = try Self.make().encoded
        for length in stride(from: 0, to: bytes.count, by: 7) {
            #expect(throws: (any Error).self, "cut to \(length)") { _ = try GenerationKeyring(decoding: Array(bytes.prefix(length))) }
        }
        #expect(throws: (any Error).self) { _ = try GenerationKeyring(decoding: bytes + [0]) }
        var wrongGeneration = bytes
        wrongGeneration[49] = 4   // generation 4 with two links
        #expect(throws: (any Error).self) { _ = try GenerationKeyring(decoding: wrongGeneration) }
        var v1 = bytes
        v1[0] = 1
        #expect(throws: (any Error).self) { _ = try GenerationKeyring(decoding: v1) }
    }

    /// The committed keyring v2 keeps opening (its seals are randomised, so
    /// the vector is made once and then only read).
    @Test func goldenVector() throws {
        let stored = (try? GoldenVectors.load(file: "wire")) ?? [:]
        let bytes = try stored["keyring.v2"].flatMap(Hex.decode) ?? Self.make().encoded
        let keyring = try GenerationKeyring(decoding: bytes)
        let expected = Self.ids(Self.generations)
        #expect(Self.ids(try keyring.unlock(password: Self.password)) == expected)
        #expect(Self.ids(try keyring.unlock(recovery: Self.recovery)) == expected)
        #expect(Self.ids(try keyring.unlock(device: Self.phoneID, identity: Self.phone)) == expected)
        let mismatches = try GoldenVectors.verify(["keyring.v2": Hex.encode(bytes)], file: "wire", about:
            "LockWire golden vectors from Tests/LockWireTests/Fixtures.swift (MK 00..1f, vault a0..af, nonce 10..27). A changed value is a format change.")
        for m in mismatches { Issue.record("\(m)") }
    }
}
