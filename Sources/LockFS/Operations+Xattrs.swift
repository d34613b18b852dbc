import CFuse
import Foundation
import LockClient
import LockWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension LockFileSystem {
    /// Extended attributes, the mount-control ones (pin, progress, status, engine) among them.
    static func addXattrOperations(_ ops: inout fuse_lowlevel_ops) {
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
                guard !n.hasPrefix(LockFileSystem.attributePrefix) else { r.error(Errno.notSupported); return }
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
    }
}
