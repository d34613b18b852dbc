import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The vault lifecycle against a real lockfs-server, with Argon2id at
/// INTERACTIVE strength so that each derivation takes a fraction of a second.
@Suite struct VaultAccountTests {
    static let fast = KDFParameters.Strength.interactive

    /// A new account's invite code (the last line of `user add`).
    static func invite(_ server: ServerProcess, _ user: String) async throws -> String {
        let result = try await server.admin(["user", "add", user])
        #expect(result.status == 0, "\(result.output)")
        return result.output.split(separator: "\n").last.map(String.init) ?? ""
    }

    static func anonymous(_ server: ServerProcess) -> HTTPRemote { HTTPRemote(baseURL: server.baseURL, transport: transport) }

    static func remote(_ credentials: DeviceCredentials) -> HTTPRemote {
        HTTPRemote(baseURL: credentials.server, token: credentials.token, transport: transport)
    }

    /// A new vault for `user` with `password`; returns this device's credentials and the recovery key.
    static func create(_ server: ServerProcess, _ user: String, password: String) async throws -> (DeviceCredentials, RecoveryKey) {
        try await VaultAccount.create(server: server.baseURL, user: user, invite: try await invite(server, user), password: password,
                                      deviceName: "laptop", remote: anonymous(server), strength: fast)
    }

    static func login(_ server: ServerProcess, _ user: String, password: String, device: String = "phone") async throws -> DeviceCredentials {
        let remote = anonymous(server)
        return try await VaultAccount.login(server: server.baseURL, user: user, password: password, deviceName: device,
                                            remote: remote, authenticated: { remote.authenticated($0) })
    }

    static func sameMaster(_ a: DeviceCredentials, _ b: DeviceCredentials) -> Bool {
        a.keys.master.withUnsafeBytes { pa in b.keys.master.withUnsafeBytes { pb in Array(pa) == Array(pb) } }
    }

