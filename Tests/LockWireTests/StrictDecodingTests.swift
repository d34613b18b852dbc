import Foundation
import LockCrypto
import LockTesting
import Testing
@testable import LockWire

/// Decoders of every record: unknown versions, trailing bytes, truncation and
/// absurd lengths are errors, never a crash, never a silently different record.
@Suite struct StrictDecodingTests {
    /// Decodes `bytes` as the record named `name` and re-encodes it.
    static func roundTrip(_ name: String, _ bytes: [UInt8]) throws -> [UInt8] {
        switch name {
        case "manifest", "manifest.empty": try Manifest(decoding: bytes).encoded
        case "batch", "batch.v2", "batch.v3", "batch.v3.attestation": try OperationBatch(decoding: bytes).encoded
        case "entry":
            // Framing alone cannot see a cut inside the envelope; opening can.
            try { let e = try JournalEntry(decoding: bytes); _ = try e.open(keys: Fixture.vault); return e.encoded }()
        case "entry.v2":
            // A cut anywhere breaks the envelope or the signature.
            try {
                let e = try JournalEntry(decoding: bytes)
                _ = try e.open(keys: Fixture.vault)
                guard e.hasValidSignature(vault: Fixture.vault.vaultID) else {
                    throw WireError.invalidValue(field: "signature", reason: "does not verify")
                }
                return e.encoded
            }()
        case "device.public-keys":
            // Not a record: the two 32-byte keys an enrolment sends.
            try {
                guard bytes.count == 64 else { throw WireError.invalidValue(field: "keys", reason: "64 bytes") }
                return bytes
            }()
        case "checkpoint.record": try Checkpoint(decoding: bytes).encoded
        case "tree-state": try TreeState(decoding: bytes).encoded
        case "keyring": try Keyring(decoding: bytes).encoded
        case "api.chunk-id-list": try ChunkIDList(decoding: bytes).encoded
        case "api.chunk-batch": try ChunkBatch(decoding: bytes).encoded
        case "api.append": try AppendRequest(decoding: bytes).encoded
        case "api.entry-page", "api.entry-page.v2": try EntryPage(decoding: bytes).encoded
        case let n where n.hasPrefix("operation."):
            try {
                var r = WireReader(bytes, record: "operation")
                let op = try Operation(from: &r)
                try r.finish()
                var w = WireWriter()
                op.encode(to: &w)
                return w.bytes
            }()
        case "checkpoint.sealed": try Checkpoint.open(bytes, keys: Fixture.vault).sealed(keys: Fixture.vault, nonce: Array(bytes[51..<75]))
        default: throw WireError.invalidValue(field: "test", reason: "no decoder for \(name)")
        }
    }

    @Test func everyRecordRoundTrips() throws {
        for (name, bytes) in try WireVectorTests.records() {
            #expect(try Self.roundTrip(name, bytes) == bytes, "\(name)")
        }
    }

    @Test func unknownVersionsAreRefused() throws {
        for (name, bytes) in try WireVectorTests.records() where !name.hasPrefix("operation.") && !name.hasPrefix("device.") {
            var changed = bytes
            changed[0] = 0x7F   // no record has (or will soon have) this version
            #expect(throws: (any Error).self, "\(name)") { try Self.roundTrip(name, changed) }
        }
    }

    @Test func trailingBytesAreRefused() throws {
        for (name, bytes) in try WireVectorTests.records() {
            // An entry and a sealed checkpoint end in an envelope, whose own
            // framing and tag refuse extra bytes.
            #expect(throws: (any Error).self, "\(name)") { try Self.roundTrip(name, bytes + [0]) }
        }
    }

    @Test func everyTruncationIsRefused() throws {
        for (name, bytes) in try WireVectorTests.records() {
            for length in 0..<bytes.count {
                #expect(throws: (any Error).self, "\(name) cut to \(length)") { try Self.roundTrip(name, Array(bytes.prefix(length))) }
            }
        }
    }

    /// Random single-byte changes: the decoder either refuses the bytes or
    /// decodes a record that encodes back to exactly those bytes (every
    /// record has one encoding), and never crashes.
    @Test func mutationsAreRefusedOrCanonical() throws {
        var rng = SeededGenerator(seed: 7)
        for (name, bytes) in try WireVectorTests.records().sorted(by: { $0.key < $1.key }) {
            for _ in 0..<300 {
                var changed = bytes
                let i = Int(rng.next() % UInt64(bytes.count))
                changed[i] = UInt8(truncatingIfNeeded: rng.next())
                if let again = try? Self.roundTrip(name, changed) {
                    #expect(again == changed, "\(name): byte \(i) decoded to a different record")
                }
            }
        }
    }

