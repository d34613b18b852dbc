import Foundation
import LockCrypto
import LockWire

/// `lockfs verify`: an audit of what the server stores, without waiting for
/// someone to read it (docs/operations.md, "Verifying the server's copy").
extension Engine {
    /// What an audit found.
    public struct AuditReport: Sendable, Codable, Equatable {
        public var finishedAt: Date
        /// Journal entries verified from the first (every chain, signature and
        /// device-chain check), and whether they match what this device verified.
        public var journalEntries: UInt64
        /// Chunks the tree references, and how many were fetched and checked.
        public var chunksTotal: Int
        public var chunksChecked: Int
        /// "path (chunk id prefix)" of chunks the server does not have, and of
        /// those it served with the wrong bytes.
        public var missing: [String]
        public var corrupt: [String]
        public var ok: Bool { missing.isEmpty && corrupt.isEmpty }
    }

    /// Verifies the whole journal from its first entry against what this
    /// device verified, then fetches `samplePercent` of the chunks the tree
    /// references (all at 100), opens each and checks it against its keyed id.
    /// Nothing is cached or changed. A corrupt chunk or a journal that differs
    /// raises the integrity alarm (the server lied); a missing chunk is
    /// reported (the server lost it: its operator restores the blobs).
    /// - Parameter progress: (chunks done, chunks to check).
    /// - Throws: `LockError.integrity` for the journal; `.offline`.
    public func audit(samplePercent: Double = 100, progress: (@Sendable (Int, Int) -> Void)? = nil) async throws -> AuditReport {
        try throwIfAlarmed()
        let (verifiedTo, tree) = state.withLock { ($0.cursor, $0.base) }
        let journal: VerifiedJournal
        do {
            journal = try await verifiedJournalFromStart()
            for (seq, head) in journal.heads where seq <= verifiedTo {
                guard try index.head(at: seq) == head else {
                    throw LockError.integrity("verify: the server's journal holds another entry at \(seq) than the one this device verified")
                }
            }
            if (journal.heads.last?.0 ?? 0) < verifiedTo {
                throw LockError.integrity("verify: the server's journal ends at \(journal.heads.last?.0 ?? 0) but this device verified it up to \(verifiedTo)")
            }
        } catch LockError.integrity(let why) {
            raiseAlarm(why)
            throw LockError.integrity(why)
        }
        // Every chunk of every live file, once, with a path for the report.
        var chunks: [ChunkID: String] = [:]
        for node in tree.nodes.values where !node.deleted {
            guard let manifest = node.manifest else { continue }
            for c in manifest.chunks where chunks[c.id] == nil { chunks[c.id] = tree.path(of: node.id) ?? node.name }
        }
        let fraction = min(max(samplePercent, 0), 100) / 100
        let all = Array(chunks.keys)
        let count = fraction >= 1 ? all.count : Int((Double(all.count) * fraction).rounded(.up))
        let sample = fraction >= 1 ? all : Array(all.shuffled().prefix(count))
        var missing: [String] = [], corrupt: [String] = []
        var done = 0
        try await withThrowingTaskGroup(of: (ChunkID, String?).self) { group in
            var next = sample.makeIterator()
            func add() {
                guard let id = next.next() else { return }
                group.addTask { [self] in (id, try await checkStoredChunk(id)) }
            }
            for _ in 0..<4 { add() }
            while let (id, problem) = try await group.next() {
                let name = "\(chunks[id] ?? "?") (chunk \(id.hex.prefix(12)))"
                if problem == "missing" { missing.append(name) } else if problem != nil { corrupt.append(name) }
                done += 1
                progress?(done, sample.count)
                add()
            }
        }
        if let first = corrupt.first {
            raiseAlarm("verify: the server serves \(corrupt.count) chunk(s) with the wrong bytes, first \(first)")
        }
        return AuditReport(finishedAt: Date(), journalEntries: journal.heads.last?.0 ?? 0, chunksTotal: all.count, chunksChecked: sample.count,
                           missing: missing.sorted(), corrupt: corrupt.sorted())
    }

    /// Fetches one chunk and checks it: nil when good, "missing", or why it is corrupt.
    func checkStoredChunk(_ id: ChunkID) async throws -> String? {
        let sealed: SealedChunk
        do { sealed = try await remote.chunk(id) } catch RemoteError.notFound {
            return "missing"
        } catch let e as RemoteError {
            throw LockError.from(e)
        }
        guard sealed.id == id else { return "another chunk's id" }
        if generations.keys(opening: sealed.bytes) == nil { try await learnGenerations() }
        do {
            _ = try (generations.keys(opening: sealed.bytes) ?? keys).openChunk(sealed)
            return nil
        } catch {
            return "\(error)"
        }
    }
}
