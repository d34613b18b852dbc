import Testing
import LockTesting
@testable import LockCrypto

/// Fast but accepted parameters (libsodium INTERACTIVE) with a fixed salt.
let testParameters = try! KDFParameters(opsLimit: 2, memLimit: 64 << 20, salt: Array(0x30...0x3F))

@Suite struct PasswordTests {
    @Test func wrongPasswordIsReportedAsSuch() throws {
        let vault = fixedVault()
        let right = try PasswordKeys.derive(password: "correct horse", parameters: testParameters)
        let slot = try vault.passwordSlot(right, parameters: testParameters)
        let opened = try VaultKeys.unlock(vaultID: vault.vaultID, passwordSlot: slot, parameters: testParameters, keys: right)
        #expect(opened.content.id == vault.content.id)
        let wrong = try PasswordKeys.derive(password: "correct horse!", parameters: testParameters)
        #expect(throws: CryptoError.wrongPassword) {
            try VaultKeys.unlock(vaultID: vault.vaultID, passwordSlot: slot, parameters: testParameters, keys: wrong)
        }
        var tampered = slot
        tampered[40] ^= 1
        #expect(throws: CryptoError.authenticationFailed) {
            try VaultKeys.unlock(vaultID: vault.vaultID, passwordSlot: tampered, parameters: testParameters, keys: right)
        }
    }

    @Test func swappedParametersDoNotOpenTheSlot() throws {
        let vault = fixedVault()
        let keys = try PasswordKeys.derive(password: "pw", parameters: testParameters)
        let slot = try vault.passwordSlot(keys, parameters: testParameters)
        let other = try KDFParameters(opsLimit: 3, memLimit: 64 << 20, salt: testParameters.salt)
        #expect(throws: CryptoError.authenticationFailed) {
            try VaultKeys.unlock(vaultID: vault.vaultID, passwordSlot: slot, parameters: other, keys: keys)
        }
    }

    @Test func unicodeNormalisationGivesTheSameKeys() throws {
        let composed = try PasswordKeys.derive(password: "caf\u{E9}", parameters: testParameters)
        let decomposed = try PasswordKeys.derive(password: "cafe\u{301}", parameters: testParameters)
        #expect(composed.keyEncryptionKey.id == decomposed.keyEncryptionKey.id)
        #expect(composed.loginSecret.id == decomposed.loginSecret.id)
        #expect(composed.loginSecret.id != composed.keyEncryptionKey.id)
    }

    @Test func parametersBelowTheFloorOrAboveTheCeilingAreRefused() throws {
        let salt = [UInt8](repeating: 1, count: 16)
        #expect(throws: CryptoError.self) { try KDFParameters(opsLimit: 1, memLimit: 64 << 20, salt: salt) }
        #expect(throws: CryptoError.self) { try KDFParameters(opsLimit: 2, memLimit: 8 << 20, salt: salt) }
        #expect(throws: CryptoError.self) { try KDFParameters(opsLimit: 2, memLimit: 8 << 30, salt: salt) }
        // 1 GiB (SENSITIVE) is the most a client accepts (issue 15: a hostile server's memory bomb).
        #expect(throws: CryptoError.self) { try KDFParameters(opsLimit: 2, memLimit: (1 << 30) + 1, salt: salt) }
        #expect(throws: CryptoError.self) { try KDFParameters(opsLimit: 2, memLimit: 2 << 30, salt: salt) }
        _ = try KDFParameters(opsLimit: 4, memLimit: 1 << 30, salt: salt)
        #expect(KDFParameters.generate(.sensitive).memLimit <= KDFParameters.maximumMemLimit)
        #expect(throws: CryptoError.self) { try KDFParameters(opsLimit: 100, memLimit: 64 << 20, salt: salt) }
        #expect(throws: CryptoError.self) { try KDFParameters(opsLimit: 2, memLimit: 64 << 20, salt: [1, 2]) }
        #expect(throws: CryptoError.unsupportedKDF(2)) { try KDFParameters(algorithm: 2, opsLimit: 2, memLimit: 64 << 20, salt: salt) }
    }

    @Test func parametersRoundTripStrictly() throws {
        let encoded = testParameters.encoded
        #expect(encoded.count == KDFParameters.encodedSize)
        #expect(try KDFParameters(encoded: encoded) == testParameters)
        #expect(throws: CryptoError.self) { try KDFParameters(encoded: encoded + [0]) }
        #expect(throws: CryptoError.self) { try KDFParameters(encoded: encoded.dropLast()) }
        let moderate = KDFParameters.generate()
        #expect(moderate.opsLimit == 3 && moderate.memLimit == 256 << 20)
    }
}

