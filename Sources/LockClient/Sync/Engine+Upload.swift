import Foundation
import LockChunker
import LockCrypto
import LockWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The uploader: sealed entries and their chunks to the server, in order.
extension Engine {
    // MARK: Upload

    func uploadLoop(_ wakeups: AsyncStream<Void>?) async {
        var backoff = options.reconnect
        var iterator = wakeups?.makeAsyncIterator()
        while !Task.isCancelled {
            do {
                if state.withLock({ $0.alarm }) != nil { return }
                if try await uploadOnce() {
                    backoff.reset()
                    try await waitForPause()
                    continue
                }
                backoff.reset()
                // Nothing to do: wait for a local change, and for the ones right behind it.
                guard await iterator?.next() != nil else { return }
                try await waitForPause()
            } catch is CancellationError {
                return
            } catch let e as LockError {
                if case .integrity(let why) = e { raiseAlarm(why); return }
                noteFailure("upload: \(e)")
                try? await Task.sleep(for: backoff.next())
            } catch {
                noteFailure("upload: \(error)")
                try? await Task.sleep(for: backoff.next())
            }
        }
    }

    /// Waits until local changes pause for `uploadSettle`, or `uploadMaxDelay` at most.
    func waitForPause(_ pause: Duration? = nil, atMost: Duration? = nil) async throws {
        let pause = pause ?? options.uploadSettle
        let deadline = ContinuousClock.now + (atMost ?? options.uploadMaxDelay)
        while true {
            try await Task.sleep(for: pause)
            let quietSince = state.withLock { $0.lastCommitAt }
            if ContinuousClock.now - quietSince >= pause || ContinuousClock.now >= deadline { return }
        }
    }

    /// Sends one batch (a sealed one in flight first). Returns false if there was nothing to send.
    func uploadOnce() async throws -> Bool {
        do { return try await sending.run { [self] in try await uploadOnceUnmapped() } } catch let e as RemoteError {
            throw LockError.from(e)
        }
    }

    func uploadOnceUnmapped() async throws -> Bool {
        if let batch = state.withLock({ $0.inflight.first(where: { $0.appendedSeq == nil }) }) {
            try await send(batch)
            return true
        }
        guard let batch = try sealNextBatch() ?? sealAttestationIfDue() else { return false }
        try await send(batch)
        return true
    }

    /// Whether an attestation is due (`AttestationPolicy`).
    var isAttestationDue: Bool {
        state.withLock { s in
            options.attestations.isDue(now: .now, wantedSince: s.attestWanted?.since, lastSealed: s.lastSealedAt,
                                       idle: s.pending.isEmpty && s.inflight.isEmpty && s.alarm == nil)
        }
    }

    /// Seals an attestation of the head this device verified, if one is due:
    /// an entry with no operation, based on the cursor.
    func sealAttestationIfDue() throws -> InflightBatch? {
        guard isAttestationDue else { return nil }
        let (cursor, head) = state.withLock { ($0.cursor, $0.head) }
        return try seal([], baseSeq: cursor, baseHead: head)
    }

    /// Seals the next queued operations (one base position, bounded count)
    /// into an entry and records it as in flight.
    func sealNextBatch() throws -> InflightBatch? {
        // Claim the operations (state .sending) in the same critical section
        // that reads them: from here on a local write can no longer be folded
        // into one of them, which would change an operation already sealed.
        let (ops, baseSeq): ([PendingOperation], UInt64) = state.withLock { s in
            guard let start = s.pending.firstIndex(where: { $0.state == .queued }) else { return ([], 0) }
            let base = s.pending[start].madeAtSeq
            var end = start
            while end < s.pending.count, end - start < options.operationsPerEntry,
                  s.pending[end].state == .queued, s.pending[end].madeAtSeq == base {
                s.pending[end].state = .sending
                end += 1
            }
            return (Array(s.pending[start..<end]), base)
        }
        guard !ops.isEmpty else { return nil }
        let claimed = Set(ops.map(\.id))
        do {
            let baseHead: ChainHead
            if baseSeq == 0 { baseHead = ChainHead.genesis(of: keys.vaultID) } else if let h = try index.head(at: baseSeq) { baseHead = h } else {
                throw LockError.invalid("no verified head at \(baseSeq)")
            }
            return try seal(ops, baseSeq: baseSeq, baseHead: baseHead)
        } catch {
            // Not sealed after all: give the operations back.
            state.withLock { s in
                for i in s.pending.indices where claimed.contains(s.pending[i].id) && s.pending[i].batchStamp == nil {
                    s.pending[i].state = .queued
                }
            }
            throw error
        }
    }

