import ArgumentParser
import Foundation
import LockClient

/// `lockfs login`: enrol this device in an existing vault.
struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Log this device in to an existing vault with its password.",
        discussion: "Asks for the password (or reads the first line of --password-file).")

    @OptionGroup var home: HomeOptions
    @OptionGroup var server: ServerOptions
    @Option(name: .long, help: ArgumentHelp("The account name on the server.", valueName: "NAME"))
    var user: String
    @Option(name: .customLong("password-file"), help: ArgumentHelp("Read the password from the first line of F (for scripts).", valueName: "F"))
    var passwordFile: String?
    @Option(name: .customLong("device-name"), help: ArgumentHelp("This device's name in `lockfs devices` (default: the host name).", valueName: "N"))
    var deviceName: String?

    func run() async throws {
        try home.requireNoCredentials()
        let name = deviceName ?? hostName()
        try validateDeviceName(name)
        server.warnIfPlainHTTP()
        let password = try Secrets.password(file: passwordFile, prompt: "Password for \(user): ")
        let connection = Connection(server: server.server, caFile: server.caFile)
        let credentials = try await VaultAccount.login(
            server: server.server, user: user, password: password, deviceName: name, caFile: server.caFile,
            remote: connection.remote, authenticated: connection.authenticated)
        do {
            try credentials.save(to: home.clientHome.credentialsFile)
        } catch {
            // Do not leave an enrolled device that nothing can use.
            try? await VaultAccount.revoke(credentials.device, remote: connection.authenticated(credentials.token))
            throw error
        }
        print("Logged in to the vault of \(user) on \(server.server) as \"\(name)\".")
    }
}
