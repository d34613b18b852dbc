import ArgumentParser
import CCurl
import CFuse
import CSQLite
import Foundation
import LockCrypto
import LockWire

/// `lockfs`: the client. Vault lifecycle commands now; the mount arrives with the engine.
@main
struct LockfsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockfs",
        abstract: "End-to-end encrypted file sync: a FUSE mount of a vault kept on a lockfs-server.",
        discussion: """
            Files are chunked, encrypted and authenticated on this machine; the server \
            stores ciphertext and opaque ids only. See docs/design.md and docs/security.md.
            """,
        version: versionText(),
        subcommands: [Init.self, Login.self, Passwd.self, Recover.self, Devices.self, RotateKeys.self, Logout.self,
                      Mount.self, Umount.self, Pin.self, Unpin.self, Status.self, Sync.self, Repair.self, Verify.self, Ls.self, Put.self, Get.self])

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

    /// Parses and runs a command; failures of the engine go through the one
    /// table in ExitCodes.swift, everything else (usage, --help) through
    /// ArgumentParser.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            if let failure = ExitCodes.failure(for: error) {
                printError(failure.message)
                Foundation.exit(failure.code)
            }
            exit(withError: error)
        }
    }
}

/// Writes "lockfs: MESSAGE" to stderr.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("lockfs: \(message)\n".utf8))
}

/// Writes "lockfs: warning: MESSAGE" to stderr.
func printWarning(_ message: String) {
    FileHandle.standardError.write(Data("lockfs: warning: \(message)\n".utf8))
}