    @Test func createThenLoginOnASecondDeviceGivesTheSameKeys() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (laptop, recovery) = try await Self.create(server, "alice", password: "correct horse battery staple")
        #expect(recovery.displayString.count == 69)
        let phone = try await Self.login(server, "alice", password: "correct horse battery staple")
        #expect(phone.vault == laptop.vault && phone.user == "alice" && phone.deviceName == "phone")
        #expect(phone.device != laptop.device && phone.token != laptop.token)
        #expect(Self.sameMaster(laptop, phone))
        #expect(phone.keys.content.id == laptop.keys.content.id)
        // The recovery key shown at init opens the vault too.
        #expect(try await Self.remote(laptop).keyring().unlock(recovery: recovery)[0].master.id == laptop.keys.master.id)
    }

    @Test func aWrongPasswordIsATypedError() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        _ = try await Self.create(server, "bob", password: "the right password")
        await #expect(throws: LockError.unauthorized(VaultAccount.wrongLogin)) {
            _ = try await Self.login(server, "bob", password: "the wrong password")
        }
        // An unknown name answers the same.
        await #expect(throws: LockError.unauthorized(VaultAccount.wrongLogin)) {
            _ = try await Self.login(server, "nobody", password: "the right password")
        }
        // A used invite cannot create a second vault.
        await #expect(throws: LockError.self) {
            _ = try await VaultAccount.create(server: server.baseURL, user: "bob", invite: "AAAA-AAAA-AAAA-AAAA", password: "x",
                                              deviceName: "d", remote: Self.anonymous(server), strength: Self.fast)
        }
        #expect(try await VaultAccount.devices(remote: Self.remote(try await Self.login(server, "bob", password: "the right password"))).count == 2)
    }

    @Test func aKeyringThatTheAcceptedPasswordDoesNotOpenIsAnIntegrityError() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (laptop, _) = try await Self.create(server, "carol", password: "carol's password")
        // A hostile server: accepts the login, serves a keyring with another password slot.
        let genuine = try await Self.remote(laptop).keyring()
        let other = try PasswordKeys.derive(password: "something else", parameters: genuine.parameters)
        let forged = try genuine.rewrapped(generations: [VaultKeys.generate(vaultID: laptop.vault)], password: other, parameters: genuine.parameters)
        let http = Self.anonymous(server)
        do {
            _ = try await VaultAccount.login(server: server.baseURL, user: "carol", password: "carol's password", deviceName: "phone",
                                             remote: http, authenticated: { KeyringSwappingRemote(base: http.authenticated($0), keyring: forged) })
            Issue.record("a keyring that does not open was accepted")
        } catch LockError.integrity(let message) {
            #expect(message.contains("hostile"))
        }
        // The device enrolled by that login was revoked again.
        #expect(try await VaultAccount.devices(remote: Self.remote(laptop)).count == 1)
        // passwd refuses a keyring that opens to another MK than the device's.
        let swapped = KeyringSwappingRemote(base: Self.remote(laptop),
                                            keyring: try genuine.rewrapped(generations: [VaultKeys.generate(vaultID: laptop.vault)],
                                                                           password: try PasswordKeys.derive(password: "carol's password", parameters: genuine.parameters),
                                                                           parameters: genuine.parameters))
        await #expect(throws: LockError.self) {
            try await VaultAccount.changePassword(credentials: laptop, old: "carol's password", new: "new one", remote: swapped, strength: Self.fast)
        }
    }

    @Test func passwdReplacesThePasswordAndKeepsTheRecoveryKey() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (laptop, recovery) = try await Self.create(server, "dave", password: "old password 1")
        await #expect(throws: LockError.unauthorized("the current password is wrong")) {
            try await VaultAccount.changePassword(credentials: laptop, old: "not it", new: "new password 2",
                                                  remote: Self.remote(laptop), strength: Self.fast)
        }
        try await VaultAccount.changePassword(credentials: laptop, old: "old password 1", new: "new password 2",
                                              remote: Self.remote(laptop), strength: Self.fast)
        await #expect(throws: LockError.unauthorized(VaultAccount.wrongLogin)) {
            _ = try await Self.login(server, "dave", password: "old password 1")
        }
        let phone = try await Self.login(server, "dave", password: "new password 2")
        #expect(Self.sameMaster(laptop, phone))
        let keyring = try await Self.remote(phone).keyring()
        #expect(try keyring.unlock(recovery: recovery)[0].master.id == laptop.keys.master.id)
        // The laptop's token still works after the change.
        #expect(try await VaultAccount.devices(remote: Self.remote(laptop)).count == 2)
    }

    @Test func recoverSetsANewPasswordFromTheRecoveryKey() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (laptop, recovery) = try await Self.create(server, "erin", password: "forgotten password")
        await #expect(throws: LockError.unauthorized("the recovery key is wrong (it is not this vault's)")) {
            try await VaultAccount.recover(credentials: laptop, recoveryKey: .generate(), newPassword: "x",
                                           remote: Self.remote(laptop), strength: Self.fast)
        }
        let typed = try RecoveryKey(parsing: recovery.displayString.lowercased().replacingOccurrences(of: "-", with: " "))
        try await VaultAccount.recover(credentials: laptop, recoveryKey: typed, newPassword: "remembered password",
                                       remote: Self.remote(laptop), strength: Self.fast)
        await #expect(throws: LockError.unauthorized(VaultAccount.wrongLogin)) {
            _ = try await Self.login(server, "erin", password: "forgotten password")
        }
        let phone = try await Self.login(server, "erin", password: "remembered password")
        #expect(Self.sameMaster(laptop, phone))
    }

    @Test func devicesAreListedAndRevokedAndLogoutDeletesTheCredentials() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (laptop, _) = try await Self.create(server, "frank", password: "frank's password")
        let phone = try await Self.login(server, "frank", password: "frank's password")
        let listed = try await VaultAccount.devices(remote: Self.remote(laptop))
        #expect(listed.count == 2)
        #expect(listed.filter(\.current).map(\.id) == [laptop.device.hex])
        #expect(Set(listed.map(\.name)) == ["laptop", "phone"])

        await #expect(throws: LockError.unauthorized("the password is wrong")) {
            try await VaultAccount.revoke(phone.device, password: "not frank's", credentials: laptop, remote: Self.remote(laptop))
        }
        try await VaultAccount.revoke(phone.device, password: "frank's password", credentials: laptop, remote: Self.remote(laptop))
        await #expect(throws: LockError.unauthorized("this device's token was refused (revoked?); run `lockfs logout`, then `lockfs login`")) {
            _ = try await VaultAccount.devices(remote: Self.remote(phone))
        }
        await #expect(throws: LockError.notFound) {
            try await VaultAccount.revoke(DeviceID.random(), password: "frank's password", credentials: laptop, remote: Self.remote(laptop))
        }

        // Credentials: 0600, round trip, deleted by logout (which revokes the token).
        let dir = try makeTemporaryDirectory("home")
        defer { try? FileManager.default.removeItem(at: dir) }
        let home = ClientHome(directory: dir)
        try laptop.save(to: home.credentialsFile)
        var info = stat()
        #expect(stat(home.credentialsFile.path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let loaded = try DeviceCredentials.load(from: home.credentialsFile)
        #expect(loaded.server == laptop.server && loaded.user == laptop.user && loaded.device == laptop.device
                && loaded.deviceName == laptop.deviceName && loaded.vault == laptop.vault && loaded.token == laptop.token
                && loaded.caFile == nil && Self.sameMaster(loaded, laptop))
        #expect(try await VaultAccount.logout(credentials: loaded, home: home, remote: Self.remote(loaded)).outcome == .revoked)
        #expect(!FileManager.default.fileExists(atPath: home.credentialsFile.path))
        #expect(throws: LockError.notLoggedIn) { _ = try DeviceCredentials.load(from: home.credentialsFile) }
        await #expect(throws: RemoteError.unauthorized) { _ = try await Self.remote(laptop).devices() }

        // With the server gone, logout still deletes the file and says so.
        try phone.save(to: home.credentialsFile)
        server.stop()
        let outcome = try await VaultAccount.logout(credentials: phone, home: home, remote: Self.remote(phone)).outcome
        guard case .serverUnreachable = outcome else { Issue.record("expected unreachable, got \(outcome)"); return }
        #expect(!FileManager.default.fileExists(atPath: home.credentialsFile.path))
    }
}

