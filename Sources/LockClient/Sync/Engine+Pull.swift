import Foundation
import LockChunker
import LockCrypto
import LockWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The puller's loop, key generations as the journal shows them, and applying verified pages to the view.
extension Engine {
    // MARK: Background work

    /// Starts the puller and the uploader.
    public func start() {
        let stream = uploadWakeups.withLock { s -> AsyncStream<Void>? in defer { s = nil }; return s }
        let pull = Task { [self] in await pullLoop() }
        let push = Task { [self] in await uploadLoop(stream) }
        let sync = Task { [self] in await syncLoop() }
        state.withLock { $0.running = true; $0.tasks = [pull, push, sync] }
        background.resume()
        // Uploaded chunks an earlier run left in the outbox go to the cache.
        let moveLeftovers = state.withLock { s -> Bool in
            guard !s.cacheMoves.isEmpty, !s.cacheMoverRunning else { return false }
            s.cacheMoverRunning = true
            return true
        }
        if moveLeftovers { background.spawn(priority: .background) { [self] in await moveToCache() } }
        uploadSignal.yield()
    }

    /// Stops background work; pending changes stay in the outbox.
    public func stop() async {
        let tasks = state.withLock { s -> [Task<Void, Never>] in s.running = false; defer { s.tasks = [] }; return s.tasks }
        uploadSignal.finish()
        for t in tasks { t.cancel() }
        for t in tasks { await t.value }
        await background.stop()
        try? syncToDisk()
    }

    /// Makes every local change so far durable against a power cut (the
    /// index's log fsynced). Local commits are already safe from a crash of
    /// this process when they return; this is fsync(2)'s promise on top.
    public func syncToDisk() throws {
        let n = state.withLock { $0.unsyncedCommits }
        try index.sync()
        state.withLock { $0.unsyncedCommits = max(0, $0.unsyncedCommits - n) }
    }

