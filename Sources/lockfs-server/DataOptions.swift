import ArgumentParser
import Foundation
import LockServer
import Logging

/// `--data DIR`: where the embedded stores live.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The server's data directory (metadata.sqlite, blobs/).", valueName: "DIR"))
    var data: String?

    @OptionGroup var metadataOptions: MetadataOptions

    /// --data, else $LOCKFS_SERVER_DATA, else $XDG_DATA_HOME/lockfs-server (~/.local/share/lockfs-server).
    var directory: URL {
        let env = ProcessInfo.processInfo.environment
        if let data { return URL(fileURLWithPath: data) }
        if let d = env["LOCKFS_SERVER_DATA"], !d.isEmpty { return URL(fileURLWithPath: d) }
        let base = env["XDG_DATA_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.local/share")
        return URL(fileURLWithPath: base).appendingPathComponent("lockfs-server")
    }

    /// Opens the stores (PostgreSQL with --metadata, else the embedded
    /// SQLite), creating the directory (0700) on first use.
    func openStores(logger: Logger = .adminCommands) async throws -> (any MetadataStore, FileBlobStore) {
        let dir = directory
        let postgres = try await metadataOptions.openPostgres(logger: logger)
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let store: any MetadataStore = try postgres ?? SQLiteMetadataStore(path: dir.appendingPathComponent("metadata.sqlite").path)
            let blobs = try FileBlobStore(root: dir.appendingPathComponent("blobs"))
            return (store, blobs)
        } catch {
            throw ValidationError("cannot open the data directory \(dir.path): \(error)")
        }
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