/// A Remote that serves a given keyring instead of the server's (a hostile server).
struct KeyringSwappingRemote: Remote {
    let base: HTTPRemote
    let keyring: VaultKeyring

    func keyring() async throws -> VaultKeyring { keyring }
    func preLogin(user: String) async throws -> KDFParameters { try await base.preLogin(user: user) }
    func register(_ request: RegisterRequest) async throws -> Session { try await base.register(request) }
    func login(_ request: LoginRequest) async throws -> Session { try await base.login(request) }
    func recover(_ request: RecoverRequest) async throws -> Session { try await base.recover(request) }
    func replaceKeyring(_ request: KeyringReplaceRequest) async throws { try await base.replaceKeyring(request) }
    func devices() async throws -> [DeviceInfo] { try await base.devices() }
    func revokeDevice(_ id: DeviceID, loginSecret: [UInt8]?) async throws { try await base.revokeDevice(id, loginSecret: loginSecret) }
    func missingChunks(_ ids: [ChunkID]) async throws -> [ChunkID] { try await base.missingChunks(ids) }
    func putChunk(_ chunk: SealedChunk) async throws { try await base.putChunk(chunk) }
    func putChunks(_ chunks: [SealedChunk]) async throws { try await base.putChunks(chunks) }
    func chunk(_ id: ChunkID) async throws -> SealedChunk { try await base.chunk(id) }
    func append(_ entry: JournalEntry, references: [ChunkID]) async throws -> (seq: JournalSeq, head: ChainHead) {
        try await base.append(entry, references: references)
    }
    func entries(after: JournalSeq, limit: Int, wait: Duration) async throws -> EntryPage {
        try await base.entries(after: after, limit: limit, wait: wait)
    }
    func putCheckpoint(_ stored: [UInt8]) async throws { try await base.putCheckpoint(stored) }
    func latestCheckpoint() async throws -> [UInt8]? { try await base.latestCheckpoint() }
}

extension VaultKeys {
    /// A random MK for an existing vault id (a forged keyring's content).
    static func generate(vaultID: VaultID) -> VaultKeys { VaultKeys(vaultID: vaultID, master: .random()) }
}

