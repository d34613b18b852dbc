import Foundation
import LockClient
import LockCrypto

/// Failures of the command line itself (not of the engine).
enum CLIError: Error {
    /// `init` or `login` into a home that already has a device.
    case credentialsExist(String)
    /// A secret is needed and there is neither a terminal nor a file.
    case noTerminal
    /// The two entries of a new password differ.
    case passwordsDiffer
    /// Bad input the parser could not see (an unreadable file…).
    case usage(String)
    /// Another lockfs process (a mount) holds this home.
    case busy(String)
    /// `sync --timeout` passed with changes still queued.
    case timedOut(Int)
    /// A path given to pin, unpin, status or sync is not inside a lockfs mount.
    case notInMount(String)
}

/// The one table of exit codes and messages (the BSD sysexits values, so
/// scripts can tell "try again later" from "fix your input").
///
/// | code | meaning |
/// |---|---|
/// | 0 | done |
/// | 1 | anything else (the message says what) |
/// | 64 | usage: wrong arguments, no terminal for a password |
/// | 65 | bad input: passwords differ, a recovery key with a typo |
/// | 69 | the server cannot be reached |
/// | 71 | this machine could not run Argon2id (memory) |
/// | 74 | a local file could not be read or written |
/// | 75 | temporary: the server is busy or rate limiting, or changes are still queued; try again later |
/// | 76 | a security check failed: the server is broken or hostile |
/// | 77 | refused: wrong password or recovery key, bad invite, revoked device |
/// | 78 | this home's state: not logged in, already logged in, damaged credentials |
enum ExitCodes {
    static let other: Int32 = 1
    static let usage: Int32 = 64
    static let dataError: Int32 = 65
    static let unavailable: Int32 = 69
    static let osError: Int32 = 71
    static let ioError: Int32 = 74
    static let tryLater: Int32 = 75
    static let integrity: Int32 = 76
    static let refused: Int32 = 77
    static let config: Int32 = 78

    /// The exit code and the sentence for `error`, or nil for ArgumentParser's
    /// own errors (usage, --help, ExitCode), which it reports itself.
    static func failure(for error: any Error) -> (code: Int32, message: String)? {
        switch error {
        case let error as CLIError: return describe(error)
        case let error as LockError: return describe(error)
        case let error as RemoteError: return describe(LockError.from(error))
        case let error as CryptoError: return describe(error)
        default:
            let name = String(reflecting: type(of: error))
            if name.hasPrefix("ArgumentParser.") { return nil }
            return (other, "unexpected error: \(error)")
        }
    }

    static func describe(_ error: CLIError) -> (Int32, String) {
        switch error {
        case .credentialsExist(let path):
            return (config, "this home already has a logged-in device (\(path)); run `lockfs logout` first, or use another --home")
        case .noTerminal:
            return (usage, "no terminal to ask for the secret on; pass it in a file (--password-file F, --new-password-file F or --recovery-key-file F)")
        case .passwordsDiffer:
            return (dataError, "the two passwords differ; nothing was changed, run the command again")
        case .usage(let message):
            return (usage, message)
        case .busy(let path):
            return (tryLater, "another lockfs process (a mount?) is using \(path); run this command through the mount, or stop it first")
        case .notInMount(let path):
            return (usage, "\(path) is not inside a lockfs mount (mount one with `lockfs mount DIR`)")
        case .timedOut(let queued):
            return (tryLater, "timed out with \(queued) change(s) still queued; they stay queued and will be sent later")
        }
    }

    static func describe(_ error: LockError) -> (Int32, String) {
        switch error {
        case .notLoggedIn:
            return (config, "this home has no logged-in device: run `lockfs init` (new vault) or `lockfs login` (existing vault), or pass the right --home")
        case .unauthorized(let message):
            return (refused, message)
        case .offline:
            return (unavailable, "the server cannot be reached (or is failing); check the URL and the network, then try again")
        case .integrity(let message):
            return (integrity, "security check failed: \(message). Do not use this server until you know why")
        case .invalid(let message):
            return (config, message)
        case .io(let code, let what):
            return (ioError, "\(what): \(String(cString: strerror(code)))")
        case .changesQueued(let n):
            return (tryLater, "\(n) change(s) made on this device have not reached the server, and logging out now would lose them: run `lockfs sync` (it waits for the server), then `lockfs logout` again; or `lockfs logout --discard-changes` to drop them")
        case .quota:
            return (tryLater, "the account's quota on the server is full; delete files or ask the server's admin for more")
        case .remote(let message):
            return (other, "the server refused: \(message)")
        case .upgradeRequired(let what):
            return (config, "\(what) was written by a newer lockfs than this one: upgrade lockfs on this device")
        case .notFound:
            return (other, "no such file or folder in the vault")
        case .exists:
            return (other, "a file or folder of that name exists")
        case .notDirectory:
            return (other, "not a folder")
        case .isDirectory:
            return (other, "is a folder")
        default:
            return (other, "\(error)")
        }
    }

    static func describe(_ error: CryptoError) -> (Int32, String) {
        switch error {
        case .recoveryKeyTypo:
            return (dataError, "the recovery key has a typo (its checksum does not match); check each group of four characters")
        case .malformedRecoveryKey(let why):
            return (dataError, "that is not a recovery key: \(why)")
        case .wrongRecoveryKey:
            return (refused, "the recovery key is wrong (it is not this vault's)")
        case .wrongPassword:
            return (refused, VaultAccount.wrongLogin)
        case .unacceptableKDFParameters(let why):
            return (integrity, "security check failed: the server asked for password-hashing parameters this client refuses (\(why)); it is misconfigured or hostile")
        case .unsupportedKDF(let algorithm):
            return (integrity, "security check failed: the server asked for an unknown password-hashing algorithm (\(algorithm))")
        case .kdfFailed:
            return (osError, "Argon2id could not get the memory it needs (256 MiB by default); close other programs and try again")
        default:
            return (integrity, "security check failed: \(error). Do not use this server until you know why")
        }
    }
}
