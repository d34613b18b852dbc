import Foundation
@testable import LockCrypto
import LockTesting
import Testing
@testable import LockWire

/// Golden vectors of every LockWire record (Tests/Vectors/wire.json).
///
/// A changed vector is a format change: bump the record's version and
/// update docs/design.md and docs/protocol.md.
@Suite struct WireVectorTests {
    /// Every record of the format, encoded from the fixtures.
    static func records() throws -> [String: [UInt8]] {
        let entry = try Fixture.entry()
        let keyring = Keyring(vaultID: Fixture.vault.vaultID, parameters: Fixture.kdf,
                              passwordSlot: try Fixture.vault.passwordSlot(
                                PasswordKeys.derive(password: "pw", parameters: Fixture.kdf), parameters: Fixture.kdf, nonce: Fixture.nonce),
                              recoverySlot: try Fixture.vault.recoverySlot(
                                RecoveryKey(secret: [UInt8](0x70..<0x90).withUnsafeBytes { try SecretKey(copying: $0) }),
                                nonce: Fixture.nonce))
        var out: [String: [UInt8]] = [
            "manifest": Fixture.manifest.encoded,
            "manifest.empty": Manifest.empty.encoded,
            "batch": Fixture.batch.encoded,
            "batch.v2": Fixture.batchV2.encoded,
            "batch.v3": Fixture.batchV3.encoded,
            "batch.v3.attestation": Fixture.attestation.encoded,
            "entry": entry.encoded,
            "entry.v2": try Fixture.signedEntry().encoded,
            "device.public-keys": Fixture.identity.signingPublicKey + Fixture.identity.boxPublicKey,
            "checkpoint.record": Fixture.checkpoint.encoded,
            "checkpoint.sealed": try Fixture.checkpoint.sealed(keys: Fixture.vault, nonce: Fixture.nonce),
            "tree-state": Fixture.treeState.encoded,
            "keyring": keyring.encoded,
            "api.chunk-id-list": try ChunkIDList(ids: [Fixture.id32(1), Fixture.id32(2)]).encoded,
            "api.chunk-batch": try ChunkBatch(chunks: [Fixture.vault.sealChunkForVector(Array("small".utf8))]).encoded,
            "api.append": AppendRequest(entry: entry, references: Fixture.batch.chunkIDs).encoded,
            "api.entry-page": try EntryPage(items: [.init(seq: JournalSeq(1), head: Fixture.genesis.next(seq: 1, entry: entry.encoded), entry: entry)],
                                            latest: JournalSeq(1)).encoded,
            "api.entry-page.v2": try EntryPage(start: .init(after: JournalSeq(0), head: Fixture.genesis),
                                               items: [.init(seq: JournalSeq(1), head: Fixture.genesis.next(seq: 1, entry: entry.encoded), entry: entry)],
                                               latest: JournalSeq(1)).encoded,
        ]
        for (i, op) in Fixture.operations.enumerated() {
            var w = WireWriter()
            op.encode(to: &w)
            out["operation.\(i)"] = w.bytes
        }
        return out
    }

    @Test func goldenVectors() throws {
        var v = try Self.records().mapValues { Hex.encode($0) }
        v["json.prelogin"] = String(decoding: try PreLoginResponse(kdf: Fixture.kdf).jsonData(), as: UTF8.self)
        v["json.login"] = String(decoding: try LoginRequest(user: "alice", loginSecret: Array(0..<32), deviceName: "laptop").jsonData(), as: UTF8.self)
        v["json.append-response"] = String(decoding: try AppendResponse(seq: JournalSeq(9), head: Fixture.genesis).jsonData(), as: UTF8.self)
        v["json.error"] = String(decoding: try ErrorBody(error: "missing_chunks", message: "2 chunks are missing", missing: [Fixture.id32(1)]).jsonData(), as: UTF8.self)
        let mismatches = try GoldenVectors.verify(v, file: "wire", about:
            "LockWire golden vectors from Tests/LockWireTests/Fixtures.swift (MK 00..1f, vault a0..af, nonce 10..27). A changed value is a format change.")
        for m in mismatches { Issue.record("\(m)") }
    }

    @Test func committedEntryStillOpens() throws {
        // Reading old data forever: decode the committed bytes, not freshly made ones.
        let stored = try GoldenVectors.load(file: "wire")
        let entry = try JournalEntry(decoding: Hex.decode(stored["entry"]!)!)
        #expect(try entry.open(keys: Fixture.vault) == Fixture.batch)
        let signed = try JournalEntry(decoding: Hex.decode(stored["entry.v2"]!)!)
        #expect(signed.hasValidSignature(vault: Fixture.vault.vaultID) && signed.unsigned == entry)
        #expect(try signed.open(keys: Fixture.vault) == Fixture.batch)
        let checkpoint = try Checkpoint.open(Hex.decode(stored["checkpoint.sealed"]!)!, keys: Fixture.vault)
        #expect(checkpoint == Fixture.checkpoint)
        let keyring = try Keyring(decoding: Hex.decode(stored["keyring"]!)!)
        let opened = try keyring.unlock(password: PasswordKeys.derive(password: "pw", parameters: Fixture.kdf))
        #expect(opened.content.id == Fixture.vault.content.id)
    }
}

extension VaultKeys {
    /// A chunk sealed with the fixed nonce, through the public envelope API.
    func sealChunkForVector(_ plain: [UInt8]) throws -> SealedChunk {
        let id = plain.withUnsafeBytes { chunkID(of: $0) }
        return SealedChunk(id: id, bytes: try Envelope.seal(plain, kind: .chunk, key: content,
                                                             context: vaultID.bytes + id.bytes, nonce: Fixture.nonce))
    }
}
