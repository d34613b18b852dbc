import CFuse
import Foundation
import LockClient
import LockWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A FUSE request, sendable so that a task can answer it after the
/// callback has returned (libfuse allows a reply from any thread).
struct Request: @unchecked Sendable {
    let raw: fuse_req_t?
    func error(_ code: Int32) { fuse_reply_err(raw, code) }
    func fail(_ error: any Error) { fuse_reply_err(raw, Errno.code(for: error)) }
}

/// A copy of a request's `fuse_file_info` (libfuse's lives on its stack, gone
/// once the callback returns), for a reply from a task.
struct FileInfo: @unchecked Sendable {
    var raw: fuse_file_info
}

/// Flag values of the kernel ABI (linux/fs.h, linux/xattr.h) that Glibc does not export.
enum KernelFlags {
    static let renameNoReplace: UInt32 = 1
    static let renameExchange: UInt32 = 2
    static let xattrCreate: Int32 = 1
    static let xattrReplace: Int32 = 2
}

/// The lockfs FUSE file system (libfuse3 low-level API): a thin layer that
/// decodes each request, calls the engine and replies.
///
/// No sync logic lives here. Inode numbers are the engine's (stable across
/// restarts); errno values come from `Errno` only. Calls the engine answers
/// from memory are answered on libfuse's worker thread; reads, opens for
/// writing and closes, which may wait for the network or the disk, are
/// answered from a task.
public final class LockFileSystem: Sendable {
    public let engine: Engine
    /// Seconds the kernel may cache attributes and names (remote changes also invalidate).
    let cacheSeconds: Double
    let uid: uid_t
    let gid: gid_t
    /// Directory listings of open directory handles.
    let listings = Mutex<[UInt64: [(name: String, attributes: Attributes)]]>([:])
    let nextListing = Mutex<UInt64>(1)
    let session = Mutex<SessionPointer?>(nil)

    struct SessionPointer: @unchecked Sendable { let raw: OpaquePointer }

    /// The extended attribute that tells scripts and file managers a file's state.
    public static let statusAttribute = "user.lockfs.status"
    /// Virtual attributes through which `lockfs pin`, `unpin`, `status` and
    /// `sync` talk to a running mount (not listed by listxattr):
    /// set `user.lockfs.pin` to pin, remove it to unpin; read
    /// `user.lockfs.progress` ("LOCAL TOTAL" bytes under the node) and
    /// `user.lockfs.engine` (the engine's status as JSON).
    public static let pinAttribute = "user.lockfs.pin"
    public static let progressAttribute = "user.lockfs.progress"
    public static let engineAttribute = "user.lockfs.engine"
    /// Every mount-control attribute's prefix: a user's own attribute may not use it.
    public static let attributePrefix = "user.lockfs."

    public init(engine: Engine, cacheSeconds: Double = 60) {
        self.engine = engine
        self.cacheSeconds = cacheSeconds
        uid = getuid()
        gid = getgid()
    }

    // MARK: Running

