import ArgumentParser
import Foundation
import LockClient

/// `lockfs logout`: revoke this device and delete its credentials.
struct Logout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Log this device out: revoke its token on the server and delete its credentials.",
        discussion: """
            If the server cannot be reached the credentials are deleted anyway and the token \
            stays valid on the server: revoke it from another device (`lockfs devices revoke ID`) \
            or ask the server's admin.
            """)

    @OptionGroup var home: HomeOptions

    func run() async throws {
        let file = home.clientHome.credentialsFile
        let credentials = try home.credentials()
        let connection = Connection(credentials, policy: RetryPolicy(attempts: 2))
        switch try await VaultAccount.logout(credentials: credentials, file: file, remote: connection.remote) {
        case .revoked:
            print("Logged out: this device (\(credentials.device.hex)) is revoked and \(file.path) is deleted.")
        case .alreadyRevoked:
            print("Logged out: this device (\(credentials.device.hex)) had been revoked already; \(file.path) is deleted.")
        case .serverUnreachable(let why):
            printWarning("the server could not be reached (\(why)); this device's token is still valid there")
            printWarning("revoke it from another device: lockfs devices revoke \(credentials.device.hex)")
            print("Deleted \(file.path).")
        }
    }
}
