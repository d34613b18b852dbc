import ArgumentParser
import Foundation
import LockClient
import LockCrypto

/// `lockfs recover`: a new password from the recovery key — on a logged-in
/// device, or on a machine that was never enrolled (`--server` and `--user`).
struct Recover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set a new password with the recovery key; every other device is signed out.",
        discussion: """
            For a forgotten password, or when every device is lost. On a logged-in device, run it \
            without --server. On any other machine, give --server and --user: the recovery key is \
            proved to the server, this machine is enrolled, and the vault key is opened from the \
            recovery slot. In both cases the new password replaces the old one and every other \
            device is signed out (log them in again with the new password). Asks before it does \
            that when run on a terminal. See docs/security.md, "Recovery key".
            """)

    @OptionGroup var home: HomeOptions
    @Option(name: .long, help: ArgumentHelp("The server's URL (recovery on a machine that is not logged in).", valueName: "URL"))
    var server: String?
    @Option(name: .long, help: ArgumentHelp("The account name (with --server).", valueName: "NAME"))
    var user: String?
    @Option(name: .customLong("ca-file"), help: ArgumentHelp("A private CA certificate (PEM) for the server's TLS certificate.", valueName: "F"))
    var caFile: String?
    @Flag(name: .customLong("insecure-http"), help: "Allow http:// to another machine (with --server).")
    var insecureHTTP = false
    @Option(name: .customLong("device-name"), help: ArgumentHelp("This device's name (with --server; default: the host name).", valueName: "N"))
    var deviceName: String?
    @Option(name: .customLong("recovery-key-file"), help: ArgumentHelp("Read the recovery key from F.", valueName: "F"))
    var recoveryKeyFile: String?
    @Option(name: .customLong("new-password-file"), help: ArgumentHelp("Read the new password from the first line of F.", valueName: "F"))
    var newPasswordFile: String?
    @Flag(name: .customLong("yes"), help: "Do not ask before signing the other devices out.")
    var yes = false

    mutating func validate() throws {
        guard (server == nil) == (user == nil) else { throw ValidationError("--server and --user go together") }
        if let s = server {
            do { try ServerURL.check(s, insecureHTTP: insecureHTTP) } catch LockError.invalid(let why) { throw ValidationError(why) }
            if s.hasSuffix("/") { server = String(s.dropLast()) }
        }
        if let caFile {
            guard FileManager.default.isReadableFile(atPath: caFile) else { throw ValidationError("cannot read --ca-file \(caFile)") }
            self.caFile = URL(fileURLWithPath: caFile).standardizedFileURL.path
        }
    }

    func run() async throws {
        if let server, let user {
            try await recoverHere(server: server, user: user)
            return
        }
        let credentials = try home.credentials()
        let (recovery, new) = try readSecrets()
        try confirm()
        var updated = credentials
        updated.kdf = try await VaultAccount.recover(credentials: credentials, recoveryKey: recovery, newPassword: new,
                                                     remote: Connection(credentials).remote)
        try? updated.save(to: home.clientHome.credentialsFile)
        print("New password set; every other device was signed out. Log them in again with the new password; the recovery key is unchanged.")
    }

    /// Recovery on a machine with no credentials: enrol it with the recovery key.
    func recoverHere(server: String, user: String) async throws {
        try home.requireNoCredentials()
        let name = deviceName ?? hostName()
        try validateDeviceName(name)
        let (recovery, new) = try readSecrets()
        try confirm()
        let connection = Connection(server: server, caFile: caFile)
        var credentials = try await VaultAccount.recoverWithoutDevice(
            server: server, user: user, recoveryKey: recovery, newPassword: new, deviceName: name, caFile: caFile,
            remote: connection.remote, authenticated: connection.authenticated)
        credentials.insecureHTTP = insecureHTTP
        do {
            try credentials.save(to: home.clientHome.credentialsFile)
        } catch {
            printError("the new password is set, but this device's credentials could not be saved; log in with `lockfs login --server \(server) --user \(user)`")
            try? await connection.authenticated(credentials.token).revokeDevice(credentials.device, loginSecret: nil)
            throw error
        }
        print("New password set and this machine logged in as \"\(name)\"; every other device was signed out.")
    }

    func readSecrets() throws -> (RecoveryKey, String) {
        let text = try recoveryKeyFile.map { try Secrets.contents(ofFile: $0, what: "recovery key") }
            ?? Terminal.readSecret(prompt: "Recovery key (the 56 characters shown at `lockfs init`): ")
        let recovery = try RecoveryKey(parsing: text)
        return (recovery, try Secrets.newPassword(file: newPasswordFile, prompt: "New password: "))
    }

    /// On a terminal, asks before every other device is signed out.
    func confirm() throws {
        guard !yes, isatty(STDIN_FILENO) == 1 else { return }
        FileHandle.standardError.write(Data("Every other device of this account will be signed out. Continue? [y/N] ".utf8))
        guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
            throw CLIError.usage("cancelled; nothing was changed")
        }
    }
}
