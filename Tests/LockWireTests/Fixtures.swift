import LockCrypto
import LockTesting
@testable import LockWire

/// Fixed values for golden vectors and round trips.
enum Fixture {
    static func id16<T: BytesIdentifier>(_ seed: UInt8) -> T { try! T(bytes: (0..<16).map { seed &+ UInt8($0) }) }
    static func id32<T: BytesIdentifier>(_ seed: UInt8) -> T { try! T(bytes: (0..<32).map { seed &+ UInt8($0) }) }

    static let vault = VaultKeys(vaultID: id16(0xA0), master: try! [UInt8](0..<32).withUnsafeBytes { try SecretKey(copying: $0) })
    static let nonce = Array(UInt8(0x10)...UInt8(0x27))
    static let time = Timestamp(nanoseconds: 1_764_115_200_123_456_789)
    static let manifest = try! Manifest(chunks: [
        .init(id: id32(0x01), length: 1_048_576),
        .init(id: id32(0x02), length: 12_345),
    ])
    static let attributes = try! NodeAttributes(mode: 0o644, mtime: time, xattrs: [
        try! ExtendedAttribute(name: "user.tag", value: Array("blue".utf8)),
        try! ExtendedAttribute(name: "user.a", value: []),
    ])

    static let operations: [Operation] = [
        .create(node: id16(0x10), parent: .root, name: try! Name("report.pdf"), revision: id16(0x20),
                attributes: attributes, content: .file(manifest)),
        .create(node: id16(0x11), parent: .root, name: try! Name("Photos 📷"), revision: id16(0x21),
                attributes: try! NodeAttributes(mode: 0o755, mtime: time), content: .directory),
        .create(node: id16(0x12), parent: id16(0x11), name: try! Name("latest"), revision: id16(0x22),
                attributes: try! NodeAttributes(mode: 0o777, mtime: time), content: .symlink(target: "../report.pdf")),
        .write(node: id16(0x10), base: id16(0x20), revision: id16(0x23), mtime: time, manifest: .empty),
        .move(node: id16(0x10), parent: id16(0x11), name: try! Name("old report.pdf")),
        .setAttributes(node: id16(0x10), base: id16(0x23), revision: id16(0x24), attributes: attributes),
        .delete(node: id16(0x11), base: id16(0x21)),
    ]

    /// A version-1 batch (the first replay rules): its vectors are read forever.
    static let batch = try! OperationBatch(device: id16(0x40), createdAt: time, operations: operations, version: 1)
    /// The same operations in a version-2 batch (rules 2).
    static let batchV2 = try! OperationBatch(device: id16(0x40), createdAt: time, operations: operations, version: 2)
    /// The same operations in a version-3 batch, following a batch of the
    /// device made a second before whose envelope was bytes 00 01 02.
    static let batchV3 = try! OperationBatch(device: id16(0x40), createdAt: time,
                                             link: .follows(stamp: time.nanoseconds - 1_000_000_000, envelopeHash: BatchLink.envelopeHash([0, 1, 2])),
                                             operations: operations)
    /// A device's first batch, attesting only (no operation).
    static let attestation = try! OperationBatch(device: id16(0x40), createdAt: time, link: .first, operations: [])

    static var genesis: ChainHead { ChainHead.genesis(of: vault.vaultID) }

    /// A device identity: signing seed 50 … 6f, X25519 secret 90 … af.
    static let identity = DeviceIdentity(
        signingSeed: try! [UInt8](0x50..<0x70).withUnsafeBytes { try SecretKey(copying: $0) },
        boxSecret: try! [UInt8](0x90..<0xB0).withUnsafeBytes { try SecretKey(copying: $0) })

    /// `entry()` signed by `identity` as device 40 … 4f (Ed25519 is deterministic).
    static func signedEntry() throws -> JournalEntry {
        try entry().signed(by: identity, device: id16(0x40), vault: vault.vaultID)
    }

    static func entry() throws -> JournalEntry {
        try JournalEntry.seal(batch, keys: vault, baseSeq: .start, baseHead: genesis, nonce: nonce)
    }

    static let treeState = TreeState(nodes: [
        NodeRecord(node: id16(0x11), parent: .root, name: try! Name("Photos"), revision: id16(0x21),
                   attributes: try! NodeAttributes(mode: 0o755, mtime: time), content: .directory),
        NodeRecord(node: id16(0x10), parent: id16(0x11), name: try! Name("a.jpg"), revision: id16(0x23),
                   attributes: attributes, content: .file(manifest)),
    ])

    static let checkpoint = Checkpoint(seq: JournalSeq(7), head: id32(0x70), nodeCount: 2, state: manifest)

    static let kdf = try! KDFParameters(opsLimit: 2, memLimit: 64 << 20, salt: Array(0x30...0x3F))
}
