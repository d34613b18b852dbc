import LockCrypto

/// What a node holds besides its attributes.
public enum NodeContent: Hashable, Sendable {
    case file(Manifest)
    case directory
    case symlink(target: String)

    public var kind: NodeKind {
        switch self {
        case .file: .file
        case .directory: .directory
        case .symlink: .symlink
        }
    }

    /// kind u8 ‖ (file: manifest | symlink: u16 length ‖ target | directory: nothing)
    func encode(to w: inout WireWriter) {
        w.u8(kind.rawValue)
        switch self {
        case .file(let m): m.encode(to: &w)
        case .directory: break
        case .symlink(let target): w.bytes16(Array(target.utf8))
        }
    }

    init(from r: inout WireReader) throws {
        let k = try r.u8()
        switch NodeKind(rawValue: k) {
        case .file: self = .file(try Manifest(from: &r))
        case .directory: self = .directory
        case .symlink:
            let bytes = try r.bytes16(field: "symlink target", allowed: WireLimits.symlinkTargetBytes)
            guard let text = String(validating: bytes, as: UTF8.self), !bytes.contains(0) else {
                throw WireError.invalidValue(field: "symlink target", reason: "not UTF-8 without NUL")
            }
            self = .symlink(target: text)
        case nil: throw WireError.invalidValue(field: "node kind", reason: "unknown kind \(k)")
        }
    }
}

/// The attributes every node has.
public struct NodeAttributes: Hashable, Sendable {
    /// Permission bits only (≤ 0o7777); the kind gives the file type.
    public let mode: UInt32
    public let mtime: Timestamp
    /// User extended attributes, in canonical (name byte) order.
    public let xattrs: [ExtendedAttribute]

    public init(mode: UInt32, mtime: Timestamp, xattrs: [ExtendedAttribute] = []) throws {
        guard mode & ~WireLimits.modeMask == 0 else {
            throw WireError.invalidValue(field: "mode", reason: "only permission bits (0o7777) are stored")
        }
        guard xattrs.count <= WireLimits.xattrCount else {
            throw WireError.lengthOutOfRange(field: "xattr count", length: xattrs.count, limit: WireLimits.xattrCount)
        }
        guard Set(xattrs.map(\.name)).count == xattrs.count else {
            throw WireError.invalidValue(field: "xattr names", reason: "not unique")
        }
        self.mode = mode
        self.mtime = mtime
        self.xattrs = ExtendedAttribute.canonical(xattrs)
    }

    /// mode u32 ‖ mtime i64 ‖ xattr count u32 ‖ xattrs (u16 name length ‖ name ‖ u32 value length ‖ value)
    func encode(to w: inout WireWriter) {
        w.u32(mode)
        w.i64(mtime.nanoseconds)
        ExtendedAttribute.encode(xattrs, to: &w)
    }

    init(from r: inout WireReader) throws {
        let mode = try r.u32()
        let mtime = Timestamp(nanoseconds: try r.i64())
        try self.init(mode: mode, mtime: mtime, xattrs: try ExtendedAttribute.decodeList(from: &r))
    }
}

/// One change to the tree. A journal entry carries a batch of them.
///
/// Encoding: a tag byte, then the fields in the order listed (docs/design.md,
/// "Operations"). Revisions make conflicts detectable on replay: an
/// operation whose `base` is not the node's current revision is stale.
public enum Operation: Hashable, Sendable {
    /// tag 0x01: a new node under `parent`.
    case create(node: NodeID, parent: NodeID, name: Name, revision: RevisionID, attributes: NodeAttributes, content: NodeContent)
    /// tag 0x02: new content for a file (write, truncate, replace).
    case write(node: NodeID, base: RevisionID, revision: RevisionID, mtime: Timestamp, manifest: Manifest)
    /// tag 0x03: a rename or move.
    case move(node: NodeID, parent: NodeID, name: Name)
    /// tag 0x04: deletion of a node (a folder with everything in it).
    case delete(node: NodeID, base: RevisionID)
    /// tag 0x05: new mode, mtime and extended attributes.
    case setAttributes(node: NodeID, base: RevisionID, revision: RevisionID, attributes: NodeAttributes)

    public var node: NodeID {
        switch self {
        case .create(let n, _, _, _, _, _), .write(let n, _, _, _, _), .move(let n, _, _),
             .delete(let n, _), .setAttributes(let n, _, _, _): n
        }
    }

