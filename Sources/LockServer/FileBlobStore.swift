import Foundation
import LockCrypto
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Blobs as files: `ROOT/VAULTHEX/AB/CD/CHUNKHEX`, sharded by the first two
/// bytes of the chunk id so no directory grows past 65,536 entries per level.
///
/// A put writes `ROOT/.tmp/RANDOM`, fsyncs it, renames it into place and
/// fsyncs the directory: after a crash a blob is either absent or whole,
/// and `.tmp` is emptied at start. Blocking I/O runs on NIO's thread pool,
/// never on an event loop.
public final class FileBlobStore: BlobStore {
    public let root: URL
    private let tmp: URL
    private let pool: NIOThreadPool

    /// Opens (creating if needed) a store under `root` and removes leftovers of interrupted puts.
    public init(root: URL, pool: NIOThreadPool = .singleton) throws {
        self.root = root
        self.tmp = root.appendingPathComponent(".tmp")
        self.pool = pool
        let fm = FileManager.default
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        for leftover in try fm.contentsOfDirectory(atPath: tmp.path) {
            try? fm.removeItem(at: tmp.appendingPathComponent(leftover))
        }
    }

    func path(_ key: BlobKey) -> String {
        let hex = key.chunk.hex
        let a = hex.prefix(2), b = hex.dropFirst(2).prefix(2)
        return "\(root.path)/\(key.vault.hex)/\(a)/\(b)/\(hex)"
    }

    public func put(_ bytes: [UInt8], for key: BlobKey) async throws {
        let final = path(key)
        let tmpPath = "\(tmp.path)/\(Hex.encode(Sodium.randomBytes(12)))"
        try await pool.runIfActive {
            if access(final, F_OK) == 0 { return }
            let dir = (final as NSString).deletingLastPathComponent
            try Self.makeDirectories(dir)
            let fd = open(tmpPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw Self.failure("create", tmpPath) }
            var ok = false
            defer {
                if !ok { unlink(tmpPath) }
            }
            do {
                defer { close(fd) }
                try bytes.withUnsafeBytes { raw in
                    var offset = 0
                    while offset < raw.count {
                        let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                        if n < 0 {
                            if errno == EINTR { continue }
                            throw Self.failure("write", tmpPath)
                        }
                        offset += n
                    }
                }
                guard fsync(fd) == 0 else { throw Self.failure("fsync", tmpPath) }
            }
            guard rename(tmpPath, final) == 0 else { throw Self.failure("rename", final) }
            ok = true
            try Self.syncDirectory(dir)
        }
    }

    public func get(_ key: BlobKey) async throws -> [UInt8]? {
        let p = path(key)
        return try await pool.runIfActive {
            let fd = open(p, O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                if errno == ENOENT { return nil }
                throw Self.failure("open", p)
            }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw Self.failure("stat", p) }
            let size = Int(st.st_size)
            return try [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                var offset = 0
                while offset < size {
                    let n = read(fd, buffer.baseAddress! + offset, size - offset)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw Self.failure("read", p) }
                    offset += n
                }
                count = size
            }
        }
    }

    public func exists(_ key: BlobKey) async throws -> Bool {
        let p = path(key)
        return try await pool.runIfActive { access(p, F_OK) == 0 }
    }

    public func delete(_ key: BlobKey) async throws {
        let p = path(key)
        try await pool.runIfActive {
            if unlink(p) != 0 && errno != ENOENT { throw Self.failure("unlink", p) }
        }
    }

    public func deleteAll(vault: VaultID) async throws {
        let dir = root.appendingPathComponent(vault.hex)
        try await pool.runIfActive {
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