    /// Seals `ops` (none: an attestation) into an entry at (`baseSeq`,
    /// `baseHead`), next in this device's chain, and records it as in flight,
    /// durably, before it is sent.
    func seal(_ ops: [PendingOperation], baseSeq: UInt64, baseHead: ChainHead) throws -> InflightBatch {
        let claimed = Set(ops.map(\.id))
        let (stamp, previous) = state.withLock { s -> (Int64, SealedTail?) in
            // This device's chain: the batch names the newest batch of this device
            // that this home sealed or saw in the journal (a home restored from a
            // backup sealed less than the journal holds). After a new login in the
            // home, a new chain starts.
            var previous = s.sealedTail?.device == device ? s.sealedTail : nil
            if let t = s.deviceTails[device], let hash = t.envelopeHash, t.stamp > previous?.stamp ?? Int64.min {
                previous = SealedTail(device: device, stamp: t.stamp, envelopeHash: hash)
            }
            s.lastStamp = max(now().nanoseconds, s.lastStamp + 1, (previous?.stamp ?? 0) + 1)
            return (s.lastStamp, previous)
        }
        let link: BatchLink = previous.map { .follows(stamp: $0.stamp, envelopeHash: $0.envelopeHash) } ?? .first
        let batch = try OperationBatch(device: device, createdAt: Timestamp(nanoseconds: stamp), link: link, operations: ops.map(\.operation))
        let entry = try JournalEntry.seal(batch, keys: keys, baseSeq: JournalSeq(baseSeq), baseHead: baseHead)
        let inflight = InflightBatch(stamp: stamp, entry: entry, references: batch.chunkIDs, appendedSeq: nil)
        let tail = SealedTail(device: device, stamp: stamp, envelopeHash: BatchLink.envelopeHash(entry.sealedBatch))
        try index.recordInflight(inflight, operationIDs: ops.map(\.id), tail: tail)
        // Durable before it is sent: after a power cut, re-sealing operations the server
        // already has under another stamp would apply them twice.
        try index.sync()
        state.withLock { s in
            s.inflight.append(inflight)
            s.sealedTail = tail
            s.lastSealedAt = .now
            // Based on what it attests: nothing more to attest up to there.
            if let wanted = s.attestWanted, baseSeq >= wanted.seq { s.attestWanted = nil }
            for i in s.pending.indices where claimed.contains(s.pending[i].id) { s.pending[i].batchStamp = stamp }
        }
        return inflight
    }

    /// Uploads the chunks the server lacks, then appends the entry.
    func send(_ batch: InflightBatch) async throws {
        var attempt = 0
        while true {
            attempt += 1
            try await uploadMissing(batch.references)
            do {
                // Signed when sent, by the device sending it (after a re-login, the new one).
                let entry = identity.map { batch.entry.signed(by: $0, device: device, vault: keys.vaultID) } ?? batch.entry
                let (seq, head) = try await remote.append(entry, references: batch.references)
                try checkAcknowledgement(of: entry, stamp: batch.stamp, seq: seq.rawValue, head: head)
                return
            } catch RemoteError.missingChunks where attempt < 3 {
                continue
            } catch RemoteError.conflict(let code, _) where code == "bad_base" {
                throw LockError.integrity("the server says this device's verified history is not in its journal: it was rolled back or forked")
            } catch let e as RemoteError {
                throw LockError.from(e)
            }
        }
    }

