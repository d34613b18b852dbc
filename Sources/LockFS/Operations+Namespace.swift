import CFuse
import Foundation
import LockClient
import LockWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension LockFileSystem {
    /// Names and attributes: lookup, getattr/setattr, creating, removing and renaming nodes.
    static func addNamespaceOperations(_ ops: inout fuse_lowlevel_ops) {
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
    }
}
