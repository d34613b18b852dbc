import CFuse
import Foundation
import LockClient
import LockWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension LockFileSystem {
    /// Directories and the file system: opendir, readdir(plus), releasedir, fsyncdir, statfs.
    static func addDirectoryOperations(_ ops: inout fuse_lowlevel_ops) {
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
        ops.fsyncdir = { req, _, _, _ in
            LockFileSystem.sync(req) { fs, r in try fs.engine.syncToDisk(); r.error(0) }
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
    }
}
