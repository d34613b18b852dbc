import ArgumentParser
import Foundation
import LockClient
import LockCrypto

/// `lockfs passwd`: change the vault's password.
struct Passwd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the vault's password (the recovery key stays the same).",
        discussion: """
            Asks for the current password, then the new one twice. The vault key is rewrapped \
            for the new password on this machine; the old password stops working for new \
            logins at once. Devices already logged in stay logged in.
            """)

    @OptionGroup var home: HomeOptions
    @Option(name: .customLong("password-file"), help: ArgumentHelp("Read the current password from the first line of F.", valueName: "F"))
    var passwordFile: String?
    @Option(name: .customLong("new-password-file"), help: ArgumentHelp("Read the new password from the first line of F.", valueName: "F"))
    var newPasswordFile: String?
    @Option(name: .customLong("recovery-key-file"), help: ArgumentHelp(
        "Also register the recovery key from F with the server (vaults made before lockfs 0.2, so that `lockfs recover` works without a device).",
        valueName: "F"))
    var recoveryKeyFile: String?

    func run() async throws {
        let credentials = try home.credentials()
        let old = try Secrets.password(file: passwordFile, prompt: "Current password for \(credentials.user): ")
        let new = try Secrets.newPassword(file: newPasswordFile, prompt: "New password: ")
        let recovery = try recoveryKeyFile.map { try RecoveryKey(parsing: Secrets.contents(ofFile: $0, what: "recovery key")) }
        var updated = credentials
        updated.kdf = try await VaultAccount.changePassword(credentials: credentials, old: old, new: new,
                                                            remote: Connection(credentials).remote, registerRecovery: recovery)
        try? updated.save(to: home.clientHome.credentialsFile)
        print("Password changed. Use the new one to log in other devices; the recovery key is unchanged.")
    }
}