    /// The revision a create, write or attribute change gives its node (nil for moves and deletes).
    public var madeRevision: RevisionID? {
        switch self {
        case .create(_, _, _, let r, _, _), .write(_, _, let r, _, _), .setAttributes(_, _, let r, _): r
        case .move, .delete: nil
        }
    }

    /// The chunks this operation makes the vault reference.
    public var chunkIDs: [ChunkID] {
        switch self {
        case .create(_, _, _, _, _, .file(let m)), .write(_, _, _, _, let m): m.chunks.map(\.id)
        default: []
        }
    }

    func encode(to w: inout WireWriter) {
        switch self {
        case let .create(node, parent, name, revision, attributes, content):
            w.u8(0x01); w.id(node); w.id(parent); name.encode(to: &w); w.id(revision)
            attributes.encode(to: &w); content.encode(to: &w)
        case let .write(node, base, revision, mtime, manifest):
            w.u8(0x02); w.id(node); w.id(base); w.id(revision); w.i64(mtime.nanoseconds); manifest.encode(to: &w)
        case let .move(node, parent, name):
            w.u8(0x03); w.id(node); w.id(parent); name.encode(to: &w)
        case let .delete(node, base):
            w.u8(0x04); w.id(node); w.id(base)
        case let .setAttributes(node, base, revision, attributes):
            w.u8(0x05); w.id(node); w.id(base); w.id(revision); attributes.encode(to: &w)
        }
    }

    init(from r: inout WireReader) throws {
        let tag = try r.u8()
        switch tag {
        case 0x01:
            let node: NodeID = try r.id(), parent: NodeID = try r.id()
            let name = try Name(from: &r)
            let revision: RevisionID = try r.id()
            let attributes = try NodeAttributes(from: &r)
            self = .create(node: node, parent: parent, name: name, revision: revision,
                           attributes: attributes, content: try NodeContent(from: &r))
        case 0x02:
            self = .write(node: try r.id(), base: try r.id(), revision: try r.id(),
                          mtime: Timestamp(nanoseconds: try r.i64()), manifest: try Manifest(from: &r))
        case 0x03:
            self = .move(node: try r.id(), parent: try r.id(), name: try Name(from: &r))
        case 0x04:
            self = .delete(node: try r.id(), base: try r.id())
        case 0x05:
            self = .setAttributes(node: try r.id(), base: try r.id(), revision: try r.id(),
                                  attributes: try NodeAttributes(from: &r))
        default:
            throw WireError.invalidValue(field: "operation tag", reason: "unknown tag \(tag)")
        }
        if node == .root, case .create = self {
            throw WireError.invalidValue(field: "node", reason: "the root cannot be created")
        }
    }
}

/// Where a batch sits in its device's own chain (batch version 3): the
/// device's previous batch, or none for the first batch a device makes.
/// Every client checks it against the batches of that device it has seen,
/// so a server that drops, replays or reorders a device's entries is
/// caught even where the journal's hash chain was recomputed around the
/// gap (docs/design.md, "Device chains").
public enum BatchLink: Hashable, Sendable {
    /// The first batch of this device.
    case first
    /// Follows the device's batch with that stamp (createdAt, ns) whose
    /// entry's envelope has that hash (`BatchLink.envelopeHash`).
    case follows(stamp: Int64, envelopeHash: [UInt8])

    static let hashDomain = Array("lockfs batch link v1".utf8)

    /// BLAKE2b-256("lockfs batch link v1" ‖ the entry's envelope): names a
    /// batch as sealed, whoever signed the entry that carries it, so that a
    /// retried append is the same batch however often it landed.
    public static func envelopeHash(_ sealedBatch: [UInt8]) -> [UInt8] {
        Hash.blake2b256(parts: [hashDomain, sealedBatch])
    }

    /// tag u8 ‖ (0x01: stamp i64 ‖ hash 32)
    func encode(to w: inout WireWriter) {
        switch self {
        case .first: w.u8(0)
        case .follows(let stamp, let hash):
            w.u8(1)
            w.i64(stamp)
            w.raw(hash)
        }
    }

    init(from r: inout WireReader) throws {
        switch try r.u8() {
        case 0: self = .first
        case 1: self = .follows(stamp: try r.i64(), envelopeHash: try r.raw(32))
        case let tag: throw WireError.invalidValue(field: "batch link", reason: "unknown tag \(tag)")
        }
    }
}

