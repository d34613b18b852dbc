import Foundation
import LockChunker
import LockCrypto
import LockWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Open files and staging copies; the content committer (chunk, id, seal) and the outbox's files.
extension Engine {
    // MARK: Writing

    /// Opens a file for writing: a local staging copy shared by every handle
    /// on the file. Without `truncate`, the current content is fetched first.
    /// - Returns: a handle for `write`, `flush` and `close`.
    public func openForWrite(_ ino: UInt64, truncate: Bool) async throws -> UInt64 {
        if let h = try openForWriteIfLocal(ino, truncate: truncate) { return h }
        let n = try node(ino)
        // Fill a new staging copy outside the lock, fetching what is not local.
        let file = try newStagingFile(n.id)
        if !truncate, let m = n.manifest {
            var off = 0
            do {
                for c in m.chunks {
                    let plain = try await chunkPlaintext(c.id)
                    try plain.withUnsafeBytes { try file.write($0, at: off) }
                    off += plain.count
                }
            } catch { file.discard(); throw error }
        }
        return try installStaging(n, file, truncate: truncate)
    }

    /// `openForWrite` without waiting: nil when the content must be fetched
    /// first (the mount then calls `openForWrite` off its own thread).
    public func openForWriteIfLocal(_ ino: UInt64, truncate: Bool) throws -> UInt64? {
        let n = try node(ino)
        guard n.kind == .file else { throw LockError.isDirectory }
        if let h = try attachStaging(n.id, truncate: truncate) { return h }
        guard truncate || (n.manifest?.chunks.allSatisfy { cache.contains($0.id) } ?? true) else { return nil }
        let file = try newStagingFile(n.id)
        if !truncate, let m = n.manifest {
            var off = 0
            for c in m.chunks {
                // Evicted since isLocal looked: the caller fetches.
                guard let plain = cache.cached(c.id) else { file.discard(); return nil }
                do { try plain.withUnsafeBytes { try file.write($0, at: off) } } catch { file.discard(); throw error }
                off += plain.count
            }
        }
        return try installStaging(n, file, truncate: truncate)
    }

    func newStagingFile(_ id: NodeID) throws -> StagingFile {
        try StagingFile(path: stagingRoot + "/" + id.hex + "-" + String(UInt32.random(in: 0...UInt32.max)))
    }

    /// Makes `file` the node's staging copy and returns a handle on it; if
    /// another open got there first, its copy is used and `file` dropped.
    /// How long a read-only open's revision is remembered, and how many.
    static let shownRevisionLife: Duration = .seconds(600)
    static let shownRevisionLimit = 10_000

    /// Notes that a program opened the file for reading: the revision it
    /// may read. A later write here is based on it if the file changed since
    /// (a write the journal brought in between is then kept as a conflict
    /// copy, never replaced unseen).
    public func noteOpenedForReading(_ ino: UInt64) {
        guard let n = try? node(ino), n.kind == .file else { return }
        let now = ContinuousClock.now
        state.withLock { s in
            if s.shownRevision.count >= Self.shownRevisionLimit {
                s.shownRevision = s.shownRevision.filter { now - $0.value.at < Self.shownRevisionLife }
                if s.shownRevision.count >= Self.shownRevisionLimit { s.shownRevision.removeAll() }
            }
            s.shownRevision[n.id] = (n.revision, now)
        }
    }

    /// The revision a write opened now is based on: the node's, unless a
    /// recent read-only open showed an older one.
    static func writeBase(_ s: inout State, _ n: Node) -> RevisionID {
        guard let shown = s.shownRevision.removeValue(forKey: n.id),
              ContinuousClock.now - shown.at < shownRevisionLife else { return n.revision }
        return shown.revision
    }

    func installStaging(_ n: Node, _ file: StagingFile, truncate: Bool) throws -> UInt64 {
        try state.withLock { s in
            if var existing = s.staging[n.id] {
                // Another open won the race: use its copy.
                file.discard()
                existing.handles += 1
                if truncate { try existing.file.truncate(0); existing.dirty = true; existing.mtime = nil; existing.dirtyFrom = 0 }
                s.staging[n.id] = existing
            } else {
                var st = Staging(file: file, handles: 1, dirty: truncate && n.size > 0, revision: Self.writeBase(&s, n))
                if truncate { st.dirtyFrom = 0 } else { st.base = n.manifest?.chunks ?? [] }
                s.staging[n.id] = st
            }
            let h = s.nextHandle
            s.nextHandle += 1
            s.handles[h] = n.id
            return h
        }
    }