    @Test func absurdLengthsAreRefusedBeforeAllocating() {
        // A manifest claiming 2^24 chunks with 5 bytes present.
        #expect(throws: WireError.lengthOutOfRange(field: "manifest chunks", length: 1 << 24, limit: 0)) {
            try Manifest(decoding: [1, 0x01, 0x00, 0x00, 0x00])
        }
        #expect(throws: WireError.lengthOutOfRange(field: "manifest chunks", length: Int(UInt32.max), limit: 1 << 24)) {
            try Manifest(decoding: [1, 0xFF, 0xFF, 0xFF, 0xFF])
        }
        // A tree state claiming 2^64−1 nodes.
        #expect(throws: WireError.self) { try TreeState(decoding: [1] + [UInt8](repeating: 0xFF, count: 8)) }
        // A chunk batch of 1,001 chunks.
        #expect(throws: WireError.self) { try ChunkBatch(decoding: [1, 0, 0, 0x03, 0xE9]) }
        // A chunk length of zero or over 4 MiB.
        #expect(throws: WireError.self) { try Manifest(chunks: [.init(id: Fixture.id32(0), length: 0)]) }
        #expect(throws: WireError.self) { try Manifest(chunks: [.init(id: Fixture.id32(0), length: (4 << 20) + 1)]) }
    }

    @Test func namesAreValidated() {
        for bad in ["", ".", "..", "a/b", "nul\u{0}", String(repeating: "x", count: 256)] {
            #expect(throws: WireError.self, "\(bad.debugDescription)") { try Name(bad) }
        }
        #expect(throws: Never.self) { try Name(String(repeating: "é", count: 127)) }
        #expect(throws: WireError.self) { try Name(String(repeating: "é", count: 128)) }
    }

    @Test func attributesAreValidated() {
        #expect(throws: WireError.self) { try NodeAttributes(mode: 0o100644, mtime: Fixture.time) }
        let x = try! ExtendedAttribute(name: "user.x", value: [1])
        #expect(throws: WireError.self) { try NodeAttributes(mode: 0o644, mtime: Fixture.time, xattrs: [x, x]) }
        #expect(throws: WireError.self) { try ExtendedAttribute(name: "user.big", value: [UInt8](repeating: 0, count: 65_537)) }
    }

    /// Version 1 and 2 batches need an operation; version 3 ones may attest only.
    @Test func batchesNeedOneToManyOperations() throws {
        for version: UInt8 in [1, 2] {
            #expect(throws: WireError.self) { try OperationBatch(device: Fixture.id16(0), createdAt: Fixture.time, operations: [], version: version) }
            var bytes = Fixture.attestation.encoded
            bytes[0] = version
            bytes.remove(at: 25)  // the link
            #expect(throws: WireError.self) { try OperationBatch(decoding: bytes) }
        }
        #expect(try OperationBatch(decoding: Fixture.attestation.encoded).isAttestation)
        var badLink = Fixture.attestation.encoded
        badLink[25] = 2
        #expect(throws: WireError.self) { try OperationBatch(decoding: badLink) }
        #expect(throws: WireError.self) {
            try OperationBatch(device: Fixture.id16(0), createdAt: Fixture.time, link: .follows(stamp: 1, envelopeHash: [1]), operations: [])
        }
        #expect(Fixture.batch.chunkIDs == [Fixture.id32(1), Fixture.id32(2)])
    }

    @Test func theRootCannotBeCreated() throws {
        var w = WireWriter()
        Operation.create(node: .root, parent: .root, name: try Name("x"), revision: Fixture.id16(1),
                         attributes: Fixture.attributes, content: .directory).encode(to: &w)
        var r = WireReader(w.bytes, record: "operation")
        #expect(throws: WireError.self) { try Operation(from: &r) }
    }

    @Test func tamperedEntryIsRefusedOnOpen() throws {
        var bytes = try Fixture.entry().encoded
        bytes[bytes.count - 1] ^= 1
        let entry = try JournalEntry(decoding: bytes)
        #expect(throws: CryptoError.authenticationFailed) { try entry.open(keys: Fixture.vault) }
        // The clear base position is bound too.
        var moved = try Fixture.entry().encoded
        moved[8] ^= 1
        #expect(throws: CryptoError.authenticationFailed) { try JournalEntry(decoding: moved).open(keys: Fixture.vault) }
    }

    @Test func jsonBodiesAreStrict() throws {
        let login = LoginRequest(user: "alice", loginSecret: [1, 2, 3], deviceName: "laptop")
        #expect(try LoginRequest.decodeStrictly(login.jsonData()) == login)
        let extra = Data(#"{"user":"a","loginSecret":"AQID","deviceName":"d","admin":true}"#.utf8)
        #expect(throws: WireError.invalidValue(field: "body", reason: "unknown key “admin”")) { try LoginRequest.decodeStrictly(extra) }
        #expect(throws: WireError.self) { try LoginRequest.decodeStrictly(Data(#"{"user":"a"}"#.utf8)) }
        #expect(throws: WireError.self) { try LoginRequest.decodeStrictly(Data("[1,2]".utf8)) }
        #expect(throws: WireError.self) { try LoginRequest.decodeStrictly(Data([0xFF, 0x00])) }
        #expect(throws: WireError.self) { try LoginRequest.decodeStrictly(Data(#"{"user":5,"loginSecret":"","deviceName":""}"#.utf8)) }
        // Pre-login parameters below the floor are refused by the client.
        let weak = Data(#"{"kdf":"0100000001000000000080000000000000000000000000000000000000"}"#.utf8)
        #expect(throws: CryptoError.self) { try PreLoginResponse.decodeStrictly(weak).parameters() }
    }
}
