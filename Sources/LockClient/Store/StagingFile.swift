import Foundation
import Synchronization

/// The local copy of a file open for writing: in memory while it is small,
/// a file in the staging folder once it grows past `memoryLimit`.
///
/// Most files written through a mount are small (an untar of a source tree,
/// a git checkout): keeping them in memory until the close commits them
/// spares a file creation and deletion each, which on ext4 cost more than
/// everything else the write does (its inode allocator skips recently
/// freed inodes, and searches longer the more there are). Memory is bounded
/// for the whole process by `memoryBudget`; past it, new copies go to disk.
///
/// Lock order: the engine's state lock may be held when calling in here,
/// never the other way round (nothing here calls back into the engine).
final class StagingFile: Sendable {
    /// Largest file kept in memory.
    static let memoryLimit = 1 << 20
    /// Bytes all in-memory copies may hold together.
    static let memoryBudget = 128 << 20
    private static let memoryInUse = Mutex(0)

    private struct Store {
        /// The content while in memory; nil once on disk (or discarded).
        var memory: [UInt8]?
        /// Bytes reserved against the budget for `memory`.
        var reserved = 0
        /// The staging file once spilled, else -1.
        var fd: Int32 = -1
        var discarded = false
    }

    /// Where the copy goes when it spills to disk.
    let path: String
    private let store: Mutex<Store>

    /// An empty copy: in memory when the budget allows, else on disk at once.
    init(path: String) throws {
        self.path = path
        store = Mutex(Store(memory: []))
        if !Self.reserve(0) { try store.withLock { try Self.spill(&$0, path: path) } }
    }

    /// Current size in bytes.
    var size: Int {
        store.withLock { s in
            if let m = s.memory { return m.count }
            var sb = stat()
            return s.fd >= 0 && fstat(s.fd, &sb) == 0 ? Int(sb.st_size) : 0
        }
    }

    /// Reads up to `count` bytes at `offset` (fewer at the end).
    func read(offset: Int, count: Int) throws -> [UInt8] {
        try store.withLock { s in
            if let m = s.memory {
                guard offset < m.count else { return [] }
                return Array(m[offset..<min(m.count, offset + count)])
            }
            var out = [UInt8](repeating: 0, count: count)
            let got = out.withUnsafeMutableBytes { pread(s.fd, $0.baseAddress!, count, off_t(offset)) }
            guard got >= 0 else { throw LockError.io(errno: errno, "read staging file") }
            return Array(out.prefix(got))
        }
    }

    /// Writes `bytes` at `offset`, growing the file (a gap reads as zeros).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        try store.withLock { s in
            let end = offset + bytes.count
            if s.memory != nil, end > s.memory!.count {
                if end > Self.memoryLimit || !Self.reserve(end - s.reserved) {
                    try Self.spill(&s, path: path)
                } else {
                    s.reserved = end
                    s.memory!.append(contentsOf: repeatElement(0, count: end - s.memory!.count))
                }
            }
            if s.memory != nil {
                s.memory!.withUnsafeMutableBytes { dst in
                    if bytes.count > 0 { (dst.baseAddress! + offset).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
                }
                return
            }
            var done = 0
            while done < bytes.count {
                let n = pwrite(s.fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw LockError.io(errno: errno, "write staging file") }
                done += n
            }
        }
    }

    /// Sets the size (growing with zeros).
    func truncate(_ size: Int) throws {
        try store.withLock { s in
            if s.memory != nil {
                if size <= s.memory!.count {
                    s.memory!.removeLast(s.memory!.count - size)
                    return
                }
                if size <= Self.memoryLimit, Self.reserve(size - s.reserved) {
                    s.reserved = size
                    s.memory!.append(contentsOf: repeatElement(0, count: size - s.memory!.count))
                    return
                }
                try Self.spill(&s, path: path)
            }
            guard ftruncate(s.fd, off_t(size)) == 0 else { throw LockError.io(errno: errno, "truncate staging file") }
        }
    }

    /// Runs `body` on the whole content: a copy taken under the lock while
    /// in memory (small), a read-only mapping of the file on disk.
    func withContents<T>(_ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        let (copy, fd): ([UInt8]?, Int32) = store.withLock { ($0.memory, $0.fd) }
        if let copy { return try copy.withUnsafeBytes { try body($0) } }
        var sb = stat()
        guard fstat(fd, &sb) == 0 else { throw LockError.io(errno: errno, "stat staging file") }
        let size = Int(sb.st_size)
        guard size > 0 else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        guard let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw LockError.io(errno: errno, "map staging file")
        }
        defer { munmap(map, size) }
        return try body(UnsafeRawBufferPointer(start: map, count: size))
    }

    /// Frees the memory, or closes and deletes the file. Idempotent.
    func discard() {
        store.withLock { s in
            guard !s.discarded else { return }
            s.discarded = true
            Self.release(s.reserved)
            s.reserved = 0
            s.memory = nil
            if s.fd >= 0 { close(s.fd); unlink(path); s.fd = -1 }
        }
    }

    deinit { discard() }

    // MARK: Memory budget and spilling

    private static func reserve(_ bytes: Int) -> Bool {
        memoryInUse.withLock { used in
            guard used + bytes <= memoryBudget else { return false }
            used += bytes
            return true
        }
    }

    private static func release(_ bytes: Int) {
        memoryInUse.withLock { $0 -= bytes }
    }

    /// Moves the content from memory to a new file at `path`.
    private static func spill(_ s: inout Store, path: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LockError.io(errno: errno, "create staging file") }
        let content = s.memory ?? []
        var done = 0
        while done < content.count {
            let n = content.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, content.count - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { let e = errno; close(fd); unlink(path); throw LockError.io(errno: e, "write staging file") }
            done += n
        }
        release(s.reserved)
        s.reserved = 0
        s.memory = nil
        s.fd = fd
    }
}
