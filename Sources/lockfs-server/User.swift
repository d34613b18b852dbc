import ArgumentParser
import Foundation
import LockServer

/// `lockfs-server user …`: accounts. Safe to run while the server runs.
struct User: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage accounts (works while the server runs).",
        subcommands: [Add.self, List.self, Remove.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Invite NAME: prints a one-time invite code (valid 7 days) as the last line.")
        @OptionGroup var data: DataOptions
        @Argument(help: "The account name (a–z, 0–9, “.”, “-”, “_”).") var name: String

        func run() async throws {
            do { try ServerAPI.validate(user: name) } catch let e as ServerError { throw ValidationError(e.message) }
            let (store, _) = try await data.openStores()
            let (code, hash) = Credentials.newInvite()
            do {
                try await store.createInvite(NewInvite(user: name, codeHash: hash, expiresAt: Date().addingTimeInterval(7 * 86400)))
            } catch let e as ServerError {
                throw ValidationError(e.message)
            }
            print("Invite for \(name), valid for 7 days. On the new device run:")
            print("  lockfs init --server URL --user \(name) --invite \(code)")
            print(code)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List accounts with their devices, entries and stored bytes.")
        @OptionGroup var data: DataOptions

        func run() async throws {
            let (store, _) = try await data.openStores()
            let accounts = try await store.accounts()
            if accounts.isEmpty { print("no accounts (invite one: lockfs-server user add NAME)"); return }
            print("NAME".padding(toLength: 24, withPad: " ", startingAt: 0) + "DEVICES  ENTRIES   STORED")
            for a in accounts {
                print(a.name.padding(toLength: 24, withPad: " ", startingAt: 0)
                      + String(a.devices).padding(toLength: 9, withPad: " ", startingAt: 0)
                      + String(a.entries).padding(toLength: 10, withPad: " ", startingAt: 0)
                      + formatBytes(a.storedBytes))
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove an account and all its data. This cannot be undone.")
        @OptionGroup var data: DataOptions
        @Argument var name: String
        @Flag(help: "Do not ask for confirmation.") var yes = false

        func run() async throws {
            if !yes {
                guard isatty(0) != 0 else { throw ValidationError("refusing to remove \(name) without --yes (no terminal to confirm on)") }
                print("Remove \(name) and every file, entry and device of it? This cannot be undone. Type the name to confirm: ", terminator: "")
                guard readLine() == name else { throw ValidationError("not removed") }
            }
            let (store, blobs) = try await data.openStores()
            guard let vault = try await store.removeAccount(named: name) else { throw ValidationError("no account named \(name)") }
            try await blobs.deleteAll(vault: vault)
            print("removed \(name)")
        }
    }
}

/// `lockfs-server device …`: a user's devices.
struct Device: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List or revoke a user's devices (works while the server runs).",
        subcommands: [List.self, Revoke.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List NAME's devices.")
        @OptionGroup var data: DataOptions
        @Argument var name: String

        func run() async throws {
            let (store, _) = try await data.openStores()
            guard let account = try await store.account(named: name) else { throw ValidationError("no account named \(name)") }
            let formatter = ISO8601DateFormatter()
            print("ID                                NAME                    ENROLLED              LAST SEEN")
            for d in try await store.devices(account: account.id) {
                print(d.id.hex + "  " + d.name.padding(toLength: 22, withPad: " ", startingAt: 0) + "  "
                      + formatter.string(from: d.createdAt) + "  " + (d.lastSeenAt.map(formatter.string(from:)) ?? "never"))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke device ID of NAME: its token stops working at once.")
        @OptionGroup var data: DataOptions
        @Argument var name: String
        @Argument(help: "The device id (or a unique prefix of it) from `device list`.") var id: String

        func run() async throws {
            let (store, _) = try await data.openStores()
            guard let account = try await store.account(named: name) else { throw ValidationError("no account named \(name)") }
            let matches = try await store.devices(account: account.id).filter { $0.id.hex.hasPrefix(id.lowercased()) }
            guard matches.count == 1, !id.isEmpty else {
                throw ValidationError(matches.isEmpty ? "\(name) has no device \(id)" : "\(id) matches several devices; give more digits")
            }
            _ = try await store.revokeDevice(account: account.id, id: matches[0].id)
            print("revoked \(matches[0].name) (\(matches[0].id.hex))")
        }
    }
}

func formatBytes(_ n: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n), i = 0
    while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
    return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
}