    /// Every `syncInterval`, makes the changes since the last sync durable.
    /// Also wakes the uploader when an attestation is due (`AttestationPolicy`),
    /// and refreshes the account's device list now and then.
    func syncLoop() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: options.syncInterval) } catch { return }
            if state.withLock({ $0.unsyncedCommits }) > 0 {
                do { try syncToDisk() } catch { noteFailure("sync to disk: \(error)") }
            }
            if isAttestationDue { uploadSignal.yield() }
            // Off this loop (a server that stalls must not hold up the syncs), once
            // per interval whether it answers or not.
            let rosterDue = state.withLock { s -> Bool in
                guard s.rosterFetchedAt.map({ ContinuousClock.now - $0 >= options.rosterInterval }) ?? true else { return false }
                s.rosterFetchedAt = .now
                return true
            }
            if rosterDue { background.spawn(priority: .background) { [self] in await refreshRoster() } }
        }
    }

    /// Asks the server for the account's devices (the silence warning of
    /// `status`); keeps the last list if it cannot be had.
    public func refreshRoster() async {
        guard let roster = try? await remote.devices() else { return }
        state.withLock { $0.roster = roster; $0.rosterFetchedAt = .now }
    }

    func pullLoop() async {
        var backoff = options.reconnect
        // The first pull does not wait, so status knows at once whether the server answers.
        var wait = Duration.zero
        while !Task.isCancelled {
            if state.withLock({ $0.alarm }) != nil { return }
            do {
                let (cursor, acks) = state.withLock { ($0.cursor, $0.ackSerial) }
                let page: EntryPage
                do { page = try await remote.entries(after: JournalSeq(cursor), limit: APIv1.maxEntriesPerPage, wait: wait) } catch let e as RemoteError {
                    // A malformed answer is the alarm here too, as in pullOnce.
                    throw LockError.from(e)
                }
                try await applyFetchedPage(page, requestedAfter: cursor, acknowledgementsBefore: acks)
                backoff.reset()
                wait = options.pollWait
            } catch let e as LockError {
                if case .integrity(let why) = e { raiseAlarm(why); return }
                noteFailure("\(e)")
                try? await Task.sleep(for: backoff.next())
            } catch is CancellationError {
                return
            } catch {
                noteFailure("\(error)")
                try? await Task.sleep(for: backoff.next())
            }
        }
    }

    /// Pulls and applies entries until caught up with the server (no waiting).
    /// - Throws: `LockError.integrity` (and raises the alarm) when the server
    ///   broke the rules now or before: like the background puller, nothing
    ///   more is applied once the alarm is up.
    public func pullOnce() async throws {
        try throwIfAlarmed()
        do { try await pullUntilCaughtUp() } catch LockError.integrity(let why) {
            raiseAlarm(why)
            throw LockError.integrity(why)
        }
    }

    func pullUntilCaughtUp() async throws {
        while true {
            let (cursor, acks) = state.withLock { ($0.cursor, $0.ackSerial) }
            let page: EntryPage
            do { page = try await remote.entries(after: JournalSeq(cursor), limit: APIv1.maxEntriesPerPage, wait: .zero) } catch let e as RemoteError {
                throw LockError.from(e)
            }
            try await applyFetchedPage(page, requestedAfter: cursor, acknowledgementsBefore: acks)
            if page.items.isEmpty || page.items.last!.seq >= page.latest { return }
        }
    }

    /// Uploads everything queued (no waiting for wake-ups).
    /// - Throws: `LockError.integrity` (and raises the alarm) as the
    ///   background uploader does: once the alarm is up nothing more is sent,
    ///   and the queue stays in the outbox.
    public func pushOnce() async throws {
        // Bug fix: pushOnce used to ignore the alarm (sending the queue to a
        // server already caught lying) and did not raise it on a `bad_base`
        // refusal, unlike uploadLoop; pullOnce raised it only for page errors.
        try throwIfAlarmed()
        do { while try await uploadOnce() {} } catch LockError.integrity(let why) {
            raiseAlarm(why)
            throw LockError.integrity(why)
        }
    }

    func throwIfAlarmed() throws {
        if let alarm = state.withLock({ $0.alarm }) { throw LockError.integrity(alarm) }
    }

    func noteFailure(_ message: String) {
        state.withLock { $0.online = false; $0.lastError = message }
    }

    /// The alarm lockfs 0.1 raised on a journal page holding a version 2
    /// (signed) entry: "the server's answer was malformed: entry page:
    /// unsupportedVersion(record: "journal entry", found: 2)".
    static func isOldClientsAlarmOnSignedEntries(_ alarm: String) -> Bool {
        alarm.hasPrefix("the server's answer was malformed: entry page:")
            && alarm.contains(#"unsupportedVersion(record: "journal entry", found: 2)"#)
    }

    func raiseAlarm(_ why: String) {
        // The first alarm stands (in memory and in the index alike); later ones are its consequences.
        let first = state.withLock { s -> Bool in
            guard s.alarm == nil else { return false }
            s.alarm = why
            return true
        }
        if first { try? index.setMeta("alarm", Array(why.utf8)) }
        try? index.sync()
        wakeUploadWaiters()
    }

    // MARK: Key generations

    /// Applies a page fetched from the server, learning a newer key
    /// generation first when the page shows one.
    func applyFetchedPage(_ page: EntryPage, requestedAfter requested: UInt64, acknowledgementsBefore acks: UInt64? = nil) async throws {
        try await learnGenerations(for: page)
        try applyPage(page, requestedAfter: requested, acknowledgementsBefore: acks)
    }

    /// Learns newer key generations from the keyring when `page` shows one:
    /// its header names a newer generation (a rotation reaches every device
    /// at its next page, so its new writes stop using the old keys), or an
    /// entry is sealed under a key this device lacks.
    func learnGenerations(for page: EntryPage) async throws {
        let unknown = page.items.contains { generations.keys(opening: $0.entry.sealedBatch) == nil }
        guard unknown || (page.keyringGeneration ?? 0) > generations.generation else { return }
        try await learnGenerations()
    }

    /// Fetches the keyring and adopts its generations if it holds newer ones:
    /// opened with this device's own X25519 secret, and only if they extend
    /// the generations held (the server cannot swap one).
    /// - Throws: `LockError.unauthorized` when the keyring holds no seal for
    ///   this device (it was revoked, or left out of a rotation: log in
    ///   again); `.integrity` for a keyring that does not extend the keys
    ///   held; `.offline`.
    func learnGenerations() async throws {
        guard let identity else { return }
        let keyring: VaultKeyring
        do { keyring = try await remote.keyring() } catch let e as RemoteError {
            if case .malformedResponse(let m) = e { throw LockError.integrity("the server's keyring was refused (\(m))") }
            throw LockError.from(e)
        }
        guard keyring.vaultID == generations.vaultID else {
            throw LockError.integrity("the server's keyring belongs to another vault")
        }
        guard keyring.generation > generations.generation else { return }
        let opened: [VaultKeys]
        do { opened = try keyring.unlock(device: device, identity: identity) } catch {
            throw LockError.unauthorized("the vault's keys were rotated (key generation \(keyring.generation)) and this device was left out: it was revoked, or it had written nothing yet. Run `lockfs logout`, then `lockfs login`")
        }
        do { try generations.adopt(opened) } catch {
            throw LockError.integrity("the server's keyring does not extend the keys this device holds (\(error))")
        }
        try onNewGenerations.withLock { try $0?(generations.all) }
    }

    // MARK: Applying the journal

    /// Verifies a page of entries against the trusted chain, applies it to
    /// the tree by the replay rules, commits it to the index, and rebases the
    /// pending local operations on it.
    /// - Parameter requested: the cursor the page was asked for after.
    ///   Another pull may have applied part or all of it since: those
    ///   entries must be the very ones it verified, and are skipped.
    /// - Throws: `LockError.integrity` for anything a faithful server cannot send.
    /// - Parameter acks: `State.ackSerial` when the page was asked for: an
    ///   append acknowledged before then must be within the page's journal.
    func applyPage(_ page: EntryPage, requestedAfter requested: UInt64, acknowledgementsBefore acks: UInt64? = nil) throws {
        let applied = try applying.withLock { _ in try applyPageSerially(page, requestedAfter: requested, acknowledgementsBefore: acks) }
        // The kernel is told after `applying` is released: invalidating a file's
        // pages waits for reads of it in flight, which the mount answers with
        // async work; that work must never wait for `applying` (an uploader's
        // acknowledgement takes it) while this thread holds it, or the mount
        // deadlocks (seen: a mount test hung in fuse_reverse_inval_inode).
        guard let (view, changed) = applied else { return }
        if !view.inodes.isEmpty || !view.entries.isEmpty, let handler = onChange.withLock({ $0 }) { handler(view) }
        schedulePinnedFetches(changed)
    }

    /// Verifies and applies a page; returns what changed in the view (nil: nothing).
    func applyPageSerially(_ page: EntryPage, requestedAfter requested: UInt64, acknowledgementsBefore acks: UInt64?) throws -> (ViewChanges, Set<NodeID>)? {
        var (base, cursor, head, inflight, recent) = state.withLock {
            ($0.base, $0.cursor, $0.head, $0.inflight, $0.recentHeads)
        }
        // The server acknowledged an append at a seq its journal does not reach
        // (it never stored it): the change would stay "sending" for good.
        if let acks, let lost = inflight.first(where: { b in b.ackSerial <= acks && (b.appendedSeq ?? 0) > page.latest.rawValue }) {
            throw LockError.integrity("the server acknowledged this device's entry at \(lost.appendedSeq ?? 0) but its journal ends at \(page.latest): the entry was dropped or the journal rolled back")
        }
        let (signers, tails, quarantined, quarantinedEnvelopes) = state.withLock {
            ($0.signers, $0.deviceTails, $0.quarantined, $0.quarantinedEnvelopes)
        }
        let known = recent
        var verifier = JournalVerifier(vault: generations.vaultID, keys: generations, cursor: cursor, head: head, signers: signers,
                                       tails: tails, inflight: inflight,
                                       verifiedHead: { [index] seq in known[seq] ?? (try? index.head(at: seq)) ?? nil })
        verifier.quarantined = quarantined
        verifier.quarantinedEnvelopes = quarantinedEnvelopes
        var heads: [(UInt64, ChainHead)] = []
        var confirmed: [Int64] = []
        // The newest change of another device applied here: this device attests it in time.
        var othersChange: UInt64?
        var ignored: [String] = []
        // Each verified entry is applied before the next is opened: a page of
        // large batches is never held opened at once.
        let outcome: JournalVerifier.Outcome
        do {
            outcome = try verifier.verify(page, requestedAfter: requested) { v in
                heads.append((v.seq, v.head))
                recent[v.seq] = v.head
                guard let batch = v.batch else { ignored.append(v.ignored ?? "journal entry \(v.seq) was ignored"); return }
                let stamp = batch.createdAt.nanoseconds
                // Replayed under the device that made the batch (sealed inside it):
                // after a re-login in a home, batches sealed before are sent, and
                // signed, by the new device, and must still dedup against a copy
                // the old one may have landed. The signer is who answers for it.
                // A repeat (a retried append that landed twice) counted at its first copy.
                if !v.isRepeat, batch.device != device, !batch.isAttestation { othersChange = v.seq }
                if !v.isRepeat {
                    base.apply(batch.operations, context: ReplayContext(device: batch.device, createdAt: batch.createdAt, seq: v.seq,
                                                                        baseSeq: v.entry.baseSeq.rawValue, rules: batch.rules))
                }
                // This device's entry: confirmed where the server acknowledged it (an
                // earlier copy is a retried append's first landing; acknowledgements are
                // recorded under `applying`, so none comes in while a page is applied).
                if let mine = inflight.first(where: { $0.stamp == stamp && $0.entry == v.entry.unsigned }),
                   mine.appendedSeq == nil || mine.appendedSeq == v.seq {
                    confirmed.append(stamp)
                    inflight.removeAll { $0.stamp == stamp }
                }
            }
        } catch {
            // An entry that does not open is what `lockfs repair` may quarantine: keep it with the alarm.
            if let suspect = verifier.suspect, state.withLock({ $0.alarm }) == nil {
                try? index.setMeta("alarm_entry", ByteOrder.bigEndian(suspect.seq) + suspect.head.bytes + suspect.entry.encoded)
            }
            throw error
        }
        guard !heads.isEmpty else {
            state.withLock { $0.online = true; $0.lastError = nil; $0.lastSync = Date() }
            return nil
        }
        (cursor, head) = (verifier.cursor, verifier.head)
        let changedTails = outcome.changedTails
        let newSigners = outcome.newSigners
        let changed = base.takeChanges()
        let changedNodes = changed.compactMap { base.node($0) }
        try index.commit(Index.AppliedPage(nodes: changedNodes, aliases: base.takeAliases(), heads: heads, deviceTails: changedTails,
                                           confirmedStamps: confirmed, signers: newSigners, ignored: ignored))
        var view = ViewChanges()
        var orphans: [NodeID] = []
        let (drained, wakeUploader) = state.withLock { s -> (Bool, Bool) in
            // Where each changed node was in the view before: a name it left must be forgotten.
            let before = changed.compactMap { id in s.local.liveNode(id).map { (id, $0.parent, $0.name) } }
            s.base = base
            s.cursor = cursor
            s.head = head
            s.deviceTails.merge(changedTails) { $1 }
            if let seq = othersChange { s.attestWanted = (seq, s.attestWanted?.since ?? .now) }
            s.online = true
            s.lastError = nil
            s.lastSync = Date()
            s.signers.merge(newSigners) { a, _ in a }
            if let last = ignored.last { s.ignoredEntries += ignored.count; s.lastIgnored = last }
            if recent.count > 4096 { recent = recent.filter { $0.key + 2048 > cursor } }
            s.recentHeads = recent
            for n in changedNodes { if let m = n.manifest { for c in m.chunks { s.serverChunks.insert(c.id) } } }
            s.inflight.removeAll { confirmed.contains($0.stamp) }
            s.pending.removeAll { p in p.batchStamp.map { confirmed.contains($0) } ?? false }
            Self.rebase(&s, device: device)
            orphans = Self.pruneLocalNodes(&s)
            for id in changed { if let ino = s.inoByNode[id] { view.inodes.insert(ino) } }
            for (id, parent, name) in before {
                let now = s.local.liveNode(id)
                if now?.parent != parent || now?.name != name, let pino = s.inoByNode[parent] { view.entries.append((pino, name)) }
            }
            return (s.pending.isEmpty, !confirmed.isEmpty)
        }
        // The page is applied already: a failure here must not count as the page's
        // (rows left in the index are pruned again at the next start).
        if !orphans.isEmpty { try? index.deleteLocalNodes(orphans) }
        if wakeUploader { cleanOutbox(); uploadSignal.yield() }
        if drained { wakeUploadWaiters() }
        return (view, changed)
    }

    /// local = base + pending operations, replayed by the same rules.
    static func rebase(_ s: inout State, device: DeviceID) {
        var local = s.base
        for p in s.pending {
            local.apply(p.operation, context: ReplayContext(device: device, createdAt: p.madeAt, seq: Tree.pendingSeq, baseSeq: p.madeAtSeq))
        }
        _ = local.takeChanges()
        s.local = local
    }
}
