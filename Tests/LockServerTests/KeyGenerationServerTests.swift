import Foundation
import LockCrypto
@testable import LockServer
import LockTesting
import LockWire
import Testing

/// The server's rules for key generations (issue 13): a keyring replacement
/// keeps the generation (a password change) or adds exactly one (a
/// rotation), and every journal page names the keyring's generation.
@Suite struct KeyGenerationServerTests {
    static let g1 = VaultKeys.generate()
    static let g2 = VaultKeys(vaultID: g1.vaultID, master: .random())
    static let recovery = RecoveryKey.generate()
    static let parameters = KDFParameters.generate(.interactive)
    static let password = try! PasswordKeys.derive(password: "pw", parameters: parameters)

    static func keyring(_ generations: [VaultKeys]) throws -> VaultKeyring {
        .v2(try GenerationKeyring.make(generations: generations, password: password, parameters: parameters,
                                       recoveryBoxKey: recovery.boxPublicKey, devices: []))
    }

    @Test func replacementsKeepTheGenerationOrAddOne() throws {
        let v1 = try Keyring.make(keys: Self.g1, password: Self.password, parameters: Self.parameters, recovery: Self.recovery).encoded
        let gen1 = try Self.keyring([Self.g1]), gen2 = try Self.keyring([Self.g2, Self.g1])
        let otherGen2 = try Self.keyring([VaultKeys(vaultID: Self.g1.vaultID, master: .random()), Self.g1])
        let gen2NewPassword = try gen2.rewrapped(generations: [Self.g2, Self.g1], password: try PasswordKeys.derive(password: "new", parameters: Self.parameters),
                                                 parameters: Self.parameters)
        let gen3 = try Self.keyring([VaultKeys(vaultID: Self.g1.vaultID, master: .random()), Self.g2, Self.g1])
        let cases: [(String, [UInt8], VaultKeyring, Bool)] = [
            ("v1 → its first rotation", v1, gen2, true),
            ("v1 → v1 (a password change)", v1, .v1(try Keyring(decoding: v1)), true),
            ("generation 1 → 2", gen1.encoded, gen2, true),
            ("2 → 2, a new password", gen2.encoded, gen2NewPassword, true),
            ("2 → 2 with another master key", gen2.encoded, otherGen2, false),
            ("2 → 1 (a stale client)", gen2.encoded, gen1, false),
            ("1 → 3 (a generation skipped)", gen1.encoded, gen3, false),
        ]
        for (name, stored, offered, allowed) in cases {
            let problem = ServerAPI.generationProblem(replacing: stored, with: offered)
            #expect((problem == nil) == allowed, "\(name): \(problem ?? "allowed")")
        }
    }

    /// Over HTTP: a rotation lands, a racing one at the same generation is
    /// refused, and pages carry the generation.
    @Test func aRacingRotationIsRefusedAndPagesNameTheGeneration() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "gens")
        let client = try await vault.register(on: server)
        let page1 = try await client.send(.GET, "/v1/journal?after=0")
        #expect(page1.headers.first(name: APIv1.keyringGenerationHeader) == "1")
        let pw = try PasswordKeys.derive(password: vault.password, parameters: vault.parameters)
        func rotation(_ next: VaultKeys) throws -> KeyringReplaceRequest {
            KeyringReplaceRequest(keyring: VaultKeyring.v2(try GenerationKeyring.make(
                generations: [next, vault.keys], password: pw, parameters: vault.parameters,
                recoveryBoxKey: vault.recovery.boxPublicKey, devices: [])), loginSecret: vault.loginSecret, proof: .password(vault.loginSecret))
        }
        let first = try await client.json(.PUT, "/v1/keyring", try rotation(VaultKeys(vaultID: vault.keys.vaultID, master: .random())))
        #expect(first.status == 204, "\(first.status) \(first.json)")
        // Another device rotated from the same generation 1 at the same time.
        let second = try await client.json(.PUT, "/v1/keyring", try rotation(VaultKeys(vaultID: vault.keys.vaultID, master: .random())))
        #expect(second.status == 409 && second.errorCode == "keyring_changed", "\(second.status) \(second.json)")
        let page2 = try await client.send(.GET, "/v1/journal?after=0")
        #expect(page2.headers.first(name: APIv1.keyringGenerationHeader) == "2")
    }
}

extension KeyGenerationServerTests {
    /// Journal pages name the generation read from the keyring's header alone: the same as decoding it whole.
    @Test func theGenerationFromTheHeaderIsTheRecordsOwn() throws {
        let v1 = try Keyring.make(keys: Self.g1, password: Self.password, parameters: Self.parameters, recovery: Self.recovery)
        for (record, g) in [(VaultKeyring.v1(v1), UInt32(1)), (try Self.keyring([Self.g1]), 1), (try Self.keyring([Self.g2, Self.g1]), 2)] {
            #expect(VaultKeyring.generation(ofEncoded: record.encoded) == g)
            #expect(try VaultKeyring(decoding: record.encoded).generation == g)
        }
        #expect(VaultKeyring.generation(ofEncoded: [3, 0, 0]) == nil)
        #expect(VaultKeyring.generation(ofEncoded: []) == nil)
    }
}
