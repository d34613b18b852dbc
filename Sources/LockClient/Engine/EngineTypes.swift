import Foundation
import LockChunker
import LockCrypto
import LockWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a node is, as a file system shows it: a synced kind, or a
/// local-only FIFO or socket (`LocalNode`).
public enum FileKind: Sendable, Equatable {
    case file, directory, symlink, fifo, socket

    public init(_ kind: NodeKind) {
        switch kind {
        case .file: self = .file
        case .directory: self = .directory
        case .symlink: self = .symlink
        }
    }
}

/// What `getattr` and `lookup` return: a node as a file system shows it.
public struct Attributes: Sendable, Equatable {
    public var ino: UInt64
    public var kind: FileKind
    public var size: Int
    /// Permission bits (the kind gives the file type).
    public var mode: UInt32
    public var mtime: Timestamp
    /// When the node last changed in any way (content, name, mode, a
    /// folder's entries): `Node.ctime`.
    public var ctime: Timestamp
    /// The access time set on this device (utimensat, `touch -a`, `cp -a`),
    /// else the mtime. Local: not synced, and reads do not move it (as with
    /// noatime).
    public var atime: Timestamp
}

/// Where an engine stands, for `lockfs status` and the status xattr.
public struct EngineStatus: Sendable, Codable {
    public var online: Bool
    public var lastError: String?
    public var lastSync: Date?
    public var cursor: UInt64
    public var queuedOperations: Int
    public var queuedBytes: Int
    public var cacheSize: Int
    public var cacheLimit: Int
    public var pinnedBytes: Int
    /// Set when the server broke the rules (tampered data, a broken or forked journal).
    public var integrityAlarm: String?
    /// Journal entries skipped because their signature or signer was wrong
    /// (`EntryAuthority`; counted for this home since it began), and why the
    /// last one was.
    public var ignoredEntries: Int = 0
    public var lastIgnoredEntry: String? = nil
    /// The chain head at `cursor`, short (`headFingerprint`): two devices at
    /// the same entry must show the same one (compare them to rule out a fork).
    public var head: String = ""
    /// Devices of the account the journal has not heard from for longer than
    /// `EngineOptions.silenceWarning`, as "name (age)": offline, or kept on
    /// another history by the server (docs/security.md, "Guarantees").
    public var silentDevices: [String] = []
}

/// Engine settings.
public struct EngineOptions: Sendable {
    /// Plaintext bytes the chunk cache keeps (pinned data may exceed it).
    public var cacheLimit: Int = 10 << 30
    /// How long one long-poll waits for new entries.
    public var pollWait: Duration = .seconds(25)
    /// Operations per journal entry.
    public var operationsPerEntry = 5_000
    /// Chunks fetched ahead of a sequential reader.
    public var readAhead = 2
    /// How long a read waits for a chunk that is not local before it fails
    /// with `.offline` (EIO at the mount), retries included.
    public var fetchTimeout: Duration = .seconds(20)
    /// How long the background uploader lets local changes gather before it
    /// seals the next entry. Without it a burst (untar, cp -r) was sealed an
    /// operation or two at a time: several synced SQLite commits per entry
    /// competing with the writer's own, and a create claimed before its
    /// file's write could be folded into it. Local durability is unchanged.
    public var uploadSettle: Duration = .milliseconds(150)
    /// While local changes keep coming (an untar, a build), the uploader
    /// waits for a pause of `uploadSettle`, but no longer than this after
    /// the first of them: larger entries, and less work competing with the
    /// burst itself.
    public var uploadMaxDelay: Duration = .seconds(2)
    /// Sealed chunks up to this size are kept in the index, in the same
    /// transaction as the operation that needs them (no file, no fsync);
    /// larger ones are outbox files, fsynced before the operation commits.
    public var inlineChunkLimit = 256 << 10
    /// How often local commits are made durable against a power cut when
    /// nothing asked for it sooner (fsync(2), unmount): ext4's default.
    public var syncInterval: Duration = .seconds(5)
    /// How the puller and the uploader wait between failed attempts: the cap
    /// bounds how late a server that comes back is noticed.
    public var reconnect = Backoff.reconnect
    /// When this device attests the head it verified after applying other
    /// devices' changes, and how often a running device attests anyway
    /// (`AttestationPolicy`).
    public var attestations = AttestationPolicy(after: .seconds(600), heartbeat: .seconds(86_400))
    /// Devices not heard from for longer than this are named by `lockfs
    /// status` (three heartbeats).
    public var silenceWarning: Duration = .seconds(3 * 86_400)
    /// How often the running engine asks the server for the account's devices
    /// (for the silence warning).
    public var rosterInterval: Duration = .seconds(6 * 3600)
    public init() {}
}
