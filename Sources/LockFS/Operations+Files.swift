import CFuse
import Foundation
import LockClient
import LockWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension LockFileSystem {
    /// Open files: open/create, read, write, flush, fsync, release.
    static func addFileOperations(_ ops: inout fuse_lowlevel_ops) {
        ops.open = { req, ino, fi in
            guard let fi else { fuse_reply_err(req, Errno.badRequest); return }
            var info = fi.pointee
            let flags = info.flags
            if flags & O_ACCMODE == O_RDONLY {
                // Content never changes under a revision; remote changes invalidate the page cache.
                // What the program may read is remembered: a later overwrite is based on it.
                LockFileSystem.fs(req).engine.noteOpenedForReading(UInt64(ino))
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
            // Planned here; only a plan that needs the server goes to a task.
            LockFileSystem.sync(req) { fs, r in
                let plan = try fs.engine.planRead(UInt64(ino), offset: Int(off), size: size)
                if let bytes = plan.bytes { reply(r, bytes); return }
                LockFileSystem.async(req) { fs, r in reply(r, try await fs.engine.finish(plan)) }
            }
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
    }
}
