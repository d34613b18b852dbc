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

    /// Reads up to `size` bytes at `offset`: from the file open for writing,
    /// else from cached chunks, else fetched, verified and cached.
    /// - Throws: `.offline` when a needed chunk is not local and the server is
    ///   unreachable; `.integrity` when the server's bytes fail verification.
    public func read(_ ino: UInt64, offset: Int, size: Int) async throws -> [UInt8] {
        if let local = try readIfLocal(ino, offset: offset, size: size) { return local }
        let n = try node(ino, includingDeleted: true)
        guard case .file(let manifest) = n.content else { throw LockError.isDirectory }
        let spans = Self.spans(of: manifest, offset: offset, size: size)
        guard let last = spans.last else { return [] }
        var out: [UInt8] = []
        for s in spans {
            if let part = cache.read(s.chunk.id, range: s.range) {
                out += part
            } else {
                let plain = try await chunkPlaintext(s.chunk.id)
                guard plain.count == s.chunk.length else { throw LockError.integrity("chunk \(s.chunk.id) has the wrong length") }
                out += plain[s.range]
            }
        }
        readAhead(n.id, manifest, offset: offset, size: out.count, after: last.index)
        return out
    }

    /// `read` without waiting: nil when a chunk of the range is not local
    /// (the mount then calls `read` off its own thread).
    public func readIfLocal(_ ino: UInt64, offset: Int, size: Int) throws -> [UInt8]? {
        let n = try node(ino, includingDeleted: true)
        if let st = state.withLock({ $0.staging[n.id] }) { return try st.file.read(offset: offset, count: size) }
        guard case .file(let manifest) = n.content else { throw LockError.isDirectory }
        let spans = Self.spans(of: manifest, offset: offset, size: size)
        guard let last = spans.last else { return [] }
        var out: [UInt8] = []
        for s in spans {
            guard let part = cache.read(s.chunk.id, range: s.range) else { return nil }
            out += part
        }
        readAhead(n.id, manifest, offset: offset, size: out.count, after: last.index)
        return out
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