    /// Checks where the server says it appended `entry`, and records it for
    /// the pull to check: after what this device verified, after its own
    /// earlier acknowledgements (it sends one entry at a time), or, where
    /// the pull already verified that position, exactly there with these bytes.
    /// - Throws: `LockError.integrity` for a position a faithful server cannot give.
    func checkAcknowledgement(of entry: JournalEntry, stamp: Int64, seq: UInt64, head: ChainHead) throws {
        // The pull may verify that position meanwhile: decide under the lock, and
        // keep `applying` out while it is decided.
        guard seq > 0, seq <= UInt64(Int64.max) else {
            throw LockError.integrity("the server acknowledged this device's entry at \(seq), which no journal has")
        }
        try applying.withLock { _ in
            let (cursor, stillInFlight, earlierAck) = state.withLock { s in
                (s.cursor, s.inflight.contains { $0.stamp == stamp },
                 s.inflight.filter { $0.stamp != stamp }.compactMap(\.appendedSeq).max())
            }
            if let earlierAck, seq <= earlierAck {
                throw LockError.integrity("the server acknowledged this device's entry at \(seq), at or before its previous entry (\(earlierAck)): the journal was reordered")
            }
            if seq <= cursor {
                // Verified already: it must be this very entry, chained there.
                let before = seq == 0 ? nil : (seq == 1 ? ChainHead.genesis(of: keys.vaultID) : try index.head(at: seq - 1))
                let verified = try index.head(at: seq)
                guard seq > 0, let before, let verified, verified == head, before.next(seq: seq, entry: entry.encoded) == head else {
                    throw LockError.integrity("the server acknowledged this device's entry at \(seq), where this device verified another entry: the journal was forked or rolled back")
                }
                return
            }
            guard stillInFlight else { return }
            try index.markAppended(stamp: stamp, seq: seq, head: head)
            state.withLock { s in
                s.ackSerial += 1
                if let i = s.inflight.firstIndex(where: { $0.stamp == stamp }) {
                    s.inflight[i].appendedSeq = seq
                    s.inflight[i].appendedHead = head
                    s.inflight[i].ackSerial = s.ackSerial
                }
                s.online = true
                s.lastError = nil
            }
        }
    }

    /// Seals a cached chunk again into the outbox, with the key generation
    /// whose chunk-id key made this id (an older one after a rotation);
    /// false when it is not cached.
    /// - Throws: `LockError.io` when the outbox file cannot be written.
    func resealFromCache(_ id: ChunkID) throws -> Bool {
        guard let plain = cache.cached(id),
              let g = plain.withUnsafeBytes({ p in generations.all.first { $0.chunkID(of: p) == id } }) else { return false }
        let sealed = try plain.withUnsafeBytes { try g.sealChunk($0) }
        let result = outbox.write(id, sealed.bytes)
        guard result == 0 else { throw LockError.io(errno: result, "write outbox chunk \(id)") }
        return true
    }

    func uploadMissing(_ ids: [ChunkID]) async throws {
        var missing: [ChunkID] = []
        for group in stride(from: 0, to: ids.count, by: APIv1.maxIDsPerQuery) {
            missing += try await remote.missingChunks(Array(ids[group..<min(ids.count, group + APIv1.maxIDsPerQuery)]))
        }
        guard !missing.isEmpty else { return }
        var small: [SealedChunk] = []
        var smallBytes = 0
        var large: [ChunkID] = []
        for id in missing {
            guard let data = try outbox.read(id) else {
                // Not in the outbox: reseal from the cache if we can.
                guard try resealFromCache(id) else {
                    // Local bookkeeping, not the server's doing: an error, not the alarm.
                    throw LockError.io(errno: ENOENT, "chunk \(id) is neither in the outbox nor cached")
                }
                large.append(id)
                continue
            }
            if data.count < 512 << 10 {
                small.append(SealedChunk(id: id, bytes: data))
                smallBytes += data.count
                if small.count == APIv1.maxChunksPerBatch || smallBytes > APIv1.maxBatchBytes - (1 << 20) {
                    try await remote.putChunks(small)
                    small = []
                    smallBytes = 0
                }
            } else {
                large.append(id)
            }
        }
        if !small.isEmpty { try await remote.putChunks(small) }
        // Large chunks: four in flight.
        try await withThrowingTaskGroup(of: Void.self) { group in
            var inFlight = 0
            for id in large {
                if inFlight == 4 { try await group.next(); inFlight -= 1 }
                group.addTask { [self] in
                    guard let data = try outbox.read(id) else { throw LockError.io(errno: ENOENT, "outbox chunk \(id) vanished") }
                    try await remote.putChunk(SealedChunk(id: id, bytes: Array(data)))
                }
                inFlight += 1
            }
            try await group.waitForAll()
        }
    }
}