    func attachStaging(_ id: NodeID, truncate: Bool) throws -> UInt64? {
        try state.withLock { s in
            guard var st = s.staging[id] else { return nil }
            st.handles += 1
            if truncate { try st.file.truncate(0); st.dirty = true; st.mtime = nil; st.dirtyFrom = 0 }
            s.staging[id] = st
            let h = s.nextHandle
            s.nextHandle += 1
            s.handles[h] = id
            return h
        }
    }

    func staging(_ handle: UInt64) throws -> (NodeID, Staging) {
        try state.withLock { s in
            guard let id = s.handles[handle], let st = s.staging[id] else { throw LockError.invalid("bad file handle") }
            return (id, st)
        }
    }

    /// Writes into the open file (locally; nothing is sent before close).
    public func write(_ handle: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws -> Int {
        let (id, st) = try staging(handle)
        try st.file.write(bytes, at: offset)
        let done = bytes.count
        state.withLock { s in
            s.staging[id]?.dirty = true
            s.staging[id]?.mtime = nil
            if let d = s.staging[id]?.dirtyFrom { s.staging[id]?.dirtyFrom = min(d, offset) }
        }
        return done
    }

    /// Sets the size of an open file.
    public func truncate(handle: UInt64, size: Int) throws {
        let (id, st) = try staging(handle)
        let oldSize = st.file.size
        try st.file.truncate(size)
        state.withLock { s in
            s.staging[id]?.dirty = true
            s.staging[id]?.mtime = nil
            if let d = s.staging[id]?.dirtyFrom { s.staging[id]?.dirtyFrom = min(d, size, oldSize) }
        }
    }

    /// Sets the size of a file that may not be open (truncate(2)): open, resize, close.
    public func truncate(_ ino: UInt64, size: Int) async throws {
        let h = try await openForWrite(ino, truncate: size == 0)
        do { try truncate(handle: h, size: size) } catch { try? close(h); throw error }
        try close(h)
    }

    /// Makes what was written so far durable and queued (fsync, flush).
    public func flush(_ handle: UInt64) throws {
        let (id, st) = try staging(handle)
        guard st.dirty, !st.unlinked else { return }
        try commitContent(id, file: st.file)
        state.withLock { $0.staging[id]?.dirty = false }
    }

    /// Closes a handle; the last close of a changed file commits it:
    /// chunked, sealed into the outbox, queued, durable before this returns.
    public func close(_ handle: UInt64) throws {
        let (id, st) = try staging(handle)
        var failure: (any Error)?
        if st.handles == 1 && st.dirty && !st.unlinked {
            do { try commitContent(id, file: st.file) } catch { failure = error }
        }
        state.withLock { s in
            s.handles[handle] = nil
            guard var cur = s.staging[id] else { return }
            cur.handles -= 1
            if cur.handles == 0 && failure == nil {
                cur.file.discard()
                s.staging[id] = nil
            } else {
                if failure == nil { cur.dirty = false }
                s.staging[id] = cur
            }
        }
        if let failure { throw failure }
    }

    /// Chunks the staging file, seals the new chunks, puts the plaintext in
    /// the cache, and queues a write. Small sealed chunks are committed in
    /// the same index transaction as the write; larger ones go to outbox
    /// files, fsynced (then their folder) before that commit, so no
    /// committed write can outlive its data (docs/design.md, "Durability").
    func commitContent(_ id: NodeID, file: StagingFile) throws {
        try file.withContents { all in try commitContent(id, all) }
    }

    func commitContent(_ id: NodeID, _ all: UnsafeRawBufferPointer) throws {
        let size = all.count
        // Take the changed range; writes from now on mark the next commit's.
        let (base, dirtyFrom) = state.withLock { s -> ([Manifest.Chunk], Int) in
            guard let st = s.staging[id] else { return ([], 0) }
            s.staging[id]?.dirtyFrom = .max
            return (st.base, st.dirtyFrom)
        }
        var committed = false
        defer {
            // Not committed: the range stays changed for the next try.
            if !committed { state.withLock { s in if let d = s.staging[id]?.dirtyFrom { s.staging[id]?.dirtyFrom = min(d, dirtyFrom) } } }
        }
        // Chunks that end before the first change are reused, except the old last one
        // (its end was the old end of the file, not a content-defined cut).
        var chunks: [Manifest.Chunk] = []
        var inline: [SealedChunk] = []
        var reused = 0
        for c in base.dropLast() {
            guard reused + c.length <= min(dirtyFrom, size) else { break }
            chunks.append(c)
            reused += c.length
        }
        if size > reused {
            var chunker = try Chunker(gear: gear)
            var ends: [Int] = []
            chunker.feed(UnsafeRawBufferPointer(rebasing: all[reused..<size])) { ends.append(reused + $0) }
            if let last = chunker.finish() { ends.append(reused + last) }
            var ranges: [Range<Int>] = []
            var start = reused
            for e in ends { ranges.append(start..<e); start = e }
            // Per chunk: its id, and when new, either its sealed bytes (small: they go into the
            // index with the operation) or the sealed size of its fsynced outbox file.
            struct Sealed { var id: ChunkID; var inline: SealedChunk?; var fileSize = 0; var errno: Int32 = 0 }
            let results = Mutex<[Int: Sealed]>([:])
            nonisolated(unsafe) let mapped = all
            let work = ranges
            let inlineLimit = options.inlineChunkLimit
            DispatchQueue.concurrentPerform(iterations: work.count) { i in
                let slice = UnsafeRawBufferPointer(rebasing: mapped[work[i]])
                let cid = keys.chunkID(of: slice)
                var r = Sealed(id: cid)
                // Looked up per chunk: a copy of both sets per commit made each close O(chunks in the vault).
                let known = state.withLock { s in s.serverChunks.contains(cid) || s.outboxChunks[cid] != nil }
                if !known {
                    do {
                        let sealed = try keys.sealChunk(slice)
                        // Kept sealed only (reads open it from the outbox): its plaintext reaches
                        // the cache once uploaded (cleanOutbox), off the close's path.
                        if sealed.bytes.count <= inlineLimit {
                            r.inline = sealed
                        } else {
                            r.fileSize = sealed.bytes.count
                            r.errno = outbox.write(cid, sealed.bytes)
                        }
                    } catch { r.errno = EIO }
                }
                results.withLock { $0[i] = r }
            }
            let r = results.withLock { $0 }
            for i in ranges.indices {
                let c = r[i]!
                if c.errno != 0 { throw LockError.io(errno: c.errno, "write outbox chunk") }
                chunks.append(Manifest.Chunk(id: c.id, length: ranges[i].count))
                if let sealed = c.inline { inline.append(sealed) }
            }
            // The outbox files were fsynced; now their names.
            let files = r.values.filter { $0.fileSize > 0 }
            outbox.syncFolders(of: files.map(\.id))
            state.withLock { s in for c in files { s.outboxChunks[c.id] = c.fileSize } }
        }
        let manifest = try Manifest(chunks: chunks)
        // A file deleted elsewhere while open here still takes the write: replay brings it back.
        let (node, mtime, mode, seen) = state.withLock {
            ($0.local.node(id), $0.staging[id]?.mtime, $0.staging[id]?.mode, $0.staging[id]?.revision)
        }
        guard let n = node else { throw LockError.notFound }
        try commitLocal(.write(node: id, base: seen ?? n.revision, revision: .random(), mtime: mtime ?? now(), manifest: manifest),
                        mode: mode, chunks: inline)
        committed = true
        state.withLock { $0.staging[id]?.mode = nil; $0.staging[id]?.base = chunks }
    }

    /// Deletes outbox chunks the server is known to have and no pending operation needs.
    ///
    /// They move to the cache first (the file was just written here: it
    /// stays local, like any recently used file), in the background.
    func cleanOutbox() {
        let done: [ChunkID] = state.withLock { s in
            let needed = Set(s.pending.flatMap { $0.operation.chunkIDs })
            let gone = s.outboxChunks.keys.filter { s.serverChunks.contains($0) && !needed.contains($0) }
            for id in gone { s.outboxChunks[id] = nil }
            return gone
        }
        guard !done.isEmpty else { return }
        let start = state.withLock { s -> Bool in
            s.cacheMoves += done
            defer { s.cacheMoverRunning = true }
            return !s.cacheMoverRunning
        }
        if start { background.spawn(priority: .background) { [self] in await moveToCache() } }
    }

    /// Moves uploaded chunks from the outbox (files and index rows) to the
    /// cache, a thousand at a time, when local changes pause (a burst of
    /// writes goes first).
    func moveToCache() async {
        while true {
            try? await waitForPause(.milliseconds(500), atMost: .seconds(30))
            // Stopped: the rest stays in the outbox for the next start.
            if Task.isCancelled { state.withLock { $0.cacheMoverRunning = false }; return }
            let batch = state.withLock { s -> [ChunkID] in
                let b = Array(s.cacheMoves.prefix(1000))
                s.cacheMoves.removeFirst(b.count)
                if b.isEmpty { s.cacheMoverRunning = false }
                return b
            }
            guard !batch.isEmpty else { return }
            for id in batch where !cache.contains(id) {
                if let sealed = try? outbox.read(id), let plain = try? (generations.keys(opening: sealed) ?? keys).openChunk(SealedChunk(id: id, bytes: sealed)) {
                    try? cache.store(id, plain)
                }
            }
            evictIfNeeded()
            do { try outbox.remove(batch) } catch { noteFailure("outbox: \(error)") }
        }
    }
}
