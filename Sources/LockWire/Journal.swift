import LockCrypto

/// Who wrote a journal entry, and the proof: version 2 entries only.
public struct EntrySigner: Sendable, Hashable {
    /// The writing device (the server checks it is the caller).
    public let device: DeviceID
    /// Its Ed25519 public key (the server checks it is the one registered
    /// for the device; clients, that it is the one the chain bound to it).
    public let publicKey: [UInt8]
    /// Ed25519 over `JournalEntry.signedMessage`.
    public let signature: [UInt8]

    public init(device: DeviceID, publicKey: [UInt8], signature: [UInt8]) {
        self.device = device
        self.publicKey = publicKey
        self.signature = signature
    }
}

/// A journal entry as the server stores it and as the chain hashes it.
///
/// Version 1 (written by lockfs 0.1; still read):
///
///     0   1   version 0x01
///     1   8   base seq (u64 BE): the last sequence number the writer had verified
///     9   32  base head: the chain head at base seq
///     41  …   envelope (kind 0x02) of an OperationBatch, sealed with
///             context vault id ‖ base seq ‖ base head
///
/// Version 2 (signed by the writing device):
///
///     0   1   version 0x02
///     1   8   base seq
///     9   32  base head
///     41  16  device id
///     57  32  the device's Ed25519 public key
///     89  64  signature: Ed25519 over "lockfs entry v2" ‖ vault id ‖ bytes 0..<89 ‖ envelope
///     153 …   envelope, as in version 1
///
/// The base position is in the clear because it is the envelope's
/// associated data; a reader checks that its own verified chain has that
/// head at that sequence number (a server showing two clients different
/// histories is caught there). The envelope does not depend on the signer,
/// so an entry sealed once can be signed when it is sent (by the device
/// that sends it, after a re-login too).
public struct JournalEntry: WireRecord {
    public static let wireVersion: UInt8 = 2
    public static let readableVersions: ClosedRange<UInt8> = 1...2
    public static let recordName = "journal entry"
    /// Header bytes before the envelope: version 1.
    public static let headerSize = 41
    /// Header bytes before the envelope: version 2.
    public static let signedHeaderSize = 153
    /// The smallest and largest header of any readable version.
    public static let headerSizes = headerSize...signedHeaderSize
    static let signatureDomain = Array("lockfs entry v2".utf8)

    public let baseSeq: JournalSeq
    public let baseHead: ChainHead
    /// nil for a version 1 (unsigned) entry.
    public let signer: EntrySigner?
    public let sealedBatch: [UInt8]

    /// - Throws: the envelope framing errors of `CryptoError` when `sealedBatch`
    ///   is not shaped like a journal-entry envelope.
    public init(baseSeq: JournalSeq, baseHead: ChainHead, signer: EntrySigner? = nil, sealedBatch: [UInt8]) throws {
        try sealedBatch.withUnsafeBytes { try Envelope.validateFraming($0, kind: .journalEntry) }
        if let signer {
            guard signer.publicKey.count == DeviceIdentity.publicKeySize, signer.signature.count == DeviceIdentity.signatureSize else {
                throw WireError.invalidValue(field: "signer", reason: "a public key is 32 bytes and a signature 64")
            }
        }
        self.baseSeq = baseSeq
        self.baseHead = baseHead
        self.signer = signer
        self.sealedBatch = sealedBatch
    }

    /// Seals `batch` for the chain position (`baseSeq`, `baseHead`), unsigned.
    public static func seal(_ batch: OperationBatch, keys: VaultKeys, baseSeq: JournalSeq, baseHead: ChainHead,
                            nonce: [UInt8]? = nil) throws -> JournalEntry {
        let sealed = try keys.sealEntry(batch.encoded, baseSeq: baseSeq.rawValue, baseHead: baseHead, nonce: nonce)
        return try JournalEntry(baseSeq: baseSeq, baseHead: baseHead, sealedBatch: sealed)
    }

    /// This entry signed by `identity` as `device` of the vault `vault` (version 2).
    public func signed(by identity: DeviceIdentity, device: DeviceID, vault: VaultID) -> JournalEntry {
        let message = Self.signedMessage(vault: vault, baseSeq: baseSeq, baseHead: baseHead, device: device,
                                         publicKey: identity.signingPublicKey, sealedBatch: sealedBatch)
        let signer = EntrySigner(device: device, publicKey: identity.signingPublicKey, signature: identity.sign(message))
        return try! JournalEntry(baseSeq: baseSeq, baseHead: baseHead, signer: signer, sealedBatch: sealedBatch)
    }

