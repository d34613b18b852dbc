import Foundation
import LockCrypto
import LockWire

/// `lockfs repair`: the ways out of the integrity alarm (docs/operations.md,
/// "After a server restore"; docs/security.md, "Guarantees").
extension Engine {
    /// What a repair after a server restore found and did.
    public struct RestoreRepair: Sendable, Codable, Equatable {
        /// The last journal entry this device and the restored server share.
        public var commonPrefix: UInt64
        /// Where this device's verified history ended, and the server's journal ends.
        public var deviceWasAt: UInt64
        public var serverLatest: UInt64
        /// This device's changes made after the common prefix, queued again
        /// on the restored history (paths; a path may come more than once).
        public var requeued: [String]
        /// This device's changes whose content neither the server nor this
        /// device still has: left as the restored history has them.
        public var lost: [String]
    }

    /// Rebuilds this device's view from the restored server's journal and
    /// queues this device's changes made after the common prefix again, on
    /// top of it (`RestoreReplay`); clears the alarm. The server's journal is
    /// verified from its first entry as a new device would. With `dryRun`,
    /// only says what it would do.
    ///
    /// Call it on an engine that was not started; open a new one on the home
    /// afterwards (this one's state is that of before).
    /// - Throws: `LockError.integrity` when the server's journal itself does
    ///   not verify (it was not restored, it lies: nothing is changed);
    ///   `.offline` when it cannot be reached.
    public func repairAfterServerRestore(dryRun: Bool) async throws -> RestoreRepair {
        precondition(!state.withLock { $0.running }, "repair on a started engine")
        let (local, deviceWasAt) = state.withLock { ($0.local, $0.cursor) }
        let rebuilt = try await verifiedJournalFromStart()
        // The common prefix: the entries whose heads this device verified too.
        var prefix: UInt64 = 0
        for (seq, head) in rebuilt.heads {
            guard seq <= deviceWasAt, try index.head(at: seq) == head else { break }
            prefix = seq
        }
        var steps = RestoreReplay.steps(old: local, restored: rebuilt.tree, device: device, after: prefix)
        // Content the restored server lacks must come from this device.
        var needed: [ChunkID] = []
        for step in steps { needed += step.operation.chunkIDs }
        var missing: Set<ChunkID> = []
        for group in stride(from: 0, to: needed.count, by: APIv1.maxIDsPerQuery) {
            do {
                missing.formUnion(try await remote.missingChunks(Array(needed[group..<min(needed.count, group + APIv1.maxIDsPerQuery)])))
            } catch let e as RemoteError { throw LockError.from(e) }
        }
        // Content only in the cache (which may evict it) goes to the outbox now, so
        // that the queued change can always be uploaded.
        var unavailable: Set<ChunkID> = []
        for id in missing where (try? outbox.read(id)) == nil {
            let kept = dryRun ? cache.contains(id) : try resealFromCache(id)
            if !kept { unavailable.insert(id) }
        }
        let lostNodes = Set(steps.filter { !Set($0.operation.chunkIDs).isDisjoint(with: unavailable) }.map(\.operation.node))
        let lost = Set(steps.filter { lostNodes.contains($0.operation.node) }.map(\.path)).sorted()
        steps.removeAll { lostNodes.contains($0.operation.node) }
        let report = RestoreRepair(commonPrefix: prefix, deviceWasAt: deviceWasAt, serverLatest: rebuilt.heads.last?.0 ?? 0,
                                   requeued: steps.map(\.path).reduce(into: [String]()) { if $0.last != $1 { $0.append($1) } }, lost: lost)
        guard !dryRun else { return report }
        let tail = rebuilt.tails[device].flatMap { t in t.envelopeHash.map { SealedTail(device: device, stamp: t.stamp, envelopeHash: $0) } }
        try index.replace(with: Index.RebuiltJournal(
            nodes: Array(rebuilt.tree.nodes.values), aliases: rebuilt.tree.aliases, heads: rebuilt.heads, tails: rebuilt.tails,
            signers: rebuilt.signers, sealedTail: tail, operations: steps.map(\.operation), device: device, madeAt: now()))
        try index.sync()
        return report
    }

    /// The server's whole journal, verified from its first entry with no
    /// trust in what this device verified before, and the tree it makes.
    struct VerifiedJournal {
        var tree = Tree()
        var heads: [(UInt64, ChainHead)] = []
        var tails: [DeviceID: DeviceTail] = [:]
        var signers: [DeviceID: [UInt8]] = [:]
    }

