import ArgumentParser
import Foundation
import LockClient

/// `lockfs logout`: revoke this device and delete its credentials.
struct Logout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Log this device out: revoke its token on the server and delete its credentials.",
        discussion: """
            Refuses (exit 75) while changes made on this device have not reached the server: \
            run `lockfs sync` first, or pass --discard-changes to drop them. A device that was \
            revoked already cannot send them any more: its changes stay in this home, and the \
            next `lockfs login` here sends them as the new device. \
            If the server cannot be reached the credentials are deleted anyway and the token \
            stays valid on the server: revoke it from another device (`lockfs devices revoke ID`) \
            or ask the server's admin.
            """)

    @OptionGroup var home: HomeOptions
    @Flag(name: .customLong("discard-changes"), help: "Log out although changes made here are not on the server, and drop them (they are lost).")
    var discardChanges = false

    func run() async throws {
        let clientHome = home.clientHome
        let file = clientHome.credentialsFile
        let credentials = try home.credentials()
        // No mount may add changes (or send them) while they are counted and dropped.
        _ = try OpenEngine.lock(clientHome)
        let connection = Connection(credentials, policy: RetryPolicy(attempts: 2))
        let result = try await VaultAccount.logout(credentials: credentials, home: clientHome, remote: connection.remote,
                                                   discardChanges: discardChanges)
        switch result.outcome {
        case .revoked:
            print("Logged out: this device (\(credentials.device.hex)) is revoked and \(file.path) is deleted.")
        case .alreadyRevoked:
            print("Logged out: this device (\(credentials.device.hex)) had been revoked already; \(file.path) is deleted.")
        case .serverUnreachable(let why):
            printWarning("the server could not be reached (\(why)); this device's token is still valid there")
            printWarning("revoke it from another device: lockfs devices revoke \(credentials.device.hex)")
            print("Deleted \(file.path).")
        }
        if result.keptChanges > 0 {
            print("""
                Kept \(result.keptChanges) change(s) made on this device that the server does not have: they stay in \
                \(clientHome.dataDirectory.path), and `lockfs login` into this home sends them as the new device.
                """)
        }
        if let dropped = result.discarded, dropped.operations > 0 {
            let sent = dropped.onServer > 0 ? " (\(dropped.onServer) of them had reached the server and stay there)" : ""
            print("Dropped \(dropped.operations) queued change(s) made on this device\(sent); a later login here will not send them.")
        }
    }
}