@Suite struct RecoveryKeyTests {
    func fixedRecovery() -> RecoveryKey { RecoveryKey(secret: fixedKey(0x70)) }

    @Test func printsAndParsesBack() throws {
        let key = fixedRecovery()
        let text = key.displayString
        #expect(text.count == 56 + 13)
        #expect(text.split(separator: "-").allSatisfy { $0.count == 4 })
        #expect(try RecoveryKey(parsing: text).secret.id == key.secret.id)
        // Lowercase, no hyphens, spaces and Crockford's look-alikes all parse.
        let sloppy = text.lowercased().replacingOccurrences(of: "-", with: " ")
            .replacingOccurrences(of: "0", with: "o").replacingOccurrences(of: "1", with: "l")
        #expect(try RecoveryKey(parsing: sloppy).secret.id == key.secret.id)
    }

    @Test func everySingleCharacterTypoIsCaught() throws {
        let text = Array(fixedRecovery().displayString.filter { $0 != "-" })
        for i in text.indices {
            var typo = text
            typo[i] = typo[i] == "X" ? "Y" : "X"
            #expect(throws: CryptoError.recoveryKeyTypo, "typo at \(i)") { try RecoveryKey(parsing: String(typo)) }
        }
        // Two adjacent characters swapped.
        for i in 0..<(text.count - 1) where text[i] != text[i + 1] {
            var swapped = text
            swapped.swapAt(i, i + 1)
            #expect(throws: CryptoError.recoveryKeyTypo) { try RecoveryKey(parsing: String(swapped)) }
        }
    }

    @Test func malformedKeysSaySo() {
        #expect(throws: CryptoError.self) { try RecoveryKey(parsing: "ABCD-EFGH") }
        let u = String(repeating: "U", count: 56)
        #expect(throws: CryptoError.malformedRecoveryKey("character “U” is not used in recovery keys")) {
            try RecoveryKey(parsing: u)
        }
    }

    @Test func recoveryKeyUnlocksAndAWrongOneIsReported() throws {
        let vault = fixedVault()
        let recovery = RecoveryKey.generate()
        let slot = try vault.recoverySlot(recovery)
        let opened = try VaultKeys.unlock(vaultID: vault.vaultID, recoverySlot: slot,
                                          recovery: try RecoveryKey(parsing: recovery.displayString))
        #expect(opened.metadata.id == vault.metadata.id)
        #expect(throws: CryptoError.wrongRecoveryKey) {
            try VaultKeys.unlock(vaultID: vault.vaultID, recoverySlot: slot, recovery: .generate())
        }
    }
}

@Suite struct DerivationTests {
    @Test func subkeysAreDistinct() {
        let v = fixedVault()
        let ids = [v.master.id, v.content.id, v.metadata.id, v.chunkID.id, v.chunker.id]
        #expect(Set(ids).count == 5)
    }

    @Test func gearTablesDependOnTheKey() {
        let a = fixedVault().gearTable()
        let b = VaultKeys(vaultID: fixedVault().vaultID, master: fixedKey(0x01)).gearTable()
        #expect(a.count == 256 && b.count == 256)
        #expect(Set(a).count == 256)
        #expect(zip(a, b).filter { $0 == $1 }.isEmpty)
    }

    @Test func chainDependsOnVaultSequenceAndEntry() {
        let v1 = try! VaultID(bytes: [UInt8](repeating: 1, count: 16))
        let v2 = try! VaultID(bytes: [UInt8](repeating: 2, count: 16))
        let g = ChainHead.genesis(of: v1)
        #expect(g != ChainHead.genesis(of: v2))
        #expect(g.next(seq: 1, entry: [1, 2]) != g.next(seq: 2, entry: [1, 2]))
        #expect(g.next(seq: 1, entry: [1, 2]) != g.next(seq: 1, entry: [1, 3]))
        #expect(g.next(seq: 1, entry: [1, 2]) == g.next(seq: 1, entry: [1, 2]))
    }

    @Test func identifiersParseHexStrictly() {
        let id = VaultID.random()
        #expect(VaultID(hex: id.hex) == id)
        #expect(VaultID(hex: id.hex.uppercased()) == id)
        #expect(VaultID(hex: id.hex + "00") == nil)
        #expect(VaultID(hex: "zz" + id.hex.dropFirst(2)) == nil)
        #expect(throws: CryptoError.invalidIdentifier(length: 3)) { try ChunkID(bytes: [1, 2, 3]) }
    }
}
