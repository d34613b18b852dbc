import ArgumentParser
import CCurl
import CFuse
import CSQLite
import LockCrypto
import LockWire

/// `lockfs`: the client. Subcommands arrive with the engine and the mount.
@main
struct LockfsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockfs",
        abstract: "End-to-end encrypted file sync: a FUSE mount of a vault kept on a lockfs-server.",
        discussion: """
            Files are chunked, encrypted and authenticated on this machine; the server \
            stores ciphertext and opaque ids only. See docs/design.md and docs/security.md.
            """,
        version: versionText())

    /// The version line plus the C libraries linked in, for bug reports.
    static func versionText() -> String {
        let curl = String(cString: curl_version_info(CURLVERSION_FIRST).pointee.version)
        let sqlite = String(cString: sqlite3_libversion())
        let fuse = fuse_version()
        return """
            lockfs \(Build.version)
            libsodium \(Sodium.versionString), libfuse \(fuse / 100).\(fuse % 100), \
            libcurl \(curl), SQLite \(sqlite)
            """
    }
}
