import Foundation
import LockCrypto
import LockWire

/// Every row of a metadata store, as stored: what `lockfs-server migrate`
/// reads out of one store and writes into another (docs/design.md,
/// "Migrating between stores").
///
/// Nothing is re-derived on the way: ids, sequence numbers, chain heads,
/// token and login hashes, quotas, usage and timestamps are copied as they
/// are, so tokens keep working and clients see the same journal. Rows are
/// in a fixed order (by key), so two snapshots of equal stores are equal.
/// Timestamps are whole microseconds (PostgreSQL's resolution); the whole
/// snapshot is held in memory.
public struct MetadataSnapshot: Sendable, Equatable {
    public struct Setting: Sendable, Equatable {
        public var key: String
        public var value: [UInt8]
        public init(key: String, value: [UInt8]) { self.key = key; self.value = value }
    }

    public struct AccountRow: Sendable, Equatable {
        public var account: Account
        public var createdAt: Date
        public init(account: Account, createdAt: Date) { self.account = account; self.createdAt = createdAt }
    }

    public struct InviteRow: Sendable, Equatable {
        public var user: String
        public var codeHash: [UInt8]
        public var expiresAt: Date
        public init(user: String, codeHash: [UInt8], expiresAt: Date) {
            self.user = user
            self.codeHash = codeHash
            self.expiresAt = expiresAt
        }
    }

    /// A device, revoked ones included (their token hashes stay taken).
    public struct DeviceRow: Sendable, Equatable {
        public var id: DeviceID
        public var account: AccountID
        public var name: String
        public var tokenHash: [UInt8]
        public var createdAt: Date
        public var lastSeenAt: Date?
        public var revokedAt: Date?
        public var signingKey: [UInt8]?
        public var boxKey: [UInt8]?
        public var boxKeySignature: [UInt8]?
        public init(id: DeviceID, account: AccountID, name: String, tokenHash: [UInt8], createdAt: Date, lastSeenAt: Date?, revokedAt: Date?,
                    signingKey: [UInt8]? = nil, boxKey: [UInt8]? = nil, boxKeySignature: [UInt8]? = nil) {
            self.boxKeySignature = boxKeySignature
            self.signingKey = signingKey
            self.boxKey = boxKey
            self.id = id
            self.account = account
            self.name = name
            self.tokenHash = tokenHash
            self.createdAt = createdAt
            self.lastSeenAt = lastSeenAt
            self.revokedAt = revokedAt
        }
    }

    public struct ChunkRow: Sendable, Equatable {
        public var account: AccountID
        public var id: ChunkID
        public var size: Int64
        public init(account: AccountID, id: ChunkID, size: Int64) { self.account = account; self.id = id; self.size = size }
    }

    public struct EntryRow: Sendable, Equatable {
        public var account: AccountID
        public var seq: JournalSeq
        public var head: ChainHead
        public var body: [UInt8]
        public var device: DeviceID
        public var createdAt: Date
        public init(account: AccountID, seq: JournalSeq, head: ChainHead, body: [UInt8], device: DeviceID, createdAt: Date) {
            self.account = account
            self.seq = seq
            self.head = head
            self.body = body
            self.device = device
            self.createdAt = createdAt
        }
    }

    public struct EntryRefRow: Sendable, Equatable {
        public var account: AccountID
        public var chunk: ChunkID
        public var seq: JournalSeq
        public init(account: AccountID, chunk: ChunkID, seq: JournalSeq) { self.account = account; self.chunk = chunk; self.seq = seq }
    }

    public struct CheckpointRow: Sendable, Equatable {
        public var account: AccountID
        public var seq: JournalSeq
        public var body: [UInt8]
        public init(account: AccountID, seq: JournalSeq, body: [UInt8]) { self.account = account; self.seq = seq; self.body = body }
    }

    /// By key.
    public var settings: [Setting] = []
    /// By id.
    public var accounts: [AccountRow] = []
    /// By name.
    public var invites: [InviteRow] = []
    /// By id.
    public var devices: [DeviceRow] = []
    /// By account, then id.
    public var chunks: [ChunkRow] = []
    /// By account, then seq.
    public var entries: [EntryRow] = []
    /// By account, chunk id, seq.
    public var entryRefs: [EntryRefRow] = []
    /// By account, then seq.
    public var checkpoints: [CheckpointRow] = []

    public init() {}

    /// Whether there is nothing a deployment's users made (settings aside).
    public var holdsNoUsers: Bool { accounts.isEmpty && invites.isEmpty }

