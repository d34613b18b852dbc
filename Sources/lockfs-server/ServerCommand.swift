import ArgumentParser
import LockCrypto
import LockServer
import LockWire

/// `lockfs-server`: the blob server. It stores ciphertext and opaque ids only.
@main
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockfs-server",
        abstract: "The lockfs blob server: stores encrypted chunks and an encrypted, hash-chained journal.",
        discussion: """
            The server never holds a key: it cannot read names, contents or exact sizes. \
            See docs/security.md for what it does learn, and docs/operations.md to run it.
            """,
        version: """
            lockfs-server \(Build.version)
            libsodium \(Sodium.versionString), SQLite \(SQLiteMetadataStore.sqliteVersion)
            """,
        subcommands: [Serve.self, User.self, Device.self, Migrate.self])
}
