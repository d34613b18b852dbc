import Foundation
import LockCrypto
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Decrypted chunks on disk, evicted least-recently-used above a size limit.
///
/// `DIR/AB/CHUNKID` holds a chunk's plaintext (0600). The directory is its
/// own accounting: sizes and last use (the file's mtime, touched on every
/// hit) are read back by a scan at start, so the cache and its books can
/// never disagree after a crash. Pinned chunks are never evicted; a chunk is
/// written to a temporary name and renamed, so a reader never sees half of one.
/// Concurrent readers of one missing chunk share one fetch.
public final class ChunkCache: Sendable {
    public let directory: URL
    private struct Entry { var size: Int; var lastUsed: UInt64 }
    private struct State {
        var entries: [ChunkID: Entry] = [:]
        var total = 0
        var clock: UInt64 = 0
        var limit: Int
        var inFlight: [ChunkID: Task<[UInt8], any Error>] = [:]
    }
    private let state: Mutex<State>

    /// - Parameter limit: bytes of plaintext kept (pinned chunks may exceed it).
    public init(directory: URL, limit: Int) throws {
        self.directory = directory
        root = directory.path
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var s = State(limit: limit)
        // Scan: rebuild the books; oldest first by mtime.
        var found: [(ChunkID, Int, Double)] = []
        let fm = FileManager.default
        for sub in (try? fm.contentsOfDirectory(atPath: directory.path)) ?? [] where sub.count == 2 {
            let subdir = directory.appendingPathComponent(sub)
            for name in (try? fm.contentsOfDirectory(atPath: subdir.path)) ?? [] {
                let path = subdir.appendingPathComponent(name).path
                guard let id = ChunkID(hex: name) else { unlink(path); continue } // a torn temporary file
                var st = stat()
                guard stat(path, &st) == 0 else { continue }
                found.append((id, Int(st.st_size), Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9))
            }
        }
        for (id, size, _) in found.sorted(by: { $0.2 < $1.2 }) {
            s.clock += 1
            s.entries[id] = Entry(size: size, lastUsed: s.clock)
            s.total += size
        }
        state = Mutex(s)
    }

    /// `directory.path`, computed once (URL.path is not free, and every chunk access needs it).
    private let root: String

    private func path(_ id: ChunkID) -> String { FanOut.path(root, id) }

    public var limit: Int { state.withLock { $0.limit } }

    /// Bytes of plaintext on disk.
    public var totalSize: Int { state.withLock { $0.total } }
    public func contains(_ id: ChunkID) -> Bool { state.withLock { $0.entries[id] != nil } }

    /// The cached plaintext, or nil. Marks it used.
    public func cached(_ id: ChunkID) -> [UInt8]? {
        guard state.withLock({ s -> Bool in
            guard s.entries[id] != nil else { return false }
            s.clock += 1
            s.entries[id]!.lastUsed = s.clock
            return true
        }) else { return nil }
        let p = path(id)
        guard let data = FileManager.default.contents(atPath: p) else {
            forget(id)
            return nil
        }
        utimensat(AT_FDCWD, p, nil, 0) // last use survives restarts
        return Array(data)
    }

    /// Reads `range` of a cached chunk without loading all of it; nil if absent.
    public func read(_ id: ChunkID, range: Range<Int>) -> [UInt8]? {
        guard contains(id) else { return nil }
        let fd = open(path(id), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { forget(id); return nil }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: range.count)
        var done = 0
        while done < range.count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, range.count - done, off_t(range.lowerBound + done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }
            done += n
        }
        state.withLock { s in
            s.clock += 1
            s.entries[id]?.lastUsed = s.clock
        }
        return out
    }

    private func forget(_ id: ChunkID) {
        state.withLock { s in
            if let e = s.entries.removeValue(forKey: id) { s.total -= e.size }
        }
    }

    /// Stores a chunk's plaintext (no fsync: the cache can always be refetched).
    public func store(_ id: ChunkID, _ plaintext: [UInt8]) throws {
        if contains(id) { return }
        let p = path(id)
        let dir = (p as NSString).deletingLastPathComponent
        mkdir(dir, 0o700)
        // No fsync: the cache can always be fetched again.
        let e = replaceFile(p, with: plaintext, mode: 0o600, sync: false)
        guard e == 0 else { throw LockError.io(errno: e, "cache: write chunk file") }
        state.withLock { s in
            guard s.entries[id] == nil else { return }
            s.clock += 1
            s.entries[id] = Entry(size: plaintext.count, lastUsed: s.clock)
            s.total += plaintext.count
        }
    }

    /// The chunk's plaintext: from disk, or through `fetch` (one fetch for
    /// concurrent callers), stored afterwards.
    public func chunk(_ id: ChunkID, fetch: @escaping @Sendable () async throws -> [UInt8]) async throws -> [UInt8] {
        if let hit = cached(id) { return hit }
        let task: Task<[UInt8], any Error> = state.withLock { s in
            if let t = s.inFlight[id] { return t }
            let t = Task { [self] in
                defer { state.withLock { _ = $0.inFlight.removeValue(forKey: id) } }
                let plain = try await fetch()
                try? store(id, plain)
                return plain
            }
            s.inFlight[id] = t
            return t
        }
        return try await task.value
    }

    /// Evicts least-recently-used chunks not in `keep` until the cache fits its limit.
    /// - Returns: bytes freed.
    @discardableResult
    public func evict(keep: Set<ChunkID>) -> Int {
        let victims: [(ChunkID, Int)] = state.withLock { s in
            guard s.total > s.limit else { return [] }
            var out: [(ChunkID, Int)] = []
            var excess = s.total - s.limit
            for (id, e) in s.entries.sorted(by: { $0.value.lastUsed < $1.value.lastUsed }) where excess > 0 {
                if keep.contains(id) || s.inFlight[id] != nil { continue }
                out.append((id, e.size))
                excess -= e.size
            }
            for (id, size) in out { s.entries[id] = nil; s.total -= size }
            return out
        }
        for (id, _) in victims { unlink(path(id)) }
        return victims.reduce(0) { $0 + $1.1 }
    }
}