    /// Every row's timestamp cut to whole microseconds, as PostgreSQL keeps
    /// them (and as both stores' exports give them).
    public static func microseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1_000_000).rounded()) }
    public static func date(microseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(microseconds) / 1_000_000) }

    /// What differs between this snapshot (the source) and `other` (the
    /// target), at most `limit` lines, e.g. "entries: account 3 seq 17: head differs".
    /// Empty when they are equal.
    public func differences(from other: MetadataSnapshot, limit: Int = 20) -> [String] {
        var out: [String] = []
        func compare<Row: Equatable, Key: Hashable & Comparable>(_ table: String, _ a: [Row], _ b: [Row], key: (Row) -> Key,
                                                                  describe: (Key) -> String) {
            guard a != b else { return }
            let before = out.count
            let left = Dictionary(a.map { (key($0), $0) }, uniquingKeysWith: { x, _ in x })
            let right = Dictionary(b.map { (key($0), $0) }, uniquingKeysWith: { x, _ in x })
            for k in Set(left.keys).union(right.keys).sorted() where out.count < limit {
                switch (left[k], right[k]) {
                case (_?, nil): out.append("\(table): \(describe(k)) is missing in the target")
                case (nil, _?): out.append("\(table): \(describe(k)) is in the target only")
                case let (x?, y?) where x != y: out.append("\(table): \(describe(k)) differs")
                default: break
                }
            }
            if out.count == before {  // no row differs by key: the order does
                out.append("\(table): differs (\(a.count) rows in the source, \(b.count) in the target)")
            }
        }
        compare("settings", settings, other.settings, key: \.key) { "key \($0)" }
        compare("accounts", accounts, other.accounts, key: { $0.account.id.rawValue }) { "account \($0)" }
        compare("invites", invites, other.invites, key: \.user) { "invite for \($0)" }
        compare("devices", devices, other.devices, key: \.id.hex) { "device \($0)" }
        compare("chunks", chunks, other.chunks, key: { "\($0.account.rawValue) \($0.id.hex)" }) { "account/chunk \($0)" }
        compare("entries", entries, other.entries, key: { Pair($0.account.rawValue, $0.seq.rawValue) }) { "account \($0.a) seq \($0.b)" }
        compare("entry references", entryRefs, other.entryRefs, key: { "\($0.account.rawValue) \($0.chunk.hex) \($0.seq)" }) { "\($0)" }
        compare("checkpoints", checkpoints, other.checkpoints, key: { Pair($0.account.rawValue, $0.seq.rawValue) }) {
            "account \($0.a) seq \($0.b)"
        }
        return Array(out.prefix(limit))
    }

    /// Checks each account's journal: numbered 1, 2, 3… without gaps, and
    /// every head is `h(n) = next(h(n−1), n, entry)` from the vault's genesis.
    /// - Returns: One line per broken account (empty when all hold).
    public func chainProblems() -> [String] {
        let vaults = Dictionary(accounts.map { ($0.account.id, ($0.account.vaultID, $0.account.name)) }, uniquingKeysWith: { a, _ in a })
        var problems: [String] = []
        var current: (account: AccountID, seq: JournalSeq, head: ChainHead)? = nil
        var broken: Set<AccountID> = []
        for e in entries where !broken.contains(e.account) {
            guard let (vault, name) = vaults[e.account] else {
                problems.append("entries of account \(e.account) without an account row")
                broken.insert(e.account)
                continue
            }
            let previous = current.flatMap { $0.account == e.account ? ($0.seq, $0.head) : nil } ?? (.start, ChainHead.genesis(of: vault))
            guard e.seq == previous.0.next, previous.1.next(seq: e.seq.rawValue, entry: e.body) == e.head else {
                problems.append("journal of \(name): entry \(e.seq) does not follow entry \(previous.0) (gap or wrong chain head)")
                broken.insert(e.account)
                continue
            }
            current = (e.account, e.seq, e.head)
        }
        return problems
    }
}

/// Two numbers as one sortable key.
private struct Pair: Hashable, Comparable {
    let a: Int64, b: UInt64
    init(_ a: Int64, _ b: UInt64) { self.a = a; self.b = b }
    static func < (x: Pair, y: Pair) -> Bool { (x.a, x.b) < (y.a, y.b) }
}

/// A metadata store that can give all of its rows (`lockfs-server migrate`
/// reads the source and, to verify, the target this way).
public protocol MetadataExporting: MetadataStore {
    /// Every row, in `MetadataSnapshot`'s order, from one consistent read.
    /// - Throws: `ServerError.unavailable` when the store fails;
    ///   `ServerError.internalError` for a row that does not decode.
    func exportSnapshot() async throws -> MetadataSnapshot
}

/// A metadata store that can take a whole snapshot (the target of `migrate`).
public protocol MetadataImporting: MetadataStore {
    /// Writes every row of `snapshot` in ONE transaction, ids, sequence
    /// numbers and heads unchanged; settings are replaced. Either all of
    /// it is stored or nothing is.
    /// - Throws: `ServerError.conflict("not_empty")` when the store already
    ///   holds an account or an invite (checked inside the transaction).
    func importSnapshot(_ snapshot: MetadataSnapshot) async throws
}
