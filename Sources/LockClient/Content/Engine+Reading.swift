import Foundation
import LockChunker
import LockCrypto
import LockWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Reading files: from the staging copy, the cache, the outbox or the server; read-ahead and pins.
extension Engine {
    // MARK: Reading

    /// A read of a range, planned without waiting: the bytes when every
    /// chunk is local (or the file is open for writing here); else the parts
    /// that are local and the chunks to fetch. The mount answers a ready
    /// plan on its own thread and finishes the others in a task; nothing is
    /// read twice.
    public struct ReadPlan: Sendable {
        /// The bytes, when the read needs nothing from the server.
        public let bytes: [UInt8]?
        let node: NodeID
        let manifest: Manifest
        let offset: Int
        let spans: [(index: Int, chunk: Manifest.Chunk, range: Range<Int>)]
        /// Each span's bytes if local, else nil.
        let parts: [[UInt8]?]
    }

    /// Plans a read of up to `size` bytes at `offset` (no waiting).
    public func planRead(_ ino: UInt64, offset: Int, size: Int) throws -> ReadPlan {
        let n = try node(ino, includingDeleted: true)
        if let st = state.withLock({ $0.staging[n.id] }) {
            return ReadPlan(bytes: try st.file.read(offset: offset, count: size), node: n.id, manifest: .empty, offset: offset, spans: [], parts: [])
        }
        guard case .file(let manifest) = n.content else { throw LockError.isDirectory }
        let spans = Self.spans(of: manifest, offset: offset, size: size)
        let parts = spans.map { cache.read($0.chunk.id, range: $0.range) }
        guard !parts.contains(where: { $0 == nil }) else {
            return ReadPlan(bytes: nil, node: n.id, manifest: manifest, offset: offset, spans: spans, parts: parts)
        }
        let out = parts.reduce(into: [UInt8]()) { $0 += $1! }
        if let last = spans.last { readAhead(n.id, manifest, offset: offset, size: out.count, after: last.index) }
        return ReadPlan(bytes: out, node: n.id, manifest: manifest, offset: offset, spans: spans, parts: parts)
    }

    /// The bytes of `plan`: fetches, verifies and caches the chunks that
    /// were not local.
    /// - Throws: `.offline` when a needed chunk is not local and the server is
    ///   unreachable; `.integrity` when the server's bytes fail verification.
    public func finish(_ plan: ReadPlan) async throws -> [UInt8] {
        if let bytes = plan.bytes { return bytes }
        var out: [UInt8] = []
        for (s, part) in zip(plan.spans, plan.parts) {
            if let part {
                out += part
            } else {
                let plain = try await chunkPlaintext(s.chunk.id)
                guard plain.count == s.chunk.length else { throw LockError.integrity("chunk \(s.chunk.id) has the wrong length") }
                out += plain[s.range]
            }
        }
        if let last = plan.spans.last { readAhead(plan.node, plan.manifest, offset: plan.offset, size: out.count, after: last.index) }
        return out
    }

    /// Reads up to `size` bytes at `offset`: from the file open for writing,
    /// else from cached chunks, else fetched, verified and cached.
    /// - Throws: as `finish`.
    public func read(_ ino: UInt64, offset: Int, size: Int) async throws -> [UInt8] {
        try await finish(try planRead(ino, offset: offset, size: size))
    }

    /// The chunks a read of `size` bytes at `offset` touches: each with its
    /// index in the manifest and the byte range of it that is read.
    static func spans(of manifest: Manifest, offset: Int, size: Int) -> [(index: Int, chunk: Manifest.Chunk, range: Range<Int>)] {
        let end = min(offset + size, manifest.size)
        var spans: [(index: Int, chunk: Manifest.Chunk, range: Range<Int>)] = []
        var chunkStart = 0
        for (i, c) in manifest.chunks.enumerated() {
            let chunkEnd = chunkStart + c.length
            defer { chunkStart = chunkEnd }
            if chunkEnd <= offset { continue }
            if chunkStart >= end { break }
            spans.append((i, c, (max(offset, chunkStart) - chunkStart)..<(min(end, chunkEnd) - chunkStart)))
        }
        return spans
    }

