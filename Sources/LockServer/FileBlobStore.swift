import Foundation
import LockCrypto
import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// Blobs as files: `ROOT/VAULTHEX/AB/CD/CHUNKHEX`, sharded by the first two
/// bytes of the chunk id so no directory grows past 65,536 entries per level.
///
/// A put writes a temporary file, fsyncs it, links it into place (never
/// replacing a blob already there) and fsyncs the directory: after a crash
/// a blob is either absent or whole. Each process that opens the store
/// writes its temporary files in a directory of its own,
/// `ROOT/.tmp/RANDOM/`, holding an `flock` on `RANDOM/.lock` while it runs;
/// opening the store removes only directories whose lock is free (their
/// process is gone), so an admin command never disturbs a live server's
/// uploads. Blocking I/O runs on a Dispatch queue of its own, never on an
/// event loop or Swift's cooperative threads.
public final class FileBlobStore: BlobStore {
    public let root: URL
    private let tmp: URL
    /// Holds this process's lock on its temporary directory.
    private let lockFD: Int32
    private let io = DispatchQueue(label: "lockfs.blobs", attributes: .concurrent)

    /// Opens (creating if needed) a store under `root` and removes what
    /// interrupted puts of dead processes left behind.
    public init(root: URL) throws {
        self.root = root
        let tmpRoot = root.appendingPathComponent(".tmp")
        let fm = FileManager.default
        try fm.createDirectory(at: tmpRoot, withIntermediateDirectories: true)
        Self.removeStale(in: tmpRoot)
        tmp = tmpRoot.appendingPathComponent(Hex.encode(Sodium.randomBytes(8)))
        try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
        lockFD = open(tmp.appendingPathComponent(".lock").path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else { throw Self.failure("lock", tmp.path) }
    }

    deinit {
        close(lockFD)
        try? FileManager.default.removeItem(at: tmp)
    }

    /// Removes temporary directories whose owner is gone, and loose files.
    private static func removeStale(in tmpRoot: URL) {
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: tmpRoot.path)) ?? [] {
            let entry = tmpRoot.appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: entry.path, isDirectory: &isDirectory) else { continue }
            if isDirectory.boolValue {
                let fd = open(entry.appendingPathComponent(".lock").path, O_RDWR | O_CLOEXEC)
                if fd >= 0 {
                    defer { close(fd) }
                    guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { continue }  // its process is alive
                }
            }
            try? fm.removeItem(at: entry)
        }
    }

    /// How many live processes have the store under `root` open: their
    /// temporary directories' locks are held (`lockfs-server migrate`
    /// refuses to copy a store that a server or an admin command uses).
    public static func processesUsing(root: URL) -> Int {
        let tmpRoot = root.appendingPathComponent(".tmp")
        var count = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: tmpRoot.path)) ?? [] {
            let fd = open(tmpRoot.appendingPathComponent(name).appendingPathComponent(".lock").path, O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                count += 1
            } else {
                flock(fd, LOCK_UN)
            }
        }
        return count
    }

    /// Temporary files of puts under `root` (for tests and `fsck`-like checks):
    /// everything in `.tmp` except the per-process lock files and directories.
    public static func temporaryFiles(under root: URL) -> [String] {
        let tmpRoot = root.appendingPathComponent(".tmp")
        guard let walker = FileManager.default.enumerator(atPath: tmpRoot.path) else { return [] }
        var out: [String] = []
        while let path = walker.nextObject() as? String {
            var isDirectory: ObjCBool = false
            FileManager.default.fileExists(atPath: tmpRoot.appendingPathComponent(path).path, isDirectory: &isDirectory)
            if !isDirectory.boolValue && !path.hasSuffix("/.lock") { out.append(path) }
        }
        return out.sorted()
    }

    func path(_ key: BlobKey) -> String {
        let hex = key.chunk.hex
        let a = hex.prefix(2), b = hex.dropFirst(2).prefix(2)
        return "\(root.path)/\(key.vault.hex)/\(a)/\(b)/\(hex)"
    }

    public func put(_ bytes: [UInt8], for key: BlobKey) async throws {
        let final = path(key)
        let tmpPath = "\(tmp.path)/\(Hex.encode(Sodium.randomBytes(12)))"
        try await blocking { try Self.writeAtomically(bytes, to: final, via: tmpPath) }
    }

    /// A batch: temporary files written without a sync each, made durable
    /// together (one `syncfs`), linked into place, and the links made durable
    /// together (one more `syncfs`) — two syncs for the batch instead of two
    /// or more per blob. Where syncfs is missing, each file and directory is
    /// fsynced as in `put`.
    public func put(batch: [(key: BlobKey, bytes: [UInt8])]) async throws {
        guard batch.count > 1, Self.syncfsFunction != nil else {
            for item in batch { try await put(item.bytes, for: item.key) }
            return
        }
        let items = batch.map { (final: path($0.key), tmp: "\(tmp.path)/\(Hex.encode(Sodium.randomBytes(12)))", bytes: $0.bytes) }
        let tmpDir = tmp.path
        try await blocking { try Self.writeBatch(items, tmpDirectory: tmpDir) }
    }

    private static func writeBatch(_ items: [(final: String, tmp: String, bytes: [UInt8])], tmpDirectory: String) throws {
        let todo = items.filter { access($0.final, F_OK) != 0 }
        guard !todo.isEmpty else { return }
        var written: [String] = []
        defer { for t in written { unlink(t) } }  // temporary names never outlive the batch
        for item in todo {
            let dir = (item.final as NSString).deletingLastPathComponent
            if access(dir, F_OK) != 0 { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
            let fd = open(item.tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw failure("create", item.tmp) }
            written.append(item.tmp)
            defer { close(fd) }
            try writeAll(fd, item.bytes, path: item.tmp)
        }
        try syncFileSystem(containing: tmpDirectory)
        for item in todo where link(item.tmp, item.final) != 0 && errno != EEXIST {
            throw failure("link", item.final)
        }
        try syncFileSystem(containing: tmpDirectory)
    }

    /// libc's syncfs(2), looked up at run time (Swift's Glibc module does not
    /// export it without _GNU_SOURCE).
    private static let syncfsFunction: (@convention(c) (Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "syncfs") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32) -> Int32).self)
    }()

    private static func syncFileSystem(containing path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open", path) }
        defer { close(fd) }
        guard syncfsFunction!(fd) == 0 else { throw failure("syncfs", path) }
    }

    public func get(_ key: BlobKey) async throws -> [UInt8]? {
        let p = path(key)
        return try await blocking { try Self.read(p) }
    }

    /// Runs blocking file work on the I/O queue and resumes with its result.
    private func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            io.async { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Temp file, write, fsync, rename, fsync the directory (blocking).
    private static func writeAtomically(_ bytes: [UInt8], to final: String, via tmpPath: String) throws {
        if access(final, F_OK) == 0 { return }
        let dir = (final as NSString).deletingLastPathComponent
        try makeDirectories(dir)
        let fd = open(tmpPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure("create", tmpPath) }
        do {
            try writeAll(fd, bytes, path: tmpPath)
            guard fsync(fd) == 0 else { throw failure("fsync", tmpPath) }
            close(fd)
        } catch {
            close(fd)
            unlink(tmpPath)
            throw error
        }
        // link(2), not rename(2): a blob that appeared meanwhile (a concurrent
        // upload of the same id) is never replaced; the first one stays.
        if link(tmpPath, final) != 0 && errno != EEXIST {
            let error = failure("link", final)
            unlink(tmpPath)
            throw error
        }
        unlink(tmpPath)
        try syncDirectory(dir)
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failure("write", path)
                }
                offset += n
            }
        }
    }

    /// The whole file, or nil if it does not exist (blocking).
    private static func read(_ p: String) throws -> [UInt8]? {
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw failure("open", p)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw failure("stat", p) }
        let size = Int(st.st_size)
        var out = [UInt8](repeating: 0, count: size)
        try out.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < size {
                let n = Glibc.read(fd, buffer.baseAddress! + offset, size - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw failure("read", p) }
                offset += n
            }
        }
        return out
    }

    public func exists(_ key: BlobKey) async throws -> Bool {
        let p = path(key)
        return try await blocking { access(p, F_OK) == 0 }
    }

    public func delete(_ key: BlobKey) async throws {
        let p = path(key)
        try await blocking {
            if unlink(p) != 0 && errno != ENOENT { throw Self.failure("unlink", p) }
        }
    }

    public func deleteAll(vault: VaultID) async throws {
        let dir = root.appendingPathComponent(vault.hex)
        try await blocking {
            if FileManager.default.fileExists(atPath: dir.path) { try FileManager.default.removeItem(at: dir) }
        }
    }

    private static func makeDirectories(_ dir: String) throws {
        if access(dir, F_OK) == 0 { return }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // The new directories' entries must reach the disk too.
        var d = dir
        for _ in 0..<3 {
            d = (d as NSString).deletingLastPathComponent
            try syncDirectory(d)
        }
    }

    private static func syncDirectory(_ dir: String) throws {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open directory", dir) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw failure("fsync directory", dir) }
    }

    private static func failure(_ what: String, _ path: String) -> ServerError {
        .unavailable("blob store: \(what) failed: \(String(cString: strerror(errno)))")
    }
}