/// The plaintext of a journal entry: who wrote a batch of operations, when.
///
/// The version byte also names the replay rules the writer made the batch
/// for (docs/design.md, "Replay rules"): every client replays a batch by the
/// rules of its version, so clients converge whenever they were upgraded.
/// 0x01: the first rules; 0x02: folder deletes take only empty folders,
/// operations follow the version their writer saw into its conflict copy,
/// same-named folders made concurrently merge; 0x03: rules 2, and the
/// batch names its device's previous batch (`BatchLink`) and may hold no
/// operation (an attestation: the entry only says that its writer verified
/// the journal up to the entry's base).
///
///     0   1   version 0x01 or 0x02
///     1   16  device id
///     17  8   created at (i64 BE, ns since the epoch)
///     25  4   operation count n (u32 BE, 1…100,000)
///     29  …   n operations
///
/// Version 0x03:
///
///     0   1   version 0x03
///     1   16  device id
///     17  8   created at
///     25  1   link: 0x00 first batch of the device, or
///             0x01 ‖ previous stamp (i64 BE) ‖ previous envelope hash (32)
///     …   4   operation count n (0…100,000)
///     …   …   n operations
public struct OperationBatch: WireRecord {
    /// The version this client writes (the newest replay rules).
    public static let wireVersion: UInt8 = 3
    /// The versions this client reads.
    public static let readableVersions: ClosedRange<UInt8> = 1...3
    public static let recordName = "operation batch"

    /// The record's version: the replay rules it was made for (3: rules 2
    /// with device chains).
    public let version: UInt8
    public let device: DeviceID
    public let createdAt: Timestamp
    /// The device's previous batch (nil before version 3).
    public let link: BatchLink?
    public let operations: [Operation]

    /// The replay rules of the batch (version 3 replays by rules 2).
    public var rules: UInt8 { min(version, 2) }

    /// Whether the batch only attests its entry's base (no operation).
    public var isAttestation: Bool { operations.isEmpty }

    /// - Parameter link: version 3 only; nil there means `.first`.
    public init(device: DeviceID, createdAt: Timestamp, link: BatchLink? = nil, operations: [Operation],
                version: UInt8 = OperationBatch.wireVersion) throws {
        let link = version >= 3 ? (link ?? .first) : link
        guard Self.readableVersions.contains(version) else { throw WireError.unsupportedVersion(record: Self.recordName, found: version) }
        let least = version >= 3 ? 0 : 1
        guard (least...WireLimits.operationsPerEntry).contains(operations.count) else {
            throw WireError.lengthOutOfRange(field: "operations", length: operations.count, limit: WireLimits.operationsPerEntry)
        }
        guard (version >= 3) == (link != nil) else {
            throw WireError.invalidValue(field: "batch link", reason: "version 3 batches have one, older ones none")
        }
        if case .follows(_, let hash)? = link, hash.count != 32 {
            throw WireError.invalidValue(field: "batch link", reason: "the previous batch's hash is 32 bytes")
        }
        self.version = version
        self.device = device
        self.createdAt = createdAt
        self.link = link
        self.operations = operations
    }

    /// Every chunk id the batch references, each once, in first-use order.
    public var chunkIDs: [ChunkID] {
        var seen = Set<ChunkID>()
        return operations.flatMap(\.chunkIDs).filter { seen.insert($0).inserted }
    }

    public func encode(to w: inout WireWriter) {
        w.u8(version)
        w.id(device)
        w.i64(createdAt.nanoseconds)
        link?.encode(to: &w)
        w.u32(UInt32(operations.count))
        for op in operations { op.encode(to: &w) }
    }

    public init(from r: inout WireReader) throws {
        let version = try r.version(in: Self.readableVersions)
        let device: DeviceID = try r.id()
        let createdAt = Timestamp(nanoseconds: try r.i64())
        let link = version >= 3 ? try BatchLink(from: &r) : nil
        let n = try r.count(field: "operations", limit: WireLimits.operationsPerEntry, minimumItemSize: 33)
        guard n >= 1 || version >= 3 else { throw WireError.lengthOutOfRange(field: "operations", length: 0, limit: 1) }
        var ops: [Operation] = []
        ops.reserveCapacity(n)
        for _ in 0..<n { ops.append(try Operation(from: &r)) }
        try self.init(device: device, createdAt: createdAt, link: link, operations: ops, version: version)
    }
}
