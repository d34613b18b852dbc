import Foundation
@testable import LockClient
import LockTesting
import Testing

/// `lockfs logout` never drops a change silently, and `lockfs login` in a home
/// that still holds a revoked device's changes sends them (docs/operations.md,
/// "Logging out"). The real binaries against a real server.
@Suite struct LogoutTests {
    static func lockfs(_ args: [String], timeout: Duration = .seconds(60)) async throws -> ProcessResult {
        try await runProcess(VaultAccountCLITests.binary, args, environment: ["LOCKFS_HOME": nil], timeout: timeout)
    }

    /// A server, a password file and an initialised first home ("laptop").
    struct Vault {
        let server: ServerProcess
        let dir: URL
        let passwordFile: String
        let user: String

        init(_ user: String) async throws {
            server = try await ServerProcess.start()
            dir = try makeTemporaryDirectory("logout")
            self.user = user
            passwordFile = dir.appendingPathComponent("password").path
            try Data("logout test passphrase".utf8).write(to: URL(fileURLWithPath: passwordFile))
            let source = dir.appendingPathComponent("note.txt")
            try Data("written while the server was away".utf8).write(to: source)
            let invite = try await VaultAccountTests.invite(server, user)
            let made = try await LogoutTests.lockfs(["init", "--home", home("laptop"), "--server", server.baseURL, "--user", user,
                                                     "--invite", invite, "--password-file", passwordFile, "--device-name", "laptop"])
            guard made.status == 0 else { throw TestFailure("init: \(made.stderr)") }
        }

        func home(_ name: String) -> String { dir.appendingPathComponent(name).path }
        var source: String { dir.appendingPathComponent("note.txt").path }

        func login(_ name: String) async throws -> ProcessResult {
            try await LogoutTests.lockfs(["login", "--home", home(name), "--server", server.baseURL, "--user", user,
                                          "--password-file", passwordFile, "--device-name", name])
        }

        /// Queues a change in `name`'s home with the server away, then brings the server back (on a new port).
        func queueWhileAway(_ name: String, _ path: String) async throws {
            server.stop()
            let put = try await LogoutTests.lockfs(["put", "--no-wait", "--home", home(name), source, path])
            guard put.status == 0, put.stdout.contains("queued:") else { throw TestFailure("put: \(put.stderr)") }
            try await server.restart()
            try CrashTests.repoint(home(name), to: server.baseURL)
        }

        func stop() {
            server.stop()
            try? FileManager.default.removeItem(at: dir)
        }
    }

    /// With a change queued: logout refuses (exit 75) whether the server is
    /// down or up, and keeps the credentials; after `lockfs sync` it logs out.
    /// `--discard-changes` logs out, says what it dropped, and a later login
    /// in the same home does not send it. (Before, logout deleted the
    /// credentials at once and left the queue behind, sent or not by chance.)
    @Test func logoutRefusesWhileChangesAreQueuedUnlessTheyAreDiscarded() async throws {
        let v = try await Vault("kim")
        defer { v.stop() }
        let laptop = v.home("laptop")
        let credentials = laptop + "/device.json"

        // Server down: refused, nothing changed.
        v.server.stop()
        let put = try await Self.lockfs(["put", "--no-wait", "--home", laptop, v.source, "/kept.txt"])
        #expect(put.status == 0, "\(put.stderr)")
        let down = try await Self.lockfs(["logout", "--home", laptop])
        #expect(down.status == 75, "\(down.stdout) \(down.stderr)")
        #expect(down.stderr.contains("1 change(s)") && down.stderr.contains("lockfs sync") && down.stderr.contains("--discard-changes"), "\(down.stderr)")
        #expect(FileManager.default.fileExists(atPath: credentials))

        // Server back, token valid: still refused until the change is on the server.
        try await v.server.restart()
        try CrashTests.repoint(laptop, to: v.server.baseURL)
        let up = try await Self.lockfs(["logout", "--home", laptop])
        #expect(up.status == 75 && FileManager.default.fileExists(atPath: credentials), "\(up.stdout) \(up.stderr)")
        let sync = try await Self.lockfs(["sync", "--home", laptop, "--timeout", "60"], timeout: .seconds(90))
        #expect(sync.status == 0, "\(sync.stderr)")
        let out = try await Self.lockfs(["logout", "--home", laptop])
        #expect(out.status == 0 && out.stdout.contains("is revoked"), "\(out.stdout) \(out.stderr)")
        #expect(!FileManager.default.fileExists(atPath: credentials))

        // Discarding: says what it drops, and a new login in the same home sends nothing.
        #expect(try await v.login("laptop").status == 0)
        try await v.queueWhileAway("laptop", "/dropped.txt")
        let discard = try await Self.lockfs(["logout", "--discard-changes", "--home", laptop])
        #expect(discard.status == 0, "\(discard.stderr)")
        #expect(discard.stdout.contains("Dropped 1 queued change(s)"), "\(discard.stdout)")
        #expect(!FileManager.default.fileExists(atPath: credentials))
        let again = try await v.login("laptop")
        #expect(again.status == 0 && !again.stdout.contains("This home holds"), "\(again.stdout) \(again.stderr)")
        let synced = try await Self.lockfs(["sync", "--home", laptop, "--timeout", "30"])
        #expect(synced.status == 0 && synced.stdout.contains("nothing queued"), "\(synced.stdout) \(synced.stderr)")
        let listing = try await Self.lockfs(["ls", "--home", laptop, "/"])
        #expect(listing.stdout.contains("kept.txt") && !listing.stdout.contains("dropped.txt"), "\(listing.stdout)")
    }