/// Recovery with no device left, and what a recovery does to the others (issue 13).
@Suite struct RecoveryWithoutDeviceTests {
    @Test func theRecoveryKeyAloneEnrolsANeverEnrolledMachine() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (laptop, recovery) = try await VaultAccountTests.create(server, "hana", password: "lost with the laptop")
        let phone = try await VaultAccountTests.login(server, "hana", password: "lost with the laptop")
        let anonymous = VaultAccountTests.anonymous(server)
        func recover(_ key: RecoveryKey, user: String = "hana") async throws -> DeviceCredentials {
            try await VaultAccount.recoverWithoutDevice(server: server.baseURL, user: user, recoveryKey: key, newPassword: "found again",
                                                        deviceName: "borrowed", remote: anonymous,
                                                        authenticated: { anonymous.authenticated($0) }, strength: VaultAccountTests.fast)
        }
        await #expect(throws: LockError.self) { _ = try await recover(.generate()) }
        await #expect(throws: LockError.self) { _ = try await recover(recovery, user: "nobody") }
        #expect(try await VaultAccount.devices(remote: VaultAccountTests.remote(laptop)).count == 2)

        let rescued = try await recover(recovery)
        #expect(VaultAccountTests.sameMaster(rescued, laptop) && rescued.vault == laptop.vault && rescued.deviceName == "borrowed")
        // Every other device is signed out; the new password logs in, the old one does not.
        for old in [laptop, phone] {
            await #expect(throws: LockError.self) { _ = try await VaultAccount.devices(remote: VaultAccountTests.remote(old)) }
        }
        #expect(try await VaultAccount.devices(remote: VaultAccountTests.remote(rescued)).map(\.name) == ["borrowed"])
        await #expect(throws: LockError.unauthorized(VaultAccount.wrongLogin)) {
            _ = try await VaultAccountTests.login(server, "hana", password: "lost with the laptop")
        }
        let again = try await VaultAccountTests.login(server, "hana", password: "found again", device: "new laptop")
        #expect(VaultAccountTests.sameMaster(again, laptop))
    }

    /// An enrolled device remembers the password's KDF parameters: a server
    /// that later serves weaker ones (so that the login secret sent as proof
    /// is cheap to brute-force) is refused before anything is derived.
    @Test func weakerPasswordParametersThanTheDeviceSawAreRefused() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let invite = try await VaultAccountTests.invite(server, "lena")
        let (laptop, _) = try await VaultAccount.create(server: server.baseURL, user: "lena", invite: invite, password: "lena's password",
                                                        deviceName: "laptop", remote: VaultAccountTests.anonymous(server), strength: .moderate)
        #expect(laptop.kdf?.opsLimit == 3)
        let genuine = try await VaultAccountTests.remote(laptop).keyring()
        guard case .v2(let g) = genuine else { Issue.record("init writes a version 2 keyring"); return }
        let weak = VaultKeyring.v2(GenerationKeyring(
            vaultID: g.vaultID, parameters: KDFParameters.generate(.interactive), generation: g.generation, recoveryBoxKey: g.recoveryBoxKey,
            passwordSlot: g.passwordSlot, recoverySeal: g.recoverySeal, links: g.links, deviceSeals: g.deviceSeals))
        let lying = KeyringSwappingRemote(base: VaultAccountTests.remote(laptop), keyring: weak)
        await #expect {
            try await VaultAccount.changePassword(credentials: laptop, old: "lena's password", new: "x", remote: lying,
                                                  strength: VaultAccountTests.fast)
        } throws: { error in
            guard case LockError.integrity(let why) = error else { return false }
            return why.contains("weaker password parameters")
        }
        // Saved and read back with the credentials.
        let dir = try makeTemporaryDirectory("kdf-memory")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("device.json")
        try laptop.save(to: file)
        #expect(try DeviceCredentials.load(from: file).kdf == laptop.kdf)
        #expect(VaultAccount.weaker(genuine.parameters, than: weak.parameters) == nil)
    }

    @Test func aPasswordChangeNeedsTheCurrentPasswordOnTheServerToo() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (laptop, _) = try await VaultAccountTests.create(server, "ines", password: "ines's password")
        // A client that skips its own check (a thief's script): the server refuses the wrong proof.
        let keyring = try await VaultAccountTests.remote(laptop).keyring()
        let wrong = KeyringReplaceRequest(keyring: keyring, loginSecret: Sodium.randomBytes(32), proof: .password(Sodium.randomBytes(32)))
        await #expect(throws: RemoteError.forbidden("the password is wrong")) { try await VaultAccountTests.remote(laptop).replaceKeyring(wrong) }
        try await VaultAccount.changePassword(credentials: laptop, old: "ines's password", new: "ines's new password",
                                              remote: VaultAccountTests.remote(laptop), strength: VaultAccountTests.fast)
        _ = try await VaultAccountTests.login(server, "ines", password: "ines's new password")
    }
}

