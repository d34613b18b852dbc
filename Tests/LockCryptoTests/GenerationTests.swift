import Foundation
import LockTesting
import Testing
@testable import LockCrypto

/// Key generations at the crypto layer (issue 13, point 2): what a device
/// revoked at generation 1 holds cannot open generation 2.
@Suite struct GenerationTests {
    @Test func aSealOpensOnlyWithItsSecretAndKeepsTheGenerationNumber() throws {
        let device = DeviceIdentity.generate(), other = DeviceIdentity.generate()
        let mk = VaultKeys.generate()
        let sealed = try GenerationSeal.seal(mk.master, generation: 7, to: device.boxPublicKey)
        #expect(sealed.count == GenerationSeal.sealedSize)
        let (g, master) = try GenerationSeal.open(sealed, secret: device.boxSecret)
        #expect(g == 7 && master.id == mk.master.id)
        #expect(throws: CryptoError.authenticationFailed) { _ = try GenerationSeal.open(sealed, secret: other.boxSecret) }
        for i in [0, 40, sealed.count - 1] {
            var bad = sealed
            bad[i] ^= 0x01
            #expect(throws: CryptoError.authenticationFailed) { _ = try GenerationSeal.open(bad, secret: device.boxSecret) }
        }
        #expect(throws: CryptoError.authenticationFailed) { _ = try GenerationSeal.open(Array(sealed.dropLast()), secret: device.boxSecret) }
    }

    @Test func theNewestGenerationOpensEveryOlderOneAndNoOlderOneANewer() throws {
        let g1 = VaultKeys.generate()
        let g2 = VaultKeys(vaultID: g1.vaultID, master: .random()), g3 = VaultKeys(vaultID: g1.vaultID, master: .random())
        let link2 = try g2.link(to: g1, generation: 2), link3 = try g3.link(to: g2, generation: 3)
        #expect(try g3.openLink(link3, generation: 3).master.id == g2.master.id)
        #expect(try g3.openLink(link3, generation: 3).openLink(link2, generation: 2).master.id == g1.master.id)
        // Older keys cannot walk forward, and a link is bound to its place.
        #expect(throws: (any Error).self) { _ = try g1.openLink(link2, generation: 2) }
        #expect(throws: (any Error).self) { _ = try g2.openLink(link3, generation: 3) }
        #expect(throws: (any Error).self) { _ = try g3.openLink(link3, generation: 4) }
    }

    /// The revoked laptop kept device.json (MK of generation 1 and its X25519
    /// secret) and obtains every ciphertext of generation 2: the seals for the
    /// remaining devices, the password and recovery slots' seals, the link,
    /// a chunk and an entry. It opens none of them.
    @Test func aDeviceRevokedAtGenerationOneOpensNothingOfGenerationTwo() throws {
        let g1 = VaultKeys.generate()
        let laptop = DeviceIdentity.generate(), phone = DeviceIdentity.generate()
        let recovery = RecoveryKey.generate()
        let g2 = VaultKeys(vaultID: g1.vaultID, master: .random())
        let seals = [try GenerationSeal.seal(g2.master, generation: 2, to: phone.boxPublicKey),
                     try GenerationSeal.seal(g2.master, generation: 2, to: recovery.boxPublicKey)]
        let link = try g2.link(to: g1, generation: 2)
        let chunk = try Array("written after the revocation".utf8).withUnsafeBytes { try g2.sealChunk($0) }
        let entry = try g2.sealEntry(Array("a batch".utf8), baseSeq: 3, baseHead: .genesis(of: g1.vaultID))

        for s in seals { #expect(throws: CryptoError.authenticationFailed) { _ = try GenerationSeal.open(s, secret: laptop.boxSecret) } }
        #expect(throws: (any Error).self) { _ = try g1.openLink(link, generation: 2) }
        #expect(throws: CryptoError.wrongKey) { _ = try g1.openChunk(chunk) }
        #expect(throws: CryptoError.wrongKey) { _ = try g1.openEntry(entry, baseSeq: 3, baseHead: .genesis(of: g1.vaultID)) }
        // The ones it was sealed for do.
        #expect(try GenerationSeal.open(seals[0], secret: phone.boxSecret).master.id == g2.master.id)
        #expect(try GenerationSeal.open(seals[1], secret: recovery.boxSecret).master.id == g2.master.id)
        #expect(try g2.openChunk(chunk) == Array("written after the revocation".utf8))
    }

    @Test func boxKeysAreSignedByTheDevicesSigningKey() {
        let device = DeviceIdentity.generate(), other = DeviceIdentity.generate()
        let signature = device.boxKeySignature()
        #expect(DeviceIdentity.verifyBoxKey(device.boxPublicKey, signature: signature, signingKey: device.signingPublicKey))
        #expect(!DeviceIdentity.verifyBoxKey(other.boxPublicKey, signature: signature, signingKey: device.signingPublicKey))
        #expect(!DeviceIdentity.verifyBoxKey(device.boxPublicKey, signature: signature, signingKey: other.signingPublicKey))
    }
}

/// How a device takes a keyring's generations: pure, by example.
@Suite struct KeyGenerationsTests {
    static let g1 = VaultKeys.generate()
    static let g2 = VaultKeys(vaultID: g1.vaultID, master: .random())
    static let g3 = VaultKeys(vaultID: g1.vaultID, master: .random())

