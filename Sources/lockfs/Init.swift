import ArgumentParser
import Foundation
import LockClient
import LockCrypto

/// `lockfs init`: a new vault on the server, with this device enrolled.
struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a new vault on the server and log this device in; shows the recovery key once.",
        discussion: """
            Asks for a new password twice (or reads the first line of --password-file). \
            The password never leaves this machine; the server gets a login secret derived \
            from it and the vault's keyring, encrypted. The recovery key printed at the end \
            is the only way back in if the password is forgotten: write it down and keep it offline.
            """)

    @OptionGroup var home: HomeOptions
    @OptionGroup var server: ServerOptions
    @OptionGroup var enrol: EnrolOptions
    @Option(name: .long, help: ArgumentHelp("The invite code from `lockfs-server user add NAME`.", valueName: "CODE"))
    var invite: String?

    func run() async throws {
        try home.requireNoCredentials()
        let name = try enrol.validDeviceName()
        let user = enrol.user
        server.warnIfPlainHTTP()
        let password = try Secrets.newPassword(file: enrol.passwordFile, prompt: "New password for \(user): ")
        let connection = Connection(server: server.server, caFile: server.caFile)
        var (credentials, recovery) = try await VaultAccount.create(
            server: server.server, user: user, invite: invite, password: password, deviceName: name,
            caFile: server.caFile, remote: connection.remote)

        credentials.insecureHTTP = server.insecureHTTP
        // The vault exists now: show the recovery key even if saving fails.
        var saveError: (any Error)?
        do { try credentials.save(to: home.clientHome.credentialsFile) } catch { saveError = error }
        print("""
            Created the vault of \(user) on \(server.server); this device is "\(name)".

            Recovery key (shown once, now):

                \(recovery.displayString)

            Write it down and keep it offline. It is the only way back in if you forget your
            password, and anyone who has it can read the vault.
            """)
        if let saveError {
            printError("could not save this device's credentials: \(ExitCodes.failure(for: saveError)?.message ?? "\(saveError)")")
            printError("the vault was created; run `lockfs login --server \(server.server) --user \(user)` to enrol this device")
            throw ExitCode(ExitCodes.ioError)
        }
    }
}
