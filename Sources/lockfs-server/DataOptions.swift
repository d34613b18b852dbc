import ArgumentParser
import Foundation
import LockServer
import LockServerS3
import Logging

/// `--data DIR`: where the embedded stores live.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The server's data directory (metadata.sqlite, blobs/).", valueName: "DIR"))
    var data: String?

    @Option(name: .long, help: ArgumentHelp(
        "Keep blobs in an S3-compatible bucket instead of DIR/blobs: s3://BUCKET[/PREFIX]?endpoint=URL&region=R.",
        valueName: "URL"))
    var blobs: String?

    @Option(name: .customLong("s3-credentials"), help: ArgumentHelp(
        "File with the S3 access key (aws_access_key_id, aws_secret_access_key, optional aws_session_token); "
            + "default: $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY, $AWS_SESSION_TOKEN.",
        valueName: "FILE"))
    var s3Credentials: String?

    func validate() throws {
        _ = try s3Store()
    }

    /// The S3 store of --blobs (nil without it), credentials from
    /// --s3-credentials or the environment; a mistake is a ValidationError.
    func s3Store() throws -> S3BlobStore? {
        guard let blobs else {
            if s3Credentials != nil { throw ValidationError("--s3-credentials goes with --blobs s3://…") }
            return nil
        }
        return try makeS3Store(url: blobs, credentialsFile: s3Credentials)
    }

    /// Checks that the blob store answers (for S3: the bucket exists and the credentials are accepted).
    func checkBlobStore(_ store: any BlobStore) async throws {
        guard let s3 = store as? S3BlobStore else { return }
        do { try await s3.checkBucket() } catch let e as ServerError { throw ValidationError(e.message) }
    }

    @OptionGroup var metadataOptions: MetadataOptions

    /// --data, else $LOCKFS_SERVER_DATA, else $XDG_DATA_HOME/lockfs-server (~/.local/share/lockfs-server).
    var directory: URL {
        let env = ProcessInfo.processInfo.environment
        if let data { return URL(fileURLWithPath: data) }
        if let d = env["LOCKFS_SERVER_DATA"], !d.isEmpty { return URL(fileURLWithPath: d) }
        let base = env["XDG_DATA_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.local/share")
        return URL(fileURLWithPath: base).appendingPathComponent("lockfs-server")
    }

    /// Opens the stores (PostgreSQL with --metadata, else the embedded SQLite;
    /// blobs in S3 with --blobs, else DIR/blobs), creating the directory (0700) on first use.
    func openStores(logger: Logger = .adminCommands) async throws -> (any MetadataStore, any BlobStore) {
        let dir = directory
        let postgres = try await metadataOptions.openPostgres(logger: logger)
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try DataDirectoryLock.holdShared(in: dir)
            let store: any MetadataStore = try postgres ?? SQLiteMetadataStore(path: dir.appendingPathComponent("metadata.sqlite").path)
            let blobs: any BlobStore = try s3Store() ?? FileBlobStore(root: dir.appendingPathComponent("blobs"))
            return (store, blobs)
        } catch {
            throw ValidationError("cannot open the data directory \(dir.path): \(error)")
        }
    }
}

/// `DIR/lockfs-server.lock`: every command that opens DIR's stores holds a
/// shared `flock` on it until it exits; `migrate` holds it exclusively. So
/// a migration never runs beside a server or an admin command on DIR, and
/// they refuse to start while one runs. Several servers may share DIR.
enum DataDirectoryLock {
    static let name = "lockfs-server.lock"

    /// Takes the shared lock for the rest of the process (the descriptor stays open).
    static func holdShared(in dir: URL) throws {
        guard try lock(in: dir, exclusive: false) else {
            throw ValidationError("\(dir.path) is being migrated (lockfs-server migrate holds \(name)); "
                                  + "wait for it to end, then use the migrated stores (--metadata, --blobs)")
        }
    }

    /// Takes the exclusive lock for the rest of the process; false if
    /// another process holds the lock.
    static func lock(in dir: URL, exclusive: Bool) throws -> Bool {
        let path = dir.appendingPathComponent(name).path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ValidationError("cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0 else {
            close(fd)
            return false
        }
        return true  // held until the process exits
    }
}

extension Logger {
    /// The admin commands log errors only: their output is for people and scripts.
    static var adminCommands: Logger {
        var logger = Logger(label: "lockfs-server")
        logger.logLevel = .error
        return logger
    }
}

/// Sizes as people write them: 500M, 20G, 1T, or a number of bytes.
func parseSize(_ text: String) -> Int64? {
    let units: [Character: Int64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    let t = text.uppercased().replacingOccurrences(of: "IB", with: "").replacingOccurrences(of: "B", with: "")
    if let last = t.last, let unit = units[last], let n = Double(t.dropLast()), n >= 0 { return Int64(n * Double(unit)) }
    return Int64(t).flatMap { $0 >= 0 ? $0 : nil }
}

/// The S3 store at `url` (s3://BUCKET[/PREFIX]?endpoint=…&region=…), its key from
/// `credentialsFile` or else the AWS_* variables; a mistake is a ValidationError.
func makeS3Store(url: String, credentialsFile: String?) throws -> S3BlobStore {
    do {
        let location = try S3Location(parsing: url)
        let credentials = if let credentialsFile { try S3Credentials.fromFile(credentialsFile) }
            else { try S3Credentials.fromEnvironment(ProcessInfo.processInfo.environment) }
        return S3BlobStore(location: location, credentials: credentials)
    } catch {  // S3ConfigError (typed throws)
        throw ValidationError(error.message)
    }
}