    /// The same entry without its signature: what the writer sealed (and
    /// keeps while it is in flight).
    public var unsigned: JournalEntry {
        signer == nil ? self : try! JournalEntry(baseSeq: baseSeq, baseHead: baseHead, sealedBatch: sealedBatch)
    }

    /// Whether the signature is valid for `vault` (false for an unsigned entry).
    /// It says nothing about whether the key is the device's: check that against
    /// the registered key (server) or the chain's binding (clients).
    public func hasValidSignature(vault: VaultID) -> Bool {
        guard let signer else { return false }
        let message = Self.signedMessage(vault: vault, baseSeq: baseSeq, baseHead: baseHead, device: signer.device,
                                         publicKey: signer.publicKey, sealedBatch: sealedBatch)
        return DeviceIdentity.verify(signer.signature, of: message, publicKey: signer.publicKey)
    }

    /// "lockfs entry v2" ‖ vault id ‖ the header up to the signature ‖ envelope.
    static func signedMessage(vault: VaultID, baseSeq: JournalSeq, baseHead: ChainHead, device: DeviceID,
                              publicKey: [UInt8], sealedBatch: [UInt8]) -> [UInt8] {
        var w = WireWriter()
        w.raw(signatureDomain)
        w.id(vault)
        w.u8(2)
        w.u64(baseSeq.rawValue)
        w.id(baseHead)
        w.id(device)
        w.raw(publicKey)
        w.raw(sealedBatch)
        return w.bytes
    }

    /// Opens and decodes the batch.
    /// - Throws: `CryptoError` for a bad envelope, `WireError` for a bad batch.
    public func open(keys: VaultKeys) throws -> OperationBatch {
        try OperationBatch(decoding: keys.openEntry(sealedBatch, baseSeq: baseSeq.rawValue, baseHead: baseHead))
    }

    public func encode(to w: inout WireWriter) {
        w.u8(signer == nil ? 1 : 2)
        w.u64(baseSeq.rawValue)
        w.id(baseHead)
        if let signer {
            w.id(signer.device)
            w.raw(signer.publicKey)
            w.raw(signer.signature)
        }
        w.raw(sealedBatch)
    }

    public init(from r: inout WireReader) throws {
        let version = try r.version(in: Self.readableVersions)
        let seq = JournalSeq(try r.u64())
        let head: ChainHead = try r.id()
        var signer: EntrySigner? = nil
        if version == 2 {
            signer = EntrySigner(device: try r.id(), publicKey: try r.raw(32), signature: try r.raw(64))
        }
        try self.init(baseSeq: seq, baseHead: head, signer: signer, sealedBatch: r.rest())
    }
}

/// The state of the whole tree at a sequence number, so that a new device
/// starts there instead of replaying every entry.
///
/// Plaintext of the checkpoint envelope (kind 0x03, context vault id ‖ seq ‖ head):
///
///     0   1   version 0x01
///     1   8   seq (u64 BE)
///     9   32  chain head at seq
///     41  8   node count (u64 BE)
///     49  …   manifest of the TreeState bytes, stored as ordinary chunks
///
/// Keeping the tree in chunks keeps this record small, lets unchanged parts
/// of the tree dedup between checkpoints, and makes the tree's chunks look
/// like any other chunks to the server.
public struct Checkpoint: WireRecord {
    public static let wireVersion: UInt8 = 1
    public static let recordName = "checkpoint"

    public let seq: JournalSeq
    public let head: ChainHead
    public let nodeCount: UInt64
    public let state: Manifest

    public init(seq: JournalSeq, head: ChainHead, nodeCount: UInt64, state: Manifest) {
        self.seq = seq
        self.head = head
        self.nodeCount = nodeCount
        self.state = state
    }

