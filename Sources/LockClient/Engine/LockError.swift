import LockCrypto
import LockWire

/// Every way the engine refuses or fails. The FUSE layer maps these to errno
/// in one place (LockFS/Errno.swift), the CLI to exit codes and sentences in
/// one table.
public enum LockError: Error, Sendable, Equatable {
    case notFound
    case exists
    case notEmpty
    case notDirectory
    case isDirectory
    /// Not possible on this kind of node (a hard link, a write to a symlink…).
    case notSupported(String)
    /// The content is not cached and the server cannot be reached.
    case offline
    /// A tampered chunk, a broken or forked journal: wrong bytes are never served.
    case integrity(String)
    case quota
    case nameTooLong
    case invalid(String)
    /// A local I/O error (disk full is `errno` ENOSPC).
    case io(errno: Int32, String)
    /// No credentials in this home: run `lockfs init` or `lockfs login`.
    case notLoggedIn
    /// The server refused the credentials (wrong password, revoked device).
    case unauthorized(String)
    /// Local changes that are not on the server yet stand in the way (`lockfs
    /// logout` without `--discard-changes`): how many.
    case changesQueued(Int)
    /// The server said no (a message for the user).
    case remote(String)
    /// The vault holds data written by a newer lockfs than this one (what, for the user).
    case upgradeRequired(String)
}

extension LockError {
    /// Maps a remote failure: unreachable and 5xx are `.offline`; the rest as said.
    public static func from(_ error: RemoteError) -> LockError {
        switch error {
        case .unreachable, .unavailable, .rateLimited: .offline
        case .unauthorized: .unauthorized("this device's token was refused (revoked?); run `lockfs logout`, then `lockfs login`")
        case .forbidden(let m): .unauthorized(m)
        case .notFound: .notFound
        case .quotaExceeded: .quota
        case .malformedResponse(let m): .integrity("the server's answer was malformed: \(m)")
        case .missingChunks: .remote("the server lacks chunks this change needs")
        case .conflict("upgrade_required", let m): .upgradeRequired(m)
        case .conflict(let code, let m): .remote("\(code): \(m)")
        case .rejected(_, let code, let m): .remote("\(code): \(m)")
        }
    }
}
