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
        if toSet & now != 0 {
            var t = Glibc.timespec()
            clock_gettime(CLOCK_REALTIME, &t)
            return Timestamp(nanoseconds: Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec))
        }
        guard toSet & set != 0 else { return nil }
        return Timestamp(nanoseconds: Int64(given.tv_sec) * 1_000_000_000 + Int64(given.tv_nsec))
    }

    // swiftlint:disable:next function_body_length
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
        ops.lookup = { req, parent, name in
            LockFileSystem.sync(req) { fs, r in fs.replyEntry(r, try fs.engine.lookup(parent: UInt64(parent), name: LockFileSystem.name(name))) }
        }
        ops.forget = { req, _, _ in fuse_reply_none(req) }
        ops.forget_multi = { req, _, _ in fuse_reply_none(req) }
        ops.getattr = { req, ino, _ in
            LockFileSystem.sync(req) { fs, r in fs.replyAttr(r, try fs.engine.getattr(UInt64(ino))) }
        }
        ops.setattr = { req, ino, attr, toSet, fi in
            guard let attr else { fuse_reply_err(req, Errno.badRequest); return }
            let st = attr.pointee
            let handle = fi?.pointee.fh ?? 0
            let ino = UInt64(ino)
            let setAttributes = { @Sendable (fs: LockFileSystem, r: Request) throws in
                var mode: UInt32?
                if toSet & FUSE_SET_ATTR_MODE != 0 { mode = st.st_mode & 0o7777 }
                let mtime = LockFileSystem.time(toSet, set: FUSE_SET_ATTR_MTIME, now: FUSE_SET_ATTR_MTIME_NOW, st.st_mtim)
                let atime = LockFileSystem.time(toSet, set: FUSE_SET_ATTR_ATIME, now: FUSE_SET_ATTR_ATIME_NOW, st.st_atim)
                if mode != nil || mtime != nil || atime != nil {
                    _ = try fs.engine.setAttributes(ino, mode: mode, mtime: mtime, atime: atime)
                }
                fs.replyAttr(r, try fs.engine.getattr(ino))
            }
            if toSet & FUSE_SET_ATTR_SIZE != 0 && handle == 0 {
                // truncate(2) of a file not open here: may need its content first.
                LockFileSystem.async(req) { fs, r in
                    try await fs.engine.truncate(ino, size: Int(st.st_size))
                    try setAttributes(fs, r)
                }
                return
            }
            LockFileSystem.sync(req) { fs, r in
                if toSet & FUSE_SET_ATTR_SIZE != 0 { try fs.engine.truncate(handle: handle, size: Int(st.st_size)) }
                try setAttributes(fs, r)
            }
        }
        ops.readlink = { req, ino in
            LockFileSystem.sync(req) { fs, r in fuse_reply_readlink(r.raw, try fs.engine.readlink(UInt64(ino))) }
        }
        ops.mknod = { req, parent, name, mode, _ in
            // Regular files sync; FIFOs and sockets stay on this device (LocalNode); device nodes are refused.
            let local: LocalNode.Kind? = mode & S_IFMT == S_IFIFO ? .fifo : mode & S_IFMT == S_IFSOCK ? .socket : nil
            guard mode & S_IFMT == S_IFREG || local != nil else { fuse_reply_err(req, Errno.notSupported); return }
            LockFileSystem.sync(req) { fs, r in
                let (parent, name) = (UInt64(parent), LockFileSystem.name(name))
                if let local {
                    fs.replyEntry(r, try fs.engine.makeLocalNode(parent: parent, name: name, kind: local, mode: mode & 0o7777))
                } else {
                    fs.replyEntry(r, try fs.engine.createFile(parent: parent, name: name, mode: mode & 0o7777))
                }
            }
        }
        ops.mkdir = { req, parent, name, mode in
            LockFileSystem.sync(req) { fs, r in fs.replyEntry(r, try fs.engine.mkdir(parent: UInt64(parent), name: LockFileSystem.name(name), mode: mode & 0o7777)) }
        }
        ops.unlink = { req, parent, name in
            LockFileSystem.sync(req) { fs, r in try fs.engine.unlink(parent: UInt64(parent), name: LockFileSystem.name(name)); r.error(0) }
        }
        ops.rmdir = { req, parent, name in
            LockFileSystem.sync(req) { fs, r in try fs.engine.rmdir(parent: UInt64(parent), name: LockFileSystem.name(name)); r.error(0) }
        }
        ops.symlink = { req, link, parent, name in
            LockFileSystem.sync(req) { fs, r in fs.replyEntry(r, try fs.engine.symlink(parent: UInt64(parent), name: LockFileSystem.name(name), target: LockFileSystem.name(link))) }
        }
        ops.rename = { req, parent, name, newParent, newName, flags in
            LockFileSystem.sync(req) { fs, r in
                let mode: Engine.RenameMode = flags & KernelFlags.renameExchange != 0 ? .exchange
                    : flags & KernelFlags.renameNoReplace != 0 ? .noReplace : .replace
                try fs.engine.rename(parent: UInt64(parent), name: LockFileSystem.name(name), newParent: UInt64(newParent),
                                     newName: LockFileSystem.name(newName), mode: mode)
                r.error(0)
            }
        }
        ops.link = { req, _, _, _ in fuse_reply_err(req, Errno.notSupported) }
        ops.open = { req, ino, fi in
            guard let fi else { fuse_reply_err(req, Errno.badRequest); return }
            var info = fi.pointee
            let flags = info.flags
            if flags & O_ACCMODE == O_RDONLY {
                // Content never changes under a revision; remote changes invalidate the page cache.
                info.keep_cache = 1
                fuse_reply_open(req, &info)
                return
            }
            let copy = FileInfo(raw: info)
            let truncate = flags & O_TRUNC != 0
            LockFileSystem.local(req, { fs, r in
                guard let h = try fs.engine.openForWriteIfLocal(UInt64(ino), truncate: truncate) else { return false }
                var info = copy.raw
                info.fh = h
                fuse_reply_open(r.raw, &info)
                return true
            }, else: { fs, r in
                var info = copy.raw
                info.fh = try await fs.engine.openForWrite(UInt64(ino), truncate: truncate)
                fuse_reply_open(r.raw, &info)
            })
        }
        ops.read = { req, ino, size, off, _ in
            let reply = { @Sendable (r: Request, bytes: [UInt8]) in
                bytes.withUnsafeBytes { _ = fuse_reply_buf(r.raw, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
            }
            LockFileSystem.local(req, { fs, r in
                guard let bytes = try fs.engine.readIfLocal(UInt64(ino), offset: Int(off), size: size) else { return false }
                reply(r, bytes)
                return true
            }, else: { fs, r in
                reply(r, try await fs.engine.read(UInt64(ino), offset: Int(off), size: size))
            })
        }
        ops.write = { req, _, buf, size, off, fi in
            let handle = fi?.pointee.fh ?? 0
            LockFileSystem.sync(req) { fs, r in
                let n = try fs.engine.write(handle, offset: Int(off), bytes: UnsafeRawBufferPointer(start: buf, count: size))
                fuse_reply_write(r.raw, n)
            }
        }
        ops.flush = { req, _, fi in
            // close(2): a changed file is committed (durable, queued) before close returns.
            let handle = fi?.pointee.fh ?? 0
            guard handle != 0 else { fuse_reply_err(req, 0); return }
            LockFileSystem.sync(req) { fs, r in try fs.engine.flush(handle); r.error(0) }
        }
        ops.fsync = { req, _, _, fi in
            // fsync(2): committed as at close, then durable against a power cut too.
            let handle = fi?.pointee.fh ?? 0
            LockFileSystem.sync(req) { fs, r in
                if handle != 0 { try fs.engine.flush(handle) }
                try fs.engine.syncToDisk()
                r.error(0)
            }
        }
        ops.fsyncdir = { req, _, _, _ in
            LockFileSystem.sync(req) { fs, r in try fs.engine.syncToDisk(); r.error(0) }
        }
        ops.release = { req, _, fi in
            let handle = fi?.pointee.fh ?? 0
            guard handle != 0 else { fuse_reply_err(req, 0); return }
            LockFileSystem.sync(req) { fs, r in try fs.engine.close(handle); r.error(0) }
        }
        ops.create = { req, parent, name, mode, fi in
            guard let fi else { fuse_reply_err(req, Errno.badRequest); return }
            let copy = FileInfo(raw: fi.pointee)
            let n = LockFileSystem.name(name)
            LockFileSystem.sync(req) { fs, r in
                var info = copy.raw
                let a = try fs.engine.createFile(parent: UInt64(parent), name: n, mode: mode & 0o7777)
                // A new, empty file: its staging copy never waits for content.
                guard let h = try fs.engine.openForWriteIfLocal(a.ino, truncate: true) else { throw LockError.io(errno: EIO, "open new file") }
                info.fh = h
                var e = fs.entry(a)
                fuse_reply_create(r.raw, &e, &info)
            }
        }
        ops.opendir = { req, ino, fi in
            guard let fi else { fuse_reply_err(req, Errno.badRequest); return }
            LockFileSystem.sync(req) { fs, r in
                let list = try fs.engine.list(UInt64(ino))
                let id = fs.nextListing.withLock { n -> UInt64 in defer { n += 1 }; return n }
                fs.listings.withLock { $0[id] = list }
                var info = fi.pointee
                info.fh = id
                info.cache_readdir = 0
                fuse_reply_open(r.raw, &info)
            }
        }
        ops.readdir = { req, ino, size, off, fi in
            LockFileSystem.readdir(req, ino: ino, size: size, offset: off, handle: fi?.pointee.fh ?? 0, plus: false)
        }
        ops.readdirplus = { req, ino, size, off, fi in
            LockFileSystem.readdir(req, ino: ino, size: size, offset: off, handle: fi?.pointee.fh ?? 0, plus: true)
        }
        ops.releasedir = { req, _, fi in
            let handle = fi?.pointee.fh ?? 0
            LockFileSystem.fs(req).listings.withLock { _ = $0.removeValue(forKey: handle) }
            fuse_reply_err(req, 0)
        }
        ops.statfs = { req, _ in
            let fs = LockFileSystem.fs(req)
            let status = fs.engine.status()
            var st = statvfs()
            let block: UInt = 1 << 20
            st.f_bsize = block
            st.f_frsize = block
            // A remote store has no fixed size: show a large one, and the cache's room as free.
            st.f_blocks = fsblkcnt_t(1 << 24)
            let free = fsblkcnt_t(max(0, (1 << 24) - status.cacheSize / Int(block)))
            st.f_bfree = free
            st.f_bavail = free
            st.f_files = 1 << 32
            st.f_ffree = 1 << 31
            st.f_favail = 1 << 31
            st.f_namemax = 255
            fuse_reply_statfs(req, &st)
        }
        ops.getxattr = { req, ino, name, size in
            LockFileSystem.sync(req) { fs, r in
                let n = LockFileSystem.name(name)
                let value: [UInt8]
                if n == LockFileSystem.statusAttribute {
                    value = Array(try fs.status(of: UInt64(ino)).utf8)
                } else if n == LockFileSystem.progressAttribute {
                    let p = try fs.engine.localBytes(under: UInt64(ino))
                    value = Array("\(p.local) \(p.total)".utf8)
                } else if n == LockFileSystem.engineAttribute {
                    value = Array(try JSONEncoder().encode(fs.engine.status()))
                } else if n == LockFileSystem.pinAttribute {
                    guard try fs.engine.isPinned(UInt64(ino)) else { r.error(Errno.noAttribute); return }
                    value = Array("1".utf8)
                } else if let x = try fs.engine.xattrs(UInt64(ino)).first(where: { $0.name == n }) {
                    value = x.value
                } else {
                    r.error(Errno.noAttribute)
                    return
                }
                LockFileSystem.replyXattr(r, value, size: size)
            }
        }
        ops.listxattr = { req, ino, size in
            LockFileSystem.sync(req) { fs, r in
                var bytes: [UInt8] = []
                for x in try fs.engine.xattrs(UInt64(ino)) { bytes += Array(x.name.utf8) + [0] }
                bytes += Array(LockFileSystem.statusAttribute.utf8) + [0]
                LockFileSystem.replyXattr(r, bytes, size: size)
            }
        }
        ops.setxattr = { req, ino, name, value, size, flags in
            LockFileSystem.sync(req) { fs, r in
                let n = LockFileSystem.name(name)
                guard n.hasPrefix("user.") else { r.error(Errno.attributeNamespace); return }
                if n == LockFileSystem.pinAttribute {
                    // Pin now; fetch in the background (`lockfs pin` watches the progress).
                    let ino = UInt64(ino)
                    try fs.engine.markPinned(ino)
                    let engine = fs.engine
                    Task { try? await engine.pin(ino) }
                    r.error(0)
                    return
                }
                guard !n.hasPrefix("user.lockfs.") else { r.error(Errno.notSupported); return }
                let exists = try fs.engine.xattrs(UInt64(ino)).contains { $0.name == n }
                if flags & KernelFlags.xattrCreate != 0 && exists { r.error(Errno.attributeExists); return }
                if flags & KernelFlags.xattrReplace != 0 && !exists { r.error(Errno.noAttribute); return }
                let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                try fs.engine.setXattr(UInt64(ino), name: n, value: bytes)
                r.error(0)
            }
        }
        ops.removexattr = { req, ino, name in
            LockFileSystem.sync(req) { fs, r in
                let n = LockFileSystem.name(name)
                if n == LockFileSystem.pinAttribute {
                    try fs.engine.unpin(UInt64(ino))
                    r.error(0)
                    return
                }
                guard try fs.engine.xattrs(UInt64(ino)).contains(where: { $0.name == n }) else { r.error(Errno.noAttribute); return }
                try fs.engine.setXattr(UInt64(ino), name: n, value: nil)
                r.error(0)
            }
        }
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
