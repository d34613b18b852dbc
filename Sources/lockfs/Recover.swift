import ArgumentParser
import Foundation
import LockClient
import LockCrypto

/// `lockfs recover`: a new password from the recovery key, on a logged-in device.
struct Recover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set a new password with the recovery key (on a device that is still logged in).",
        discussion: """
            For a forgotten password. The recovery key opens the vault key, which is then \
            rewrapped for a new password. This works only on a device that is still logged \
            in: the server lets only an enrolled device replace the keyring, and it cannot \
            check a recovery key itself (it never sees it). If no device is logged in any \
            more and the password is lost, the vault cannot be opened. See docs/security.md, \
            "Device credentials".
            """)

    @OptionGroup var home: HomeOptions
    @Option(name: .customLong("recovery-key-file"), help: ArgumentHelp("Read the recovery key from F.", valueName: "F"))
    var recoveryKeyFile: String?
    @Option(name: .customLong("new-password-file"), help: ArgumentHelp("Read the new password from the first line of F.", valueName: "F"))
    var newPasswordFile: String?

    func run() async throws {
        let credentials = try home.credentials()
        let text = try recoveryKeyFile.map { try Secrets.contents(ofFile: $0, what: "recovery key") }
            ?? Terminal.readSecret(prompt: "Recovery key (the 56 characters shown at `lockfs init`): ")
        let recovery = try RecoveryKey(parsing: text)
        let new = try Secrets.newPassword(file: newPasswordFile, prompt: "New password: ")
        try await VaultAccount.recover(credentials: credentials, recoveryKey: recovery, newPassword: new,
                                       remote: Connection(credentials).remote)
        print("New password set. Use it to log in other devices; the recovery key is unchanged.")
    }
}
