import Testing
import LockTesting
@testable import LockCrypto

/// Golden vectors for every key derivation and envelope (Tests/Vectors/crypto.json).
///
/// Computed once from fixed keys and nonces and checked forever: a changed
/// value is a format change (bump the version, update docs/design.md).
@Suite struct CryptoVectorTests {
    @Test func goldenVectors() throws {
        let vault = fixedVault()
        var v: [String: String] = [:]
        // Key hierarchy: MK = 00 01 … 1f, vault id = a0 … af.
        func keyHex<P>(_ k: SecretKey<P>) -> String { k.withUnsafeBytes { Hex.encode($0) } }
        v["subkey.content"] = keyHex(vault.content)
        v["subkey.metadata"] = keyHex(vault.metadata)
        v["subkey.chunk-id"] = keyHex(vault.chunkID)
        v["subkey.chunker"] = keyHex(vault.chunker)
        v["keyid.master"] = vault.master.id.description
        v["keyid.content"] = vault.content.id.description
        let gear = vault.gearTable()
        v["gear.first4"] = gear.prefix(4).map { String($0, radix: 16) }.joined(separator: ",")
        v["gear.blake2b"] = Hex.encode(Hash.blake2b256(gear.flatMap { g in (0..<8).map { UInt8(truncatingIfNeeded: g >> (8 * $0)) } }))

        // Chunks: ids and envelopes with nonce 10 11 … 27.
        let plain = Array("lockfs golden chunk".utf8)
        let chunk = try vault.sealChunk(plain, nonce: fixedNonce)
        v["chunk.id"] = chunk.id.hex
        v["chunk.sealed"] = Hex.encode(chunk.bytes)
        let empty = try vault.sealChunk([], nonce: fixedNonce)
        v["chunk.empty.id"] = empty.id.hex
        v["chunk.empty.sealed"] = Hex.encode(empty.bytes)
        var rng = SeededGenerator(seed: 42)
        let big = try vault.sealChunk(rng.bytes(100_000), nonce: fixedNonce)
        v["chunk.100000.id"] = big.id.hex
        v["chunk.100000.sealed.blake2b"] = Hex.encode(Hash.blake2b256(big.bytes))
        v["chunk.100000.sealed.size"] = String(big.bytes.count)

        // Journal: genesis, one entry sealed at the genesis position, next head.
        let genesis = ChainHead.genesis(of: vault.vaultID)
        v["chain.genesis"] = genesis.hex
        let entry = try vault.sealEntry(Array("batch of operations".utf8), baseSeq: 0, baseHead: genesis, nonce: fixedNonce)
        v["entry.sealed"] = Hex.encode(entry)
        v["chain.1"] = genesis.next(seq: 1, entry: entry).hex
        let checkpoint = try vault.sealCheckpoint(Array("checkpoint".utf8), seq: 1, head: genesis.next(seq: 1, entry: entry), nonce: fixedNonce)
        v["checkpoint.sealed"] = Hex.encode(checkpoint)

        // Password: Argon2id INTERACTIVE, salt 30 … 3f, password "correct horse battery staple".
        v["kdf.parameters"] = Hex.encode(testParameters.encoded)
        let pw = try PasswordKeys.derive(password: "correct horse battery staple", parameters: testParameters)
        v["kdf.kek"] = keyHex(pw.keyEncryptionKey)
        v["kdf.login"] = keyHex(pw.loginSecret)
        v["keyring.password-slot"] = Hex.encode(try vault.passwordSlot(pw, parameters: testParameters, nonce: fixedNonce))

        // Recovery: secret 70 71 … 8f.
        let recovery = RecoveryKey(secret: fixedKey(0x70))
        v["recovery.display"] = recovery.displayString
        v["recovery.kek"] = keyHex(recovery.keyEncryptionKey)
        v["recovery.proof"] = keyHex(recovery.proof)
        v["keyring.recovery-slot"] = Hex.encode(try vault.recoverySlot(recovery, nonce: fixedNonce))

        // Key generations: generation 2 with MK 40 … 5f; its link to generation 1 (the
        // fixed vault) with the fixed nonce; a seal of it to the recovery key's box key
        // (crypto_box_seal is randomised: the committed seal must keep opening).
        let g2 = VaultKeys(vaultID: vault.vaultID, master: fixedKey(0x40))
        v["recovery.box-public"] = Hex.encode(recovery.boxPublicKey)
        v["generation.link-2"] = Hex.encode(try g2.link(to: vault, generation: 2, nonce: fixedNonce))
        let stored = (try? GoldenVectors.load(file: "crypto")) ?? [:]
        let seal = try stored["generation.seal-2-recovery"].flatMap(Hex.decode)
            ?? GenerationSeal.seal(g2.master, generation: 2, to: recovery.boxPublicKey)
        let (g, opened2) = try GenerationSeal.open(seal, secret: recovery.boxSecret)
        #expect(g == 2 && opened2.id == g2.master.id)
        v["generation.seal-2-recovery"] = Hex.encode(seal)
        let device = DeviceIdentity(signingSeed: fixedKey(0x50), boxSecret: fixedKey(0x90))
        v["device.box-key-signature"] = Hex.encode(device.boxKeySignature())

        let mismatches = try GoldenVectors.verify(v, file: "crypto", about:
            "LockCrypto golden vectors: MK 00..1f, vault id a0..af, nonce 10..27, Argon2id ops 2 mem 64 MiB salt 30..3f. A changed value is a format change.")
        for m in mismatches { Issue.record("\(m)") }

        // The committed vectors must also open: reading old data forever.
        let opened = try vault.openChunk(chunk)
        #expect(opened == plain)
    }
}
