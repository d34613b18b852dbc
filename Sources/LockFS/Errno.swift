import LockClient

#if canImport(Glibc)
import Glibc
#endif

/// The one place where engine errors become errno values.
///
/// Anything unknown is EIO. Integrity failures and an unreachable server
/// are EIO too: the application sees a failed read, never wrong bytes.
public enum Errno {
    public static func code(for error: any Error) -> Int32 {
        guard let e = error as? LockError else { return EIO }
        switch e {
        case .notFound: return ENOENT
        case .exists: return EEXIST
        case .notEmpty: return ENOTEMPTY
        case .notDirectory: return ENOTDIR
        case .isDirectory: return EISDIR
        case .notSupported: return EPERM
        case .offline: return EIO
        case .integrity: return EIO
        case .quota: return EDQUOT
        case .nameTooLong: return ENAMETOOLONG
        case .invalid: return EINVAL
        case .io(let code, _): return code == 0 ? EIO : code
        case .notLoggedIn, .unauthorized: return EACCES
        case .changesQueued: return EBUSY
        case .remote: return EIO
        case .upgradeRequired: return EIO
        }
    }

    /// Not supported on a lockfs mount: hard links, device nodes, ownership changes.
    public static let notSupported = EPERM
    /// No such extended attribute.
    public static let noAttribute = ENODATA
    /// The caller's buffer is too small for an xattr value or list.
    public static let range = ERANGE
    /// An extended attribute outside the `user.` namespace (no ACLs, no `trusted.`).
    public static let attributeNamespace = ENOTSUP
    /// XATTR_CREATE of an attribute that exists.
    public static let attributeExists = EEXIST
    /// A request libfuse delivered without the data it needs.
    public static let badRequest = EINVAL
    /// A directory handle this file system did not open.
    public static let badHandle = EBADF
}