    @Test func adoptsOnlyWhatExtendsTheGenerationsHeld() throws {
        let forged = VaultKeys(vaultID: Self.g1.vaultID, master: .random())
        let cases: [(String, [VaultKeys], Result<Bool, CryptoError>)] = [
            ("the same", [Self.g2, Self.g1], .success(false)),
            ("one newer", [Self.g3, Self.g2, Self.g1], .success(true)),
            ("one fewer", [Self.g1], .failure(.generationMismatch(""))),
            ("a held one swapped", [Self.g3, forged, Self.g1], .failure(.generationMismatch(""))),
            ("the oldest swapped", [Self.g3, Self.g2, forged], .failure(.generationMismatch(""))),
            ("another vault", [VaultKeys(vaultID: .random(), master: Self.g3.master), Self.g2, Self.g1], .failure(.generationMismatch(""))),
        ]
        for (name, offered, expected) in cases {
            let held = KeyGenerations([Self.g2, Self.g1])
            switch (Result { try held.adopt(offered) }, expected) {
            case (.success(let got), .success(let want)):
                #expect(got == want, "\(name)")
                #expect(held.generation == (want ? 3 : 2), "\(name)")
            case (.failure(CryptoError.generationMismatch), .failure):
                #expect(held.generation == 2, "\(name): nothing adopted")
            case (let got, _):
                Issue.record("\(name): \(got)")
            }
        }
    }

    @Test func opensEachEnvelopeWithTheGenerationThatSealedIt() throws {
        let held = KeyGenerations([Self.g2, Self.g1])
        let old = try [UInt8](repeating: 1, count: 100).withUnsafeBytes { try Self.g1.sealChunk($0) }
        let new = try [UInt8](repeating: 2, count: 100).withUnsafeBytes { try Self.g2.sealChunk($0) }
        let entry = try Self.g2.sealEntry([1, 2, 3], baseSeq: 0, baseHead: .genesis(of: Self.g1.vaultID))
        #expect(held.keys(opening: old.bytes)?.sameMaster(as: Self.g1) == true)
        #expect(held.keys(opening: new.bytes)?.sameMaster(as: Self.g2) == true)
        #expect(held.keys(opening: entry)?.sameMaster(as: Self.g2) == true)
        #expect(held.newest.sameMaster(as: Self.g2))
        // A generation not held yet, and bytes that are no envelope.
        let newer = try [UInt8](repeating: 3, count: 100).withUnsafeBytes { try Self.g3.sealChunk($0) }
        #expect(held.keys(opening: newer.bytes) == nil)
        #expect(held.keys(opening: [1, 2, 3]) == nil)
    }
}
