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
        let vault = VaultID.random()
        let signature = device.boxKeySignature(vault: vault)
        #expect(DeviceIdentity.verifyBoxKey(device.boxPublicKey, signature: signature, signingKey: device.signingPublicKey, vault: vault))
        #expect(!DeviceIdentity.verifyBoxKey(other.boxPublicKey, signature: signature, signingKey: device.signingPublicKey, vault: vault))
        #expect(!DeviceIdentity.verifyBoxKey(device.boxPublicKey, signature: signature, signingKey: other.signingPublicKey, vault: vault))
        #expect(!DeviceIdentity.verifyBoxKey(device.boxPublicKey, signature: signature, signingKey: device.signingPublicKey, vault: .random()))
    }
}