/// The `lockfs` binary itself: init, login from a second home, a wrong password.
@Suite struct VaultAccountCLITests {
    /// The package's debug build of lockfs (`swift build --build-tests` builds it).
    static let binary = ServerProcess.binary.deletingLastPathComponent().appendingPathComponent("lockfs")

    /// Runs lockfs (LOCKFS_HOME unset), killed after `timeout`.
    static func lockfs(_ args: [String], timeout: Duration = .seconds(60)) async throws -> (status: Int32, stdout: String, stderr: String) {
        let r = try await runProcess(binary, args, environment: ["LOCKFS_HOME": nil], timeout: timeout)
        return (r.status, r.stdout, r.stderr)
    }

    @Test func initLoginAndAWrongPassword() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let dir = try makeTemporaryDirectory("cli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let first = dir.appendingPathComponent("first").path, second = dir.appendingPathComponent("second").path
        let passwordFile = dir.appendingPathComponent("password").path
        let wrongFile = dir.appendingPathComponent("wrong").path
        try Data("a long enough passphrase\n".utf8).write(to: URL(fileURLWithPath: passwordFile))
        try Data("not the passphrase".utf8).write(to: URL(fileURLWithPath: wrongFile))
        let invite = try await VaultAccountTests.invite(server, "gina")

        let created = try await Self.lockfs(["init", "--home", first, "--server", server.baseURL, "--user", "gina",
                                             "--invite", invite, "--password-file", passwordFile, "--device-name", "desk"])
        #expect(created.status == 0, "\(created.stderr)")
        #expect(created.stdout.range(of: #"([0-9A-Z]{4}-){13}[0-9A-Z]{4}"#, options: .regularExpression) != nil)
        #expect(created.stdout.contains("only way back in"))
        let credentials = try DeviceCredentials.load(from: ClientHome(directory: URL(fileURLWithPath: first)).credentialsFile)
        #expect(credentials.user == "gina" && credentials.deviceName == "desk")

        // A second init into the same home is refused before anything is asked.
        let again = try await Self.lockfs(["init", "--home", first, "--server", server.baseURL, "--user", "gina",
                                           "--password-file", passwordFile])
        #expect(again.status == 78 && again.stderr.contains("lockfs logout"), "\(again.stderr)")

        let wrong = try await Self.lockfs(["login", "--home", second, "--server", server.baseURL, "--user", "gina",
                                           "--password-file", wrongFile])
        #expect(wrong.status == 77, "\(wrong.stderr)")
        #expect(wrong.stderr.contains("wrong user name or password"))
        #expect(!FileManager.default.fileExists(atPath: second + "/device.json"))

        let login = try await Self.lockfs(["login", "--home", second, "--server", server.baseURL, "--user", "gina",
                                           "--password-file", passwordFile, "--device-name", "tablet"])
        #expect(login.status == 0, "\(login.stderr)")
        let other = try DeviceCredentials.load(from: ClientHome(directory: URL(fileURLWithPath: second)).credentialsFile)
        #expect(VaultAccountTests.sameMaster(credentials, other))

        let devices = try await Self.lockfs(["devices", "--home", second])
        #expect(devices.status == 0 && devices.stdout.contains("desk") && devices.stdout.contains("(this device)"), "\(devices.stderr)")
        let logout = try await Self.lockfs(["logout", "--home", second])
        #expect(logout.status == 0, "\(logout.stderr)")
        let gone = try await Self.lockfs(["devices", "--home", second])
        #expect(gone.status == 78 && gone.stderr.contains("lockfs login"), "\(gone.stderr)")
    }

