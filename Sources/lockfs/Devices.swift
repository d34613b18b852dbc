import ArgumentParser
import Foundation
import LockClient
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
            abstract: "Revoke device ID: its token stops working at once (asks for the password).",
            discussion: """
                The server wants the password for this, so that a stolen device token cannot \
                sign your devices out. A revoked device can no longer reach the server, but keeps \
                what it already has on disk, the vault key included. For a lost or stolen device, \
                also change the password (`lockfs passwd`); see docs/security.md, "Device credentials".
                """)
        @OptionGroup var home: HomeOptions
        @Option(name: .customLong("password-file"), help: ArgumentHelp("Read the password from the first line of F.", valueName: "F"))
        var passwordFile: String?
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
            let password = try Secrets.password(file: passwordFile, prompt: "Password for \(credentials.user): ")
            try await VaultAccount.revoke(device, password: password, credentials: credentials, remote: remote)
            print("revoked \(matches[0].name) (\(matches[0].id))")
        }
    }
}
