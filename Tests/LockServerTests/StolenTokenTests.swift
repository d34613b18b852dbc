import Foundation
import LockCrypto
@testable import LockServer
import LockTesting
import LockWire
import Testing

/// A thief who holds one device token and nothing else (a proxy log, one
/// read of device.json's token) plays against a real server over HTTP
/// (issue 13, point 1). Before the proofs, each of these attacks worked.
@Suite struct StolenTokenTests {
    /// The owner's account with two devices; the thief copied the phone's token.
    struct Scene {
        let server: ServerProcess
        let vault: TestVault
        let laptop: APIClient
        let phone: APIClient
        let laptopID: String
        let phoneID: String

        static func make(_ user: String, arguments: [String] = []) async throws -> Scene {
            let server = try await ServerProcess.start(arguments: arguments)
            let vault = try TestVault.make(user: user)
            let laptop = try await vault.register(on: server, deviceName: "laptop")
            let login = try await APIClient(baseURL: server.baseURL).json(.POST, "/v1/login",
                                                                          LoginRequest(user: user, loginSecret: vault.loginSecret, deviceName: "phone", device: testDeviceKeys))
            guard login.status == 200, let token = login.json["token"] as? String, let phoneID = login.json["device"] as? String else {
                throw TestFailure("login: HTTP \(login.status)")
            }
            let laptopID = try await laptop.deviceList().first { $0.current }!.id
            return Scene(server: server, vault: vault, laptop: laptop, phone: APIClient(baseURL: server.baseURL, token: token),
                         laptopID: laptopID, phoneID: phoneID)
        }

        func ownerCanLogIn() async throws -> Bool {
            let r = try await APIClient(baseURL: server.baseURL).json(.POST, "/v1/login",
                                                                      LoginRequest(user: vault.user, loginSecret: vault.loginSecret, deviceName: "check", device: testDeviceKeys))
            return r.status == 200
        }
    }