    /// The sealed checkpoint as stored on the server: seq and head in the
    /// clear (the server indexes by them), then the envelope.
    ///
    ///     0   1   version 0x01
    ///     1   8   seq
    ///     9   32  head
    ///     41  …   envelope (kind 0x03)
    public func sealed(keys: VaultKeys, nonce: [UInt8]? = nil) throws -> [UInt8] {
        var w = WireWriter()
        w.u8(Self.wireVersion)
        w.u64(seq.rawValue)
        w.id(head)
        w.raw(try keys.sealCheckpoint(encoded, seq: seq.rawValue, head: head, nonce: nonce))
        return w.bytes
    }

    /// Opens a stored checkpoint; its clear seq and head must match the sealed ones.
    public static func open(_ stored: [UInt8], keys: VaultKeys) throws -> Checkpoint {
        var r = WireReader(stored, record: "stored checkpoint")
        try r.version(wireVersion)
        let seq = try r.u64()
        let head: ChainHead = try r.id()
        let checkpoint = try Checkpoint(decoding: keys.openCheckpoint(r.rest(), seq: seq, head: head))
        guard checkpoint.seq.rawValue == seq, checkpoint.head == head else {
            throw WireError.invalidValue(field: "checkpoint", reason: "sealed position differs from stored position")
        }
        return checkpoint
    }

    public func encode(to w: inout WireWriter) {
        w.u8(Self.wireVersion)
        w.u64(seq.rawValue)
        w.id(head)
        w.u64(nodeCount)
        state.encode(to: &w)
    }

    public init(from r: inout WireReader) throws {
        try r.version(Self.wireVersion)
        self.init(seq: JournalSeq(try r.u64()), head: try r.id(), nodeCount: try r.u64(), state: try Manifest(from: &r))
    }
}

/// One node of a checkpoint's tree state.
///
///     0   16  node id
///     16  16  parent id
///     32  …   name (u16 length ‖ UTF-8)
///     …   16  revision
///     …   …   attributes (mode u32 ‖ mtime i64 ‖ xattrs)
///     …   …   content (kind u8 ‖ manifest | symlink target | nothing)
///
/// A TreeState is: version 0x01 ‖ node count u64 ‖ that many NodeRecords,
/// parents before children. It is chunked and sealed like file content.
public struct NodeRecord: Hashable, Sendable {
    public let node: NodeID
    public let parent: NodeID
    public let name: Name
    public let revision: RevisionID
    public let attributes: NodeAttributes
    public let content: NodeContent

    public init(node: NodeID, parent: NodeID, name: Name, revision: RevisionID,
                attributes: NodeAttributes, content: NodeContent) {
        self.node = node
        self.parent = parent
        self.name = name
        self.revision = revision
        self.attributes = attributes
        self.content = content
    }

    func encode(to w: inout WireWriter) {
        w.id(node); w.id(parent); name.encode(to: &w); w.id(revision)
        attributes.encode(to: &w); content.encode(to: &w)
    }

    init(from r: inout WireReader) throws {
        node = try r.id()
        parent = try r.id()
        name = try Name(from: &r)
        revision = try r.id()
        attributes = try NodeAttributes(from: &r)
        content = try NodeContent(from: &r)
    }
}

/// The whole tree at a checkpoint: version 0x01 ‖ node count u64 ‖ NodeRecords.
public struct TreeState: WireRecord {
    public static let wireVersion: UInt8 = 1
    public static let recordName = "tree state"
    /// The smallest NodeRecord: ids, a 1-byte name, revision, attributes, kind.
    static let minimumNodeSize = 16 + 16 + 3 + 16 + 16 + 1

    public let nodes: [NodeRecord]

    public init(nodes: [NodeRecord]) { self.nodes = nodes }

    public func encode(to w: inout WireWriter) {
        w.u8(Self.wireVersion)
        w.u64(UInt64(nodes.count))
        for n in nodes { n.encode(to: &w) }
    }

    public init(from r: inout WireReader) throws {
        try r.version(Self.wireVersion)
        let count = try r.u64()
        guard count <= UInt64(r.remaining / Self.minimumNodeSize) else {
            throw WireError.lengthOutOfRange(field: "node count", length: Int(clamping: count), limit: r.remaining / Self.minimumNodeSize)
        }
        var nodes: [NodeRecord] = []
        nodes.reserveCapacity(Int(count))
        for _ in 0..<count { nodes.append(try NodeRecord(from: &r)) }
        self.nodes = nodes
    }
}