    @Test func recoverOnAFreshMachineWithTheCLI() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let dir = try makeTemporaryDirectory("cli-recover")
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try Data("the first passphrase\n".utf8).write(to: URL(fileURLWithPath: path("old")))
        try Data("the second passphrase\n".utf8).write(to: URL(fileURLWithPath: path("new")))
        let invite = try await VaultAccountTests.invite(server, "jo")
        let created = try await Self.lockfs(["init", "--home", path("desk"), "--server", server.baseURL, "--user", "jo",
                                             "--invite", invite, "--password-file", path("old"), "--device-name", "desk"])
        #expect(created.status == 0, "\(created.stderr)")
        let key = try #require(created.stdout.range(of: #"([0-9A-Z]{4}-){13}[0-9A-Z]{4}"#, options: .regularExpression).map { String(created.stdout[$0]) })
        try Data(key.utf8).write(to: URL(fileURLWithPath: path("key")))

        let recovered = try await Self.lockfs(["recover", "--home", path("fresh"), "--server", server.baseURL, "--user", "jo",
                                               "--recovery-key-file", path("key"), "--new-password-file", path("new"), "--device-name", "fresh"])
        #expect(recovered.status == 0, "\(recovered.stderr)")
        let desk = try DeviceCredentials.load(from: ClientHome(directory: URL(fileURLWithPath: path("desk"))).credentialsFile)
        let fresh = try DeviceCredentials.load(from: ClientHome(directory: URL(fileURLWithPath: path("fresh"))).credentialsFile)
        #expect(VaultAccountTests.sameMaster(desk, fresh))
        let signedOut = try await Self.lockfs(["devices", "--home", path("desk")])
        #expect(signedOut.status != 0 && signedOut.stderr.contains("revoked"), "\(signedOut.stderr)")
        let login = try await Self.lockfs(["login", "--home", path("later"), "--server", server.baseURL, "--user", "jo",
                                           "--password-file", path("new")])
        #expect(login.status == 0, "\(login.stderr)")
    }

    /// `lockfs devices revoke` revokes and rotates: it names who got the new
    /// keys and who was left out; the other device's `sync` adopts them and
    /// keeps them in its device.json; the revoked one is told to log in again.
    @Test func revokeRotatesTheKeysWithTheCLI() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let dir = try makeTemporaryDirectory("cli-rotate")
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try Data("rotation passphrase\n".utf8).write(to: URL(fileURLWithPath: path("pw")))
        try Data("a file\n".utf8).write(to: URL(fileURLWithPath: path("file")))
        let made = try await Self.lockfs(["init", "--home", path("desk"), "--server", server.baseURL, "--user", "rene",
                                          "--invite", try await VaultAccountTests.invite(server, "rene"), "--password-file", path("pw"),
                                          "--device-name", "desk"])
        #expect(made.status == 0, "\(made.stderr)")
        for name in ["phone", "lost", "quiet"] {
            let r = try await Self.lockfs(["login", "--home", path(name), "--server", server.baseURL, "--user", "rene",
                                           "--password-file", path("pw"), "--device-name", name])
            #expect(r.status == 0, "\(r.stderr)")
        }
        for name in ["desk", "phone", "lost"] {
            let put = try await Self.lockfs(["put", "--home", path(name), path("file"), "/\(name).txt"])
            #expect(put.status == 0, "\(put.stderr)")
            let sync = try await Self.lockfs(["sync", "--home", path(name)])
            #expect(sync.status == 0, "\(sync.stderr)")
        }
        let lost = try DeviceCredentials.load(from: ClientHome(directory: URL(fileURLWithPath: path("lost"))).credentialsFile)
        let revoke = try await Self.lockfs(["devices", "revoke", "--home", path("desk"), "--password-file", path("pw"), lost.device.hex])
        #expect(revoke.status == 0, "\(revoke.stderr)")
        #expect(revoke.stdout.contains("revoked lost") && revoke.stdout.contains("generation 2, for this device, phone"), "\(revoke.stdout)")
        #expect(revoke.stderr.contains("quiet did not get the new keys"), "\(revoke.stderr)")
        let desk = try DeviceCredentials.load(from: ClientHome(directory: URL(fileURLWithPath: path("desk"))).credentialsFile)
        #expect(desk.generations.count == 2)
        let sync = try await Self.lockfs(["sync", "--home", path("phone")])
        #expect(sync.status == 0, "\(sync.stderr)")
        let phone = try DeviceCredentials.load(from: ClientHome(directory: URL(fileURLWithPath: path("phone"))).credentialsFile)
        #expect(phone.generations.map(\.master.id) == desk.generations.map(\.master.id))
        let quiet = try await Self.lockfs(["sync", "--home", path("quiet"), "--timeout", "20"])
        #expect(quiet.status == 77 && quiet.stderr.contains("lockfs login"), "\(quiet.status) \(quiet.stderr)")
    }

    /// A device.json of lockfs 0.1 gets device keys at the first command, under
    /// a lock: a second command starting meanwhile waits and reads the keys
    /// the first saved, instead of making (and saving) keys of its own.
    @Test func oldCredentialsGetTheirKeysOnceUnderALock() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let dir = try makeTemporaryDirectory("cli-upgrade")
        defer { try? FileManager.default.removeItem(at: dir) }
        let home = dir.appendingPathComponent("home").path, password = dir.appendingPathComponent("pw").path
        try Data("upgrade test passphrase\n".utf8).write(to: URL(fileURLWithPath: password))
        let made = try await Self.lockfs(["init", "--home", home, "--server", server.baseURL, "--user", "otto",
                                          "--invite", try await VaultAccountTests.invite(server, "otto"), "--password-file", password])
        #expect(made.status == 0, "\(made.stderr)")
        // Back to a device.json as lockfs 0.1 wrote it: no device keys.
        let file = URL(fileURLWithPath: home + "/device.json")
        var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        json["signingSeed"] = nil
        json["boxSecret"] = nil
        try JSONSerialization.data(withJSONObject: json).write(to: file)

        let lock = open(home + "/device.json.lock", O_RDWR | O_CREAT, 0o600)
        #expect(lock >= 0 && flock(lock, LOCK_EX) == 0)
        let (process, _, _) = try spawnProcess(Self.binary, ["devices", "--home", home], environment: ["LOCKFS_HOME": nil])
        try await Task.sleep(for: .seconds(1))
        #expect(process.isRunning, "the command did not wait for the lock")
        // Meanwhile "another command" gave the device its keys.
        let mine = DeviceIdentity.generate()
        json["signingSeed"] = mine.signingSeed.withUnsafeBytes { Data($0).base64EncodedString() }
        json["boxSecret"] = mine.boxSecret.withUnsafeBytes { Data($0).base64EncodedString() }
        try JSONSerialization.data(withJSONObject: json).write(to: file)
        flock(lock, LOCK_UN)
        close(lock)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(try DeviceCredentials.load(from: file).identity?.signingPublicKey == mine.signingPublicKey)
    }

    @Test func plainHTTPToAnotherMachineIsRefusedBeforeConnecting() async throws {
        let dir = try makeTemporaryDirectory("cli-http")
        defer { try? FileManager.default.removeItem(at: dir) }
        let password = dir.appendingPathComponent("pw").path
        try Data("whatever passphrase\n".utf8).write(to: URL(fileURLWithPath: password))
        // A name that cannot resolve: had the client tried to connect, it would say it cannot reach the server.
        let refused = try await Self.lockfs(["login", "--home", dir.appendingPathComponent("h").path, "--server", "http://lockfs-test.invalid:7440",
                                             "--user", "kim", "--password-file", password])
        #expect(refused.status == 64 && refused.stderr.contains("plain HTTP to another machine") && refused.stderr.contains("--tls-cert"),
                "\(refused.status) \(refused.stderr)")
        let allowed = try await Self.lockfs(["login", "--home", dir.appendingPathComponent("h").path, "--server", "http://lockfs-test.invalid:7440",
                                             "--user", "kim", "--password-file", password, "--insecure-http"], timeout: .seconds(120))
        #expect(allowed.status != 0 && !allowed.stderr.contains("plain HTTP to another machine"), "\(allowed.stderr)")
    }

    @Test(arguments: [
        ("https://sync.example.org", false, true), ("http://127.0.0.1:7440", false, true), ("http://localhost:1", false, true),
        ("http://[::1]:7440", false, true), ("http://127.1.2.3", false, true), ("http://sync.example.org", false, false),
        ("http://192.168.1.10:7440", false, false), ("http://127.0.0.1.evil.example", false, false),
        ("http://sync.example.org", true, true), ("ftp://sync.example.org", false, false), ("sync.example.org", false, false),
    ])
    func serverURLs(url: String, insecure: Bool, accepted: Bool) {
        #expect(((try? ServerURL.check(url, insecureHTTP: insecure)) != nil) == accepted, "\(url)")
    }
}
