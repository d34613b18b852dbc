import ArgumentParser
import Foundation
import LockClient
import LockCrypto
import LockWire

/// `lockfs devices`: the account's devices.
struct Devices: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List this account's devices, or revoke one.",
        subcommands: [List.self, Revoke.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List this account's devices (the default).")
        @OptionGroup var home: HomeOptions

        func run() async throws {
            let credentials = try home.credentials()
            let devices = try await VaultAccount.devices(remote: Connection(credentials).remote)
            let formatter = DateFormatter()
            formatter.dateFormat = "yyyy-MM-dd HH:mm"
            func date(_ t: Double?) -> String { t.map { formatter.string(from: Date(timeIntervalSince1970: $0)) } ?? "never" }
            func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s.padding(toLength: n, withPad: " ", startingAt: 0) }
            print(pad("ID", 34) + pad("NAME", 24) + pad("CREATED", 18) + "LAST SEEN")
            for d in devices.sorted(by: { $0.createdAt < $1.createdAt }) {
                print(pad(d.id, 34) + pad(d.name, 24) + pad(date(d.createdAt), 18) + pad(date(d.lastSeenAt), 18)
                      + (d.current ? "(this device)" : ""))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke device ID and make new vault keys it does not get (asks for the password).",
            discussion: """
                The server wants the password for this, so that a stolen device token cannot \
                sign your devices out. The device's token stops working at once; then a new key \
                generation is made and sealed to every other device the journal vouches for, so \
                the revoked device, with all it kept on disk, opens nothing written from now on. \
                What it read or kept before stays with it. For a lost or stolen device, also change \
                the password (`lockfs passwd`); see docs/security.md, "What a revoked device can read".
                """)
        @OptionGroup var home: HomeOptions
        @OptionGroup var secrets: RotationSecrets
        @Argument(help: "The device id (or a unique prefix of it) from `lockfs devices`.") var id: String

        func run() async throws {
            let credentials = try home.credentials()
            let remote = Connection(credentials).remote
            let prefix = id.lowercased()
            let matches = try await VaultAccount.devices(remote: remote).filter { $0.id.hasPrefix(prefix) }
            guard matches.count == 1, !prefix.isEmpty, let device = DeviceID(hex: matches[0].id) else {
                throw CLIError.usage(matches.isEmpty ? "this account has no device \(id)" : "\(id) matches several devices; give more digits")
            }
            if device == credentials.device {
                throw CLIError.usage("\(id) is this device; use `lockfs logout` to log it out")
            }
            let (password, recovery) = try secrets.read(user: credentials.user)
            try await VaultAccount.revoke(device, password: password, credentials: credentials, remote: remote)
            print("revoked \(matches[0].name) (\(matches[0].id))")
            do {
                try await RotateKeys.rotate(home: home, credentials: credentials, password: password, recovery: recovery)
            } catch {
                printWarning("the vault's keys were not rotated, so the revoked device could still read what is written from now on if it gets the ciphertext; run `lockfs rotate-keys`")
                throw error
            }
        }
    }
}

/// `lockfs rotate-keys`: a new key generation.
struct RotateKeys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-keys",
        abstract: "Make a new vault key generation for this account's devices (asks for the password).",
        discussion: """
            New chunks and journal entries are sealed with the new keys; older ones stay readable. \
            `lockfs devices revoke` does this on its own. The new keys are sealed to this device, to \
            every other device whose key the journal vouches for (it has written to the vault), and \
            to the recovery key; a device left out is named and must log in again.
            """)
    @OptionGroup var home: HomeOptions
    @OptionGroup var secrets: RotationSecrets

    func run() async throws {
        let credentials = try home.credentials()
        let (password, recovery) = try secrets.read(user: credentials.user)
        try await Self.rotate(home: home, credentials: credentials, password: password, recovery: recovery)
    }

    /// Rotates and saves the new generation in device.json; prints what was done.
    static func rotate(home: HomeOptions, credentials: DeviceCredentials, password: String, recovery: RecoveryKey?) async throws {
        let signers = try await journalSigners(home)
        let rotation = try await VaultAccount.rotateKeys(password: password, credentials: credentials,
                                                         remote: Connection(credentials).remote, signers: signers, recoveryKey: recovery)
        try OpenEngine.saveGenerations(rotation.credentials.generations, in: home.clientHome.credentialsFile, device: credentials.device)
        print("new vault keys: generation \(rotation.generation), for this device" + rotation.sealedFor.map { ", \($0)" }.joined())
        for d in rotation.left {
            printWarning("\(d.name) did not get the new keys (\(d.why)); it must log in again to read what is written from now on")
        }
    }

    /// The signing keys the journal bound to devices: the index's, after a
    /// pull when no mount holds the home (a mount keeps it current itself).
    static func journalSigners(_ home: HomeOptions) async throws -> [DeviceID: [UInt8]] {
        if !OpenEngine.isBusy(home.clientHome), let open = try? OpenEngine(home) {
            try? await open.engine.pullOnce()
            return open.engine.boundSigners
        }
        guard FileManager.default.fileExists(atPath: home.clientHome.indexFile.path) else { return [:] }
        return try Index(path: home.clientHome.indexFile.path).signers()
    }
}

/// What a key rotation asks for: the password, and the recovery key once for
/// a vault made before key generations.
struct RotationSecrets: ParsableArguments {
    @Option(name: .customLong("password-file"), help: ArgumentHelp("Read the password from the first line of F.", valueName: "F"))
    var passwordFile: String?
    @Option(name: .customLong("recovery-key-file"), help: ArgumentHelp(
        "The recovery key, needed once for a vault made before key generations (lockfs 0.1 and early 0.2).", valueName: "F"))
    var recoveryKeyFile: String?

    /// The recovery key (if a file was given; parsed first, so a typo fails
    /// before the password is asked), then the password.
    func read(user: String) throws -> (password: String, recovery: RecoveryKey?) {
        let recovery = try recoveryKeyFile.map { try RecoveryKey(parsing: Secrets.contents(ofFile: $0, what: "recovery key")) }
        return (try Secrets.password(file: passwordFile, prompt: "Password for \(user): "), recovery)
    }
}