    /// A device revoked while a change of its own was queued (and already
    /// sealed, its append refused): `lockfs logout` keeps the change in the
    /// home, `lockfs login` there sends it as the new device, and the queue
    /// drains — `sync` exits 0, `status` shows nothing queued and no alarm.
    /// (Before: the entry arrived, but the puller, matching its own entries by
    /// the current device id, raised "the server acknowledged this device's
    /// entry at 1 but now serves another one there", exit 76.)
    @Test func aRevokedDeviceLogsOutAndInAgainAndItsQueuedChangeIsDelivered() async throws {
        let v = try await Vault("lee")
        defer { v.stop() }
        let laptop = v.home("laptop"), phone = v.home("phone")
        try await v.queueWhileAway("laptop", "/from-laptop.txt")
        #expect(try await v.login("phone").status == 0)
        let id = try DeviceCredentials.load(from: ClientHome(directory: URL(fileURLWithPath: laptop)).credentialsFile).device.hex
        let revoke = try await Self.lockfs(["devices", "revoke", id, "--home", phone, "--password-file", v.passwordFile])
        #expect(revoke.status == 0, "\(revoke.stderr)")
        // The laptop tries: its uploader seals the change into an entry, which the server refuses.
        let refused = try await Self.lockfs(["sync", "--home", laptop, "--timeout", "3"])
        #expect(refused.status == 75, "\(refused.stderr)")
        let sealed = try Index(path: laptop + "/index.sqlite").counts()
        #expect(sealed.pendingOperations == 1 && sealed.inflightBatches == 1)

        let out = try await Self.lockfs(["logout", "--home", laptop])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout.contains("revoked already") && out.stdout.contains("Kept 1 change(s)"), "\(out.stdout)")
        let login = try await v.login("laptop")
        #expect(login.status == 0 && login.stdout.contains("This home holds 1 change(s)"), "\(login.stdout) \(login.stderr)")
        let sync = try await Self.lockfs(["sync", "--home", laptop, "--timeout", "60"], timeout: .seconds(90))
        #expect(sync.status == 0 && sync.stdout.contains("nothing queued"), "\(sync.stdout) \(sync.stderr)")
        let status = try await Self.lockfs(["status", "--home", laptop])
        #expect(status.status == 0 && status.stdout.contains("queued:     0 change(s)"), "\(status.stdout) \(status.stderr)")
        #expect(status.stdout.contains("journal:    entry 1, head "), "\(status.stdout)")
        let again = try await Self.lockfs(["sync", "--home", laptop, "--timeout", "10"])
        #expect(again.status == 0, "\(again.stderr)")
        let get = try await Self.lockfs(["get", "--home", phone, "/from-laptop.txt"])
        #expect(get.stdout == "written while the server was away", "\(get.stderr)")
    }
}
