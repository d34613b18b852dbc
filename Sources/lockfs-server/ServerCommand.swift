import ArgumentParser
import CSQLite
import LockCrypto
import LockWire

/// `lockfs-server`: the blob server. It stores ciphertext and opaque ids only.
@main
struct ServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockfs-server",
        abstract: "The lockfs blob server: stores encrypted chunks and an encrypted, hash-chained journal.",
        discussion: """
            The server never holds a key: it cannot read names, contents or exact sizes. \
            See docs/security.md for what it does learn.
            """,
        version: """
            lockfs-server \(Build.version)
            libsodium \(Sodium.versionString), SQLite \(String(cString: sqlite3_libversion()))
            """)
}