    @Test func aTokenAloneCannotReplaceTheKeyringOrTheLoginSecret() async throws {
        let s = try await Scene.make("thief-keyring")
        defer { s.server.stop() }
        let mine = Sodium.randomBytes(32)
        // The attack as it was: the unchanged keyring with a login secret of the thief's choice.
        let bare = try await s.phone.send(.PUT, "/v1/keyring", body: Array(#"{"keyring":"\#(Data(s.vault.keyring.encoded).base64EncodedString())","loginSecret":"\#(Data(mine).base64EncodedString())"}"#.utf8),
                                          contentType: "application/json")
        #expect(bare.status == 409 && bare.errorCode == "upgrade_required", "\(bare.status) \(bare.json)")
        // Guessing the proof: a wrong current secret, a made-up recovery proof.
        for proof in [OwnerProof.password(Sodium.randomBytes(32)), .recovery(Sodium.randomBytes(32))] {
            let r = try await s.phone.json(.PUT, "/v1/keyring", KeyringReplaceRequest(keyring: s.vault.keyring, loginSecret: mine, proof: proof))
            #expect(r.status == 403 && r.errorCode == "forbidden", "\(proof): \(r.status) \(r.json)")
        }
        // Nothing changed: the owner's password logs in, the thief's secret does not.
        #expect(try await s.ownerCanLogIn())
        let thief = try await APIClient(baseURL: s.server.baseURL).json(.POST, "/v1/login",
                                                                        LoginRequest(user: s.vault.user, loginSecret: mine, deviceName: "thief", device: testDeviceKeys))
        #expect(thief.status == 403)
        #expect(try await s.laptop.deviceList().count == 3)

        // The owner, with the current password, still can.
        let new = Sodium.randomBytes(32)
        let ok = try await s.laptop.json(.PUT, "/v1/keyring", KeyringReplaceRequest(keyring: s.vault.keyring, loginSecret: new,
                                                                                   proof: .password(s.vault.loginSecret)))
        #expect(ok.status == 204, "\(ok.json)")
        #expect(try await s.ownerCanLogIn() == false)
        // A password change signs nobody out.
        #expect(try await s.phone.send(.GET, "/v1/account").status == 200)
    }

    @Test func aTokenAloneCannotRevokeAnotherDevice() async throws {
        let s = try await Scene.make("thief-revoke")
        defer { s.server.stop() }
        // The attack as it was: DELETE the owner's laptop with the phone's token.
        let delete = try await s.phone.send(.DELETE, "/v1/devices/\(s.laptopID)")
        #expect(delete.status == 409 && delete.errorCode == "proof_required", "\(delete.status) \(delete.json)")
        let guess = try await s.phone.json(.POST, "/v1/devices/\(s.laptopID)/revoke", RevokeDeviceRequest(loginSecret: Sodium.randomBytes(32)))
        #expect(guess.status == 403, "\(guess.status)")
        #expect(try await s.laptop.send(.GET, "/v1/account").status == 200)
        #expect(Set(try await s.laptop.deviceList().map(\.id)) == [s.laptopID, s.phoneID])

        // A device still logs itself out with its token alone.
        #expect(try await s.phone.send(.DELETE, "/v1/devices/\(s.phoneID)").status == 204)
        #expect(try await s.phone.send(.GET, "/v1/account").status == 401)

        // The owner revokes another device with the password.
        let third = try await APIClient(baseURL: s.server.baseURL).json(.POST, "/v1/login",
                                                                        LoginRequest(user: s.vault.user, loginSecret: s.vault.loginSecret, deviceName: "tablet", device: testDeviceKeys))
        let tabletID = try #require(third.json["device"] as? String)
        let revoke = try await s.laptop.json(.POST, "/v1/devices/\(tabletID)/revoke", RevokeDeviceRequest(loginSecret: s.vault.loginSecret))
        #expect(revoke.status == 204, "\(revoke.json)")
        #expect(try await s.laptop.deviceList().map(\.id) == [s.laptopID])
    }

    @Test func proofGuessesAreRateLimitedPerDevice() async throws {
        let s = try await Scene.make("thief-guess", arguments: ["--login-refill", "3600"])
        defer { s.server.stop() }
        var statuses: [Int] = []
        for _ in 0..<12 {
            let r = try await s.phone.json(.POST, "/v1/devices/\(s.laptopID)/revoke", RevokeDeviceRequest(loginSecret: Sodium.randomBytes(32)))
            statuses.append(r.status)
        }
        #expect(statuses.prefix(10).allSatisfy { $0 == 403 } && statuses.suffix(2).allSatisfy { $0 == 429 }, "\(statuses)")
        // The thief's device is stopped, even with the right proof …
        let thief = try await s.phone.json(.POST, "/v1/devices/\(s.laptopID)/revoke", RevokeDeviceRequest(loginSecret: s.vault.loginSecret))
        #expect(thief.status == 429)
        // … but it cannot empty the owner's bucket: the laptop revokes the phone.
        let owner = try await s.laptop.json(.POST, "/v1/devices/\(s.phoneID)/revoke", RevokeDeviceRequest(loginSecret: s.vault.loginSecret))
        #expect(owner.status == 204, "\(owner.status) \(owner.json)")
    }

    @Test func aPhishedPasswordCannotReplaceTheRecoveryKey() async throws {
        let s = try await Scene.make("thief-phish")
        defer { s.server.stop() }
        let r = try await s.phone.json(.PUT, "/v1/keyring", KeyringReplaceRequest(
            keyring: s.vault.keyring, loginSecret: s.vault.loginSecret, proof: .password(s.vault.loginSecret),
            setRecoveryProof: Sodium.randomBytes(32)))
        #expect(r.status == 403, "\(r.status) \(r.json)")
        // The owner's recovery key still enrols a machine.
        let rescue = try await APIClient(baseURL: s.server.baseURL).json(.POST, "/v1/recover", RecoverRequest(
            user: s.vault.user, recoveryProof: s.vault.recoveryProof, deviceName: "rescue", device: testDeviceKeys))
        #expect(rescue.status == 200)
    }

    @Test func theRecoveryKeyEnrolsAMachineAndSignsTheOthersOut() async throws {
        let s = try await Scene.make("recovering")
        defer { s.server.stop() }
        let anonymous = APIClient(baseURL: s.server.baseURL)
        let wrong = try await anonymous.json(.POST, "/v1/recover", RecoverRequest(user: s.vault.user, recoveryProof: Sodium.randomBytes(32), deviceName: "new", device: testDeviceKeys))
        let unknown = try await anonymous.json(.POST, "/v1/recover", RecoverRequest(user: "nobody-here", recoveryProof: s.vault.recoveryProof, deviceName: "new", device: testDeviceKeys))
        #expect(wrong.status == 403 && unknown.status == 403 && wrong.json["message"] as? String == unknown.json["message"] as? String)

        let enrolled = try await anonymous.json(.POST, "/v1/recover", RecoverRequest(user: s.vault.user, recoveryProof: s.vault.recoveryProof, deviceName: "laptop", device: testDeviceKeys))
        #expect(enrolled.status == 200, "\(enrolled.json)")
        let rescuer = APIClient(baseURL: s.server.baseURL, token: try #require(enrolled.json["token"] as? String))
        // A repeated name gets a suffix.
        #expect(try await rescuer.deviceList().first { $0.current }?.name == "laptop (2)")
        #expect(try await rescuer.send(.GET, "/v1/keyring").body == s.vault.keyring.encoded)

        let newSecret = Sodium.randomBytes(32)
        let replaced = try await rescuer.json(.PUT, "/v1/keyring", KeyringReplaceRequest(keyring: s.vault.keyring, loginSecret: newSecret,
                                                                                        proof: .recovery(s.vault.recoveryProof)))
        #expect(replaced.status == 204, "\(replaced.json)")
        #expect(try await s.laptop.send(.GET, "/v1/account").status == 401)
        #expect(try await s.phone.send(.GET, "/v1/account").status == 401)
        #expect(try await rescuer.deviceList().count == 1)
        #expect(try await s.ownerCanLogIn() == false)
        let relogin = try await anonymous.json(.POST, "/v1/login", LoginRequest(user: s.vault.user, loginSecret: newSecret, deviceName: "again", device: testDeviceKeys))
        #expect(relogin.status == 200)
    }

    @Test func anOldClientIsToldToUpgrade() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "old-client")
        let invite = try await server.admin(["user", "add", vault.user]).output.split(separator: "\n").last.map(String.init) ?? ""
        // A register body as lockfs 0.1 sent it: no recovery proof.
        let body = #"{"user":"old-client","invite":"\#(invite)","loginSecret":"\#(Data(vault.loginSecret).base64EncodedString())","keyring":"\#(Data(vault.keyring.encoded).base64EncodedString())","deviceName":"old"}"#
        let r = try await APIClient(baseURL: server.baseURL).send(.POST, "/v1/register", body: Array(body.utf8), contentType: "application/json")
        #expect(r.status == 409 && r.errorCode == "upgrade_required" && (r.json["message"] as? String ?? "").contains("upgrade lockfs"))
        // A login as lockfs 0.1 sent it (no device keys), with the right password.
        _ = try await vault.register(on: server)
        let login = try await APIClient(baseURL: server.baseURL).json(.POST, "/v1/login",
                                                                      LoginRequest(user: vault.user, loginSecret: vault.loginSecret, deviceName: "old"))
        #expect(login.status == 409 && login.errorCode == "upgrade_required", "\(login.status) \(login.json)")
    }