    func verifiedJournalFromStart() async throws -> VerifiedJournal {
        var out = VerifiedJournal()
        // One table of verified heads for every page's verifier (a dictionary
        // captured per page would be copied whole at each page's first write).
        final class Heads: @unchecked Sendable { var bySeq: [UInt64: ChainHead] = [:] }
        let known = Heads()
        known.bySeq[0] = ChainHead.genesis(of: generations.vaultID)
        var cursor: UInt64 = 0
        var head = ChainHead.genesis(of: generations.vaultID)
        while true {
            let page: EntryPage
            do { page = try await remote.entries(after: JournalSeq(cursor), limit: APIv1.maxEntriesPerPage, wait: .zero) } catch let e as RemoteError {
                throw LockError.from(e)
            }
            try await learnGenerations(for: page)
            var verifier = JournalVerifier(vault: generations.vaultID, keys: generations, cursor: cursor, head: head, signers: out.signers,
                                           tails: out.tails, inflight: [], verifiedHead: { known.bySeq[$0] })
            (verifier.quarantined, verifier.quarantinedEnvelopes) = state.withLock { ($0.quarantined, $0.quarantinedEnvelopes) }
            let outcome = try verifier.verify(page, requestedAfter: cursor) { v in
                out.heads.append((v.seq, v.head))
                known.bySeq[v.seq] = v.head
                guard let batch = v.batch, !v.isRepeat else { return }
                out.tree.apply(batch.operations, context: ReplayContext(device: batch.device, createdAt: batch.createdAt, seq: v.seq,
                                                                        baseSeq: v.entry.baseSeq.rawValue, rules: batch.rules))
            }
            out.signers.merge(outcome.newSigners) { a, _ in a }
            out.tails.merge(outcome.changedTails) { $1 }
            (cursor, head) = (verifier.cursor, verifier.head)
            if page.items.isEmpty || cursor >= page.latest.rawValue { break }
        }
        _ = out.tree.takeChanges()
        return out
    }
}

extension Engine {
    /// The journal entry that raised the alarm by failing authentication (it
    /// is chained, so the server stored it; it does not open under the
    /// vault's keys): what `quarantineSuspect` can set aside.
    public struct SuspectEntry: Sendable, Codable, Equatable {
        public var seq: UInt64
        /// Its chain head, hex: it names this entry at this position only.
        public var head: String
        public var bytes: Int
        /// The device id that signed it (hex), nil for an unsigned entry.
        public var signer: String?
    }

    static func decodeSuspect(_ b: [UInt8]) -> (UInt64, ChainHead, JournalEntry)? {
        guard b.count > 40, let head = try? ChainHead(bytes: b[8..<40]),
              let entry = try? JournalEntry(decoding: Array(b[40...])) else { return nil }
        return (UInt64(bigEndianBytes: Array(b[0..<8])), head, entry)
    }

    /// The entry the alarm is about, when it is one that failed authentication.
    public func suspectEntry() throws -> SuspectEntry? {
        guard state.withLock({ $0.alarm }) != nil, let raw = try index.meta("alarm_entry"),
              let (seq, head, entry) = Self.decodeSuspect(raw) else { return nil }
        return SuspectEntry(seq: seq, head: head.hex, bytes: entry.encoded.count, signer: entry.signer?.device.hex)
    }

    /// Quarantines the suspect entry: from now on this device skips it, as
    /// one a faithful server refuses (the chain goes on over it), and the
    /// alarm is cleared. Its bytes are kept as evidence in the home's
    /// quarantine folder (returned). Call on an engine that was not started,
    /// and open a new one afterwards.
    /// - Throws: `LockError.invalid` when the alarm is not about such an entry.
    public func quarantineSuspect() throws -> URL {
        precondition(!state.withLock { $0.running }, "quarantine on a started engine")
        guard state.withLock({ $0.alarm }) != nil, let raw = try index.meta("alarm_entry"),
              let (seq, head, entry) = Self.decodeSuspect(raw) else {
            throw LockError.invalid("the integrity alarm is not about an entry that fails authentication: nothing to quarantine")
        }
        try FileManager.default.createDirectory(at: home.quarantineDirectory, withIntermediateDirectories: true)
        let evidence = home.quarantineDirectory.appendingPathComponent("entry-\(seq)-\(head.hex.prefix(16)).bin")
        try Data(entry.encoded).write(to: evidence, options: .atomic)
        try index.quarantine(seq: seq, head: head, envelopeHash: BatchLink.envelopeHash(entry.sealedBatch))
        try index.sync()
        return evidence
    }
}