    /// Mounts at `mountpoint` and serves until unmounted or signalled
    /// (SIGTERM, SIGINT, SIGHUP). `mounted` is called once the mount is live.
    /// - Returns: 0 or a positive signal number for a clean end.
    /// - Throws: `LockError.io` when the session cannot be made or mounted.
    public func run(mountpoint: String, options: [String], mounted: () -> Void) throws -> Int32 {
        var args = fuse_args(argc: 0, argv: nil, allocated: 0)
        fuse_opt_add_arg(&args, "lockfs")
        for o in ["default_permissions", "fsname=lockfs", "subtype=lockfs"] + options {
            fuse_opt_add_arg(&args, "-o")
            fuse_opt_add_arg(&args, o)
        }
        defer { fuse_opt_free_args(&args) }
        var ops = Self.operations()
        let userdata = Unmanaged.passRetained(self).toOpaque()
        guard let se = fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, userdata) else {
            throw LockError.invalid("bad mount options: \(options.joined(separator: ","))")
        }
        defer { fuse_session_destroy(se) }
        guard fuse_set_signal_handlers(se) == 0 else { throw LockError.io(errno: errno, "install signal handlers") }
        defer { fuse_remove_signal_handlers(se) }
        guard fuse_session_mount(se, mountpoint) == 0 else {
            throw LockError.io(errno: EIO, "mount on \(mountpoint) (is it an existing, empty directory, and is /dev/fuse there?)")
        }
        session.withLock { $0 = SessionPointer(raw: se) }
        engine.setChangeHandler { [weak self] changes in self?.invalidate(changes) }
        mounted()
        let cfg = fuse_loop_cfg_create()
        fuse_loop_cfg_set_max_threads(cfg, 16)
        let result = fuse_session_loop_mt(se, cfg)
        fuse_loop_cfg_destroy(cfg)
        session.withLock { $0 = nil }
        fuse_session_unmount(se)
        return result
    }

    /// Tells the kernel what changed elsewhere: names that went away or moved
    /// (so a cached lookup is not reused) and inodes whose attributes or
    /// content changed. This is what makes long cache timeouts safe.
    func invalidate(_ changes: Engine.ViewChanges) {
        session.withLock { s in
            guard let se = s?.raw else { return }
            for (parent, name) in changes.entries {
                _ = name.withCString { fuse_lowlevel_notify_inval_entry(se, fuse_ino_t(parent), $0, name.utf8.count) }
            }
            for ino in changes.inodes { _ = fuse_lowlevel_notify_inval_inode(se, fuse_ino_t(ino), 0, 0) }
        }
    }

    // MARK: Attributes

    func stat(of a: Attributes) -> stat {
        var st = Glibc.stat()
        st.st_ino = UInt(a.ino)
        switch a.kind {
        case .file: st.st_mode = 0o100000 | a.mode; st.st_nlink = 1
        case .directory: st.st_mode = 0o040000 | a.mode; st.st_nlink = 2
        case .symlink: st.st_mode = 0o120000 | 0o777; st.st_nlink = 1
        case .fifo: st.st_mode = S_IFIFO | a.mode; st.st_nlink = 1
        case .socket: st.st_mode = S_IFSOCK | a.mode; st.st_nlink = 1
        }
        st.st_size = off_t(a.size)
        st.st_blocks = blkcnt_t((a.size + 511) / 512)
        st.st_blksize = 1 << 20
        st.st_uid = uid
        st.st_gid = gid
        st.st_mtim = Self.timeSpec(a.mtime)
        st.st_ctim = Self.timeSpec(a.ctime)
        st.st_atim = Self.timeSpec(a.atime)
        return st
    }

    static func timeSpec(_ t: Timestamp) -> Glibc.timespec {
        Glibc.timespec(tv_sec: Int(t.nanoseconds / 1_000_000_000), tv_nsec: Int(t.nanoseconds % 1_000_000_000))
    }

    func entry(_ a: Attributes) -> fuse_entry_param {
        var e = fuse_entry_param()
        e.ino = fuse_ino_t(a.ino)
        e.generation = 1
        e.attr = stat(of: a)
        e.attr_timeout = cacheSeconds
        e.entry_timeout = cacheSeconds
        return e
    }

    func replyEntry(_ req: Request, _ a: Attributes) {
        var e = entry(a)
        fuse_reply_entry(req.raw, &e)
    }

    func replyAttr(_ req: Request, _ a: Attributes) {
        var st = stat(of: a)
        fuse_reply_attr(req.raw, &st, cacheSeconds)
    }

    /// The value of `user.lockfs.status`: local (a FIFO or socket of this
    /// device), conflict, uploading, pinned, cached or online.
    func status(of ino: UInt64) throws -> String {
        let info = try engine.fileState(ino)
        if info.isLocalOnly { return "local" }
        if info.isConflictCopy { return "conflict" }
        if info.isPending { return "uploading" }
        if info.isPinned { return "pinned" }
        if info.isCached { return "cached" }
        return "online"
    }

    // MARK: The operations table

    static func fs(_ req: fuse_req_t?) -> LockFileSystem {
        Unmanaged<LockFileSystem>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    /// Runs `body` on libfuse's thread; a thrown error becomes the reply.
    static func sync(_ req: fuse_req_t?, _ body: (LockFileSystem, Request) throws -> Void) {
        let r = Request(raw: req)
        do { try body(fs(req), r) } catch { r.fail(error) }
    }

    /// Runs `fast` on libfuse's thread; if it could not answer without
    /// waiting (it returns false: content to fetch), runs `slow` in a task.
    /// Most requests are answered locally and skip the hop to another thread.
    static func local(_ req: fuse_req_t?, _ fast: (LockFileSystem, Request) throws -> Bool,
                      else slow: @escaping @Sendable (LockFileSystem, Request) async throws -> Void) {
        let r = Request(raw: req)
        do { if try fast(fs(req), r) { return } } catch { r.fail(error); return }
        async(req, slow)
    }

    /// Runs `body` in a task; a thrown error becomes the reply.
    static func async(_ req: fuse_req_t?, _ body: @escaping @Sendable (LockFileSystem, Request) async throws -> Void) {
        let r = Request(raw: req)
        let f = fs(req)
        Task { do { try await body(f, r) } catch { r.fail(error) } }
    }

    static func name(_ p: UnsafePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }

    /// A time setattr sets: now (UTIME_NOW), the given one, or none.
    static func time(_ toSet: Int32, set: Int32, now: Int32, _ given: Glibc.timespec) -> Timestamp? {
        if toSet & now != 0 { return .now }
        guard toSet & set != 0 else { return nil }
        return Timestamp(given)
    }

    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { _, conn in
            guard let conn else { return }
            conn.pointee.max_write = 1 << 20
            conn.pointee.max_readahead = 1 << 20
            conn.pointee.want |= UInt32(FUSE_CAP_ASYNC_READ)
            // No writeback cache: with it the kernel keeps its own mtime of a written file and
            // sends it (if at all) after the flush that commits the file, so this mount and the
            // others disagreed on mtimes (tried: it saved a third of an untar's round trips).
            conn.pointee.want &= ~UInt32(FUSE_CAP_WRITEBACK_CACHE)
        }
        ops.destroy = { userdata in
            if let userdata { Unmanaged<LockFileSystem>.fromOpaque(userdata).release() }
        }
        addNamespaceOperations(&ops)
        addFileOperations(&ops)
        addDirectoryOperations(&ops)
        addXattrOperations(&ops)
        return ops
    }

    static func replyXattr(_ r: Request, _ value: [UInt8], size: Int) {
        if size == 0 { fuse_reply_xattr(r.raw, value.count); return }
        guard size >= value.count else { r.error(Errno.range); return }
        value.withUnsafeBytes { _ = fuse_reply_buf(r.raw, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
    }

    /// Fills one readdir(plus) buffer from the listing taken at opendir:
    /// offsets 0 and 1 are "." and "..", then the entries in name order.
    static func readdir(_ req: fuse_req_t?, ino: fuse_ino_t, size: Int, offset: off_t, handle: UInt64, plus: Bool) {
        let fs = fs(req)
        guard let list = fs.listings.withLock({ $0[handle] }) else { fuse_reply_err(req, Errno.badHandle); return }
        var buffer = [CChar](repeating: 0, count: size)
        var used = 0
        var index = Int(offset)
        let total = list.count + 2
        while index < total {
            let name: String
            var attributes: Attributes?
            if index == 0 { name = "." } else if index == 1 { name = ".." } else {
                name = list[index - 2].name
                attributes = list[index - 2].attributes
            }
            let added: Int = buffer.withUnsafeMutableBufferPointer { buf in
                let dst = buf.baseAddress! + used
                let room = size - used
                if plus {
                    var e = attributes.map { fs.entry($0) } ?? fuse_entry_param()
                    if attributes == nil { e.attr.st_ino = UInt(ino); e.attr.st_mode = 0o040000 }
                    return fuse_add_direntry_plus(req, dst, room, name, &e, off_t(index + 1))
                } else {
                    var st = attributes.map { fs.stat(of: $0) } ?? Glibc.stat()
                    if attributes == nil { st.st_ino = UInt(ino); st.st_mode = 0o040000 }
                    return fuse_add_direntry(req, dst, room, name, &st, off_t(index + 1))
                }
            }
            if added > size - used { break }
            used += added
            index += 1
        }
        buffer.withUnsafeBufferPointer { _ = fuse_reply_buf(req, $0.baseAddress, used) }
    }
}