    @Test(arguments: [
        ("laptop", true), ("Anna’s phone 📱", true), ("  padded", false), ("trailing ", false),
        ("evil\u{202E}txt.exe", false), ("zero\u{200B}width", false), ("tab\there", false), ("private\u{E000}", false),
        (String(repeating: "x", count: 129), false), ("", false),
    ])
    func deviceNames(name: String, valid: Bool) {
        #expect((DeviceName.problem(name) == nil) == valid, "\(name.unicodeScalars.map { String($0.value, radix: 16) })")
    }

    @Test func fakePreLoginParametersChangeLikeRealOnes() throws {
        // A fixed deployment secret: the outcome is deterministic.
        let secret = [UInt8](repeating: 7, count: 32)
        let day: TimeInterval = 86_400
        var changed = 0, unchanged = 0
        for n in 0..<200 {
            var values: Set<[UInt8]> = []
            for d in stride(from: 0, to: 720, by: 5) {
                values.insert(try ServerAPI.fakeParameters(user: "nobody-\(n)", secret: secret, now: Date(timeIntervalSince1970: Double(d) * day)).salt)
            }
            if values.count > 1 { changed += 1 } else { unchanged += 1 }
            #expect(values.count <= 8, "nobody-\(n): \(values.count) salts in 720 days")
        }
        // Some fake names change over two years and some do not, as real ones.
        #expect(changed > 100 && unchanged > 5, "\(changed) changed, \(unchanged) did not")
        // Stable within a day, different per name, and per deployment secret.
        let now = Date(timeIntervalSince1970: 1_780_000_000)   // 20:26 UTC: a minute later is the same day
        #expect(try ServerAPI.fakeParameters(user: "a", secret: secret, now: now) == ServerAPI.fakeParameters(user: "a", secret: secret, now: now + 60))
        #expect(try ServerAPI.fakeParameters(user: "a", secret: secret, now: now) != ServerAPI.fakeParameters(user: "b", secret: secret, now: now))
        #expect(try ServerAPI.fakeParameters(user: "a", secret: secret, now: now) != ServerAPI.fakeParameters(user: "a", secret: Sodium.randomBytes(32), now: now))
    }
}
