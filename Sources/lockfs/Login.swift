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
    @OptionGroup var enrol: EnrolOptions

    func run() async throws {
        try home.requireNoCredentials()
        let name = try enrol.validDeviceName()
        let user = enrol.user
        server.warnIfPlainHTTP()
        let password = try Secrets.password(file: enrol.passwordFile, prompt: "Password for \(user): ")
        let connection = Connection(server: server.server, caFile: server.caFile)
        var credentials = try await VaultAccount.login(
            server: server.server, user: user, password: password, deviceName: name, caFile: server.caFile,
            remote: connection.remote, authenticated: connection.authenticated)
        credentials.insecureHTTP = server.insecureHTTP
        do {
            try credentials.save(to: home.clientHome.credentialsFile)
        } catch {
            // Do not leave an enrolled device that nothing can use.
            try? await connection.authenticated(credentials.token).revokeDevice(credentials.device, loginSecret: nil)
            throw error
        }
        print("Logged in to the vault of \(user) on \(server.server) as \"\(name)\".")
        // A revoked device's changes, kept by its logout: the engine sends them as this device.
        if let queued = try? home.clientHome.queuedChanges(), queued > 0 {
            print("This home holds \(queued) change(s) made before by the device logged in here; `lockfs sync` or a mount sends them now.")
        }
    }
}