    /// On a sequential read, fetches the next `readAhead` chunks in the background.
    func readAhead(_ id: NodeID, _ manifest: Manifest, offset: Int, size: Int, after lastIndex: Int) {
        let end = offset + size
        let sequential = state.withLock { s -> Bool in
            defer { s.lastReadEnd[id] = end }
            return s.lastReadEnd[id] == offset || offset == 0
        }
        guard sequential && options.readAhead > 0 else { return }
        let ahead = manifest.chunks.dropFirst(lastIndex + 1).prefix(options.readAhead).map(\.id).filter { !cache.contains($0) }
        for id in ahead { background.spawn { _ = try? await self.chunkPlaintext(id) } }
    }

    func chunkPlaintext(_ id: ChunkID) async throws -> [UInt8] {
        let plain = try await cache.chunk(id) { [self] in
            let sealed: SealedChunk
            if let local = try outbox.read(id) {
                sealed = SealedChunk(id: id, bytes: local)
            } else if let moved = cache.cached(id) {
                // The outbox copy moved to the cache since the cache was asked.
                return moved
            } else {
                do { sealed = try await fetchWithTimeout(id) } catch let e as RemoteError { throw LockError.from(e) }
            }
            if generations.keys(opening: sealed.bytes) == nil { try await learnGenerations() }
            do { return try (generations.keys(opening: sealed.bytes) ?? keys).openChunk(sealed) } catch {
                throw LockError.integrity("chunk \(id) from the server failed verification (\(error)); it was not used")
            }
        }
        evictIfNeeded()
        return plain
    }

    /// `remote.chunk(id)`, given up (`.offline`) after `options.fetchTimeout`.
    func fetchWithTimeout(_ id: ChunkID) async throws -> SealedChunk {
        let limit = options.fetchTimeout
        return try await withThrowingTaskGroup(of: SealedChunk?.self) { group in
            group.addTask { [remote] in try await remote.chunk(id) }
            group.addTask { try await Task.sleep(for: limit); return nil }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let chunk = first else { throw LockError.offline }
            return chunk
        }
    }

    func evictIfNeeded() {
        guard cache.totalSize > cache.limit else { return }
        cache.evict(keep: pinnedChunks())
    }

    /// Chunks of every file under a pinned node, in the local view.
    func pinnedChunks() -> Set<ChunkID> {
        state.withLock { s in
            var out = Set<ChunkID>()
            for id in Self.files(under: s.pins, in: s) { if let m = s.local.node(id)?.manifest { for c in m.chunks { out.insert(c.id) } } }
            return out
        }
    }

    /// The live files at or under `roots` in the local view (each once).
    static func files(under roots: some Sequence<NodeID>, in s: State) -> [NodeID] {
        var out: [NodeID] = []
        var stack = Array(roots)
        var seen = Set<NodeID>()
        while let id = stack.popLast() {
            guard seen.insert(id).inserted, let n = s.local.liveNode(id) else { continue }
            if n.isDirectory { stack.append(contentsOf: s.local.childNames(of: id).values) } else { out.append(id) }
        }
        return out
    }

    /// The chunks of `files`, each once, in order.
    static func uniqueChunks(of files: [NodeID], in s: State) -> [Manifest.Chunk] {
        var seen = Set<ChunkID>()
        return files.compactMap { s.local.node($0)?.manifest }.flatMap(\.chunks).filter { seen.insert($0.id).inserted }
    }

    func isPinned(_ s: State, _ id: NodeID) -> Bool {
        var cur = id
        for _ in 0..<4096 {
            if s.pins.contains(cur) { return true }
            guard cur != .root, let n = s.local.node(cur) else { return false }
            cur = n.parent
        }
        return false
    }

    func schedulePinnedFetches(_ changed: Set<NodeID>) {
        let ids: [ChunkID] = state.withLock { s in
            guard !s.pins.isEmpty else { return [] }
            return changed.filter { isPinned(s, $0) }.compactMap { s.local.liveNode($0)?.manifest }.flatMap { $0.chunks.map(\.id) }
        }
        let missing = ids.filter { !cache.contains($0) }
        guard !missing.isEmpty else { return }
        background.spawn { [self] in for id in missing where !Task.isCancelled { _ = try? await chunkPlaintext(id) } }
    }
}
