import Foundation
import LockTesting
import LockCrypto
import LockServer
import LockWire
import Testing

/// The admin commands (`lockfs-server user …`, `device …`) run while the
/// server runs, on the same data directory, and take effect at once.
@Suite struct AdminTests {
    static let inviteShape = #"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$"#

    static func register(_ vault: TestVault, invite: String, on server: ServerProcess, device: String = "laptop") async throws -> APIResponse {
        try await APIClient(baseURL: server.baseURL).json(.POST, "/v1/register", RegisterRequest(
            user: vault.user, invite: invite, loginSecret: vault.loginSecret, keyring: vault.keyring, deviceName: device, recoveryProof: vault.recoveryProof, device: testDeviceKeys))
    }

    /// The line of `user list` for `name`, split into columns.
    static func listed(_ output: String, _ name: String) -> [String]? {
        output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }.first { $0.first == name }
    }

    @Test func userAddPrintsAnInviteThatRegistersOnce() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let (status, output) = try await server.admin(["user", "add", "adm-carol"])
        #expect(status == 0, "user add: \(output)")
        let code = try #require(output.split(separator: "\n").last.map(String.init))
        #expect(code.range(of: Self.inviteShape, options: .regularExpression) != nil, "the last line is the invite: \(code.debugDescription)")
        #expect(output.contains("adm-carol"))

        let carol = try TestVault.make(user: "adm-carol")
        let first = try await Self.register(carol, invite: code, on: server)
        #expect(first.status == 201, "register with the invite: HTTP \(first.status)")
        let token = try #require(first.json["token"] as? String)
        #expect(try await APIClient(baseURL: server.baseURL, token: token).accountInfo().user == "adm-carol")
        let second = try await Self.register(try TestVault.make(user: "adm-carol"), invite: code, on: server)
        #expect([403, 409].contains(second.status), "the invite works once: HTTP \(second.status)")
        // The first registration holds: its secret logs in.
        _ = try await carol.login(on: server)

        // Inviting an existing account is an error.
        let again = try await server.admin(["user", "add", "adm-carol"])
        #expect(again.status != 0 && again.output.contains("exists already"), "user add for an existing account: \(again.output)")

        // A new invite replaces the previous one.
        let old = try await server.inviteCode(for: "adm-dave")
        let new = try await server.inviteCode(for: "adm-dave")
        #expect(old != new)
        let dave = try TestVault.make(user: "adm-dave")
        let withOld = try await Self.register(dave, invite: old, on: server)
        #expect(withOld.status == 403 && withOld.errorCode == "forbidden", "the replaced invite: HTTP \(withOld.status)")
        #expect(try await Self.register(dave, invite: new, on: server).status == 201)
        #expect(server.process.isRunning)
    }

    @Test func userAndDeviceListsAndRevoke() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let erin = try TestVault.make(user: "adm-erin")
        let first = try await erin.register(on: server, deviceName: "desktop")
        let firstID = try await first.currentDeviceID()
        let (second, secondID) = try await erin.login(on: server, deviceName: "laptop")
        let (third, thirdID) = try await erin.login(on: server, deviceName: "phone")
        let other = try TestVault.make(user: "adm-frank")
        let frank = try await other.register(on: server)
        #expect(try await frank.append(try other.entry(creating: "f", baseSeq: .start, baseHead: other.genesis), references: []).status == 201)

        // user list: every account with its device count.
        let list = try await server.admin(["user", "list"])
        #expect(list.status == 0)
        #expect(list.output.contains("DEVICES"))
        #expect(Self.listed(list.output, "adm-erin")?[1] == "3", "user list: \(list.output)")
        #expect(Self.listed(list.output, "adm-frank")?[1] == "1", "user list: \(list.output)")
        #expect(Self.listed(list.output, "adm-frank")?[2] == "1", "frank's entries: \(list.output)")

        // device list: the ids and names of erin's devices only.
        let devices = try await server.admin(["device", "list", "adm-erin"])
        #expect(devices.status == 0)
        for (id, name) in [(firstID, "desktop"), (secondID, "laptop"), (thirdID, "phone")] {
            let line = devices.output.split(separator: "\n").first { $0.hasPrefix(id) }
            #expect(line?.contains(name) == true, "device list shows \(id) \(name): \(devices.output)")
        }
        #expect(!devices.output.contains(try await frank.currentDeviceID()))

        // Revoke by full id: that token gets 401 at once, the others keep working.
        #expect(try await second.send(.GET, "/v1/account").status == 200)
        let revoke = try await server.admin(["device", "revoke", "adm-erin", secondID])
        #expect(revoke.status == 0 && revoke.output.contains("revoked"), "device revoke: \(revoke.output)")
        let dead = try await second.send(.GET, "/v1/account")
        #expect(dead.status == 401 && dead.errorCode == "unauthorized", "the revoked token: HTTP \(dead.status)")
        #expect(try await second.send(.GET, "/v1/journal?after=0").status == 401)
        #expect(try await first.send(.GET, "/v1/account").status == 200)
        #expect(try await third.send(.GET, "/v1/account").status == 200)
        #expect(server.process.isRunning)
        #expect(try await first.healthStatus() == 200)
        #expect(try await first.deviceList().map(\.id).sorted() == [firstID, thirdID].sorted())
        let afterRevoke = try await server.admin(["device", "list", "adm-erin"])
        #expect(!afterRevoke.output.contains(secondID) && afterRevoke.output.contains(thirdID))
        #expect(Self.listed(try await server.admin(["user", "list"]).output, "adm-erin")?[1] == "2")
        // Revoking it again: no such (active) device.
        let twice = try await server.admin(["device", "revoke", "adm-erin", secondID])
        #expect(twice.status != 0 && twice.output.contains("has no device"), "revoke twice: \(twice.output)")

        // Revoke by a unique prefix, typed in upper case.
        let prefixLength = (4...32).first { n in firstID.prefix(n) != thirdID.prefix(n) }!
        let prefix = String(thirdID.prefix(max(prefixLength, 6))).uppercased()
        let byPrefix = try await server.admin(["device", "revoke", "adm-erin", prefix])
        #expect(byPrefix.status == 0 && byPrefix.output.contains(thirdID), "revoke by prefix \(prefix): \(byPrefix.output)")
        #expect(try await third.send(.GET, "/v1/account").status == 401)
        #expect(try await first.send(.GET, "/v1/account").status == 200)
        // Frank is untouched by all of it.
        #expect(try await frank.send(.GET, "/v1/account").status == 200)
        #expect(server.process.isRunning)
    }

    @Test func userRemoveDeletesTheAccountWhileTheServerRuns() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let gina = try TestVault.make(user: "adm-gina")
        let client = try await gina.register(on: server)
        let (phone, _) = try await gina.login(on: server, deviceName: "phone")
        let chunk = try gina.chunk("gina's data")
        #expect(try await client.putChunk(chunk).status == 201)
        #expect(try await client.append(try gina.entry(creating: "g", manifest: try Manifest(chunks: [.init(id: chunk.id, length: 11)]),
                                                        baseSeq: .start, baseHead: gina.genesis), references: [chunk.id]).status == 201)
        let bystander = try TestVault.make(user: "adm-henry")
        let henry = try await bystander.register(on: server)
        let henryChunk = try bystander.chunk("henry's data")
        #expect(try await henry.putChunk(henryChunk).status == 201)
        let blobDirectory = server.dataDirectory.appendingPathComponent("blobs/\(gina.keys.vaultID.hex)")
        #expect(FileManager.default.fileExists(atPath: blobDirectory.path))

        // Without --yes and without a terminal it refuses, and nothing is removed.
        let refused = try await server.admin(["user", "remove", "adm-gina"])
        #expect(refused.status != 0 && refused.output.contains("--yes"), "remove without --yes: \(refused.output)")
        #expect(try await client.send(.GET, "/v1/account").status == 200)

        let removed = try await server.admin(["user", "remove", "adm-gina", "--yes"])
        #expect(removed.status == 0 && removed.output.contains("removed adm-gina"), "user remove: \(removed.output)")
        for c in [client, phone] {
            let account = try await c.send(.GET, "/v1/account")
            #expect(account.status == 401 && account.errorCode == "unauthorized", "a removed account's token: HTTP \(account.status)")
            #expect(try await c.getChunk(chunk.id).status == 401)
            #expect(try await c.send(.GET, "/v1/journal?after=0").status == 401)
        }
        #expect(!FileManager.default.fileExists(atPath: blobDirectory.path), "the account's blobs are deleted")
        #expect(Self.listed(try await server.admin(["user", "list"]).output, "adm-gina") == nil)
        let login = try await APIClient(baseURL: server.baseURL).json(.POST, "/v1/login",
                                                                     LoginRequest(user: "adm-gina", loginSecret: gina.loginSecret, deviceName: "x", device: testDeviceKeys))
        #expect(login.status == 403 && login.errorCode == "forbidden")
        // The other account is untouched.
        #expect(try await henry.getChunk(henryChunk.id).body == henryChunk.bytes)
        #expect(server.process.isRunning)
        #expect(try await henry.healthStatus() == 200)

        // The name can be invited again and starts empty.
        let reborn = try TestVault.make(user: "adm-gina")
        let fresh = try await reborn.register(on: server)
        #expect(try await fresh.accountInfo().storedBytes == 0)
        #expect(try await fresh.pull(after: 0).latest == .start)
        #expect(try await fresh.getChunk(chunk.id).status == 404)
        #expect(try await fresh.send(.GET, "/v1/keyring").body == reborn.keyring.encoded)
        // The old tokens stay dead for the new account.
        #expect(try await client.send(.GET, "/v1/account").status == 401)
    }

    @Test func adminErrorsExitNonZeroWithAClearMessage() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let ivy = try TestVault.make(user: "adm-ivy")
        let client = try await ivy.register(on: server)
        let realID = try await client.currentDeviceID()

        // Two devices whose ids share the prefix "abcd", enrolled through the store
        // the admin commands use (a real login cannot choose its device id).
        let store = try SQLiteMetadataStore(path: server.dataDirectory.appendingPathComponent("metadata.sqlite").path)
        let account = try #require(try await store.account(named: "adm-ivy"))
        let twinIDs = try (0..<2).map { _ in try DeviceID(bytes: [0xab, 0xcd, 0xef] + Sodium.randomBytes(13)) }
        for (i, id) in twinIDs.enumerated() {
            try await store.addDevice(NewDevice(id: id, name: "twin \(i)", tokenHash: Sodium.randomBytes(32)), account: account.id, now: Date())
        }

        let cases: [([String], String)] = [
            (["device", "list", "adm-nobody"], "no account named adm-nobody"),
            (["device", "revoke", "adm-nobody", realID], "no account named adm-nobody"),
            (["user", "remove", "adm-nobody", "--yes"], "no account named adm-nobody"),
            (["device", "revoke", "adm-ivy", "abcd"], "matches several devices"),
            (["device", "revoke", "adm-ivy", "ABCDEF"], "matches several devices"),
            (["device", "revoke", "adm-ivy", DeviceID.random().hex], "has no device"),
            (["device", "revoke", "adm-ivy", "zz"], "has no device"),
            (["user", "add", "Adm-Upper"], "user names are"),
            (["user", "add", "adm ivy"], "user names are"),
            (["user", "add", String(repeating: "a", count: 65)], "user names are"),
            (["user", "add", "adm-ivy"], "exists already"),
        ]
        for (args, message) in cases {
            let (status, output) = try await server.admin(args)
            #expect(status != 0, "\(args.joined(separator: " ")) exited 0: \(output)")
            #expect(output.contains(message), "\(args.joined(separator: " ")): expected “\(message)” in: \(output)")
        }
        // Nothing was revoked or removed by the failures; a longer prefix picks one twin.
        #expect(try await client.deviceList().count == 3)
        let one = try await server.admin(["device", "revoke", "adm-ivy", String(twinIDs[0].hex.prefix(8))])
        if twinIDs[0].hex.prefix(8) != twinIDs[1].hex.prefix(8) {
            #expect(one.status == 0 && one.output.contains(twinIDs[0].hex), "revoke by a unique prefix: \(one.output)")
            #expect(try await client.deviceList().map(\.id).sorted() == [realID, twinIDs[1].hex].sorted())
        }
        #expect(try await client.send(.GET, "/v1/account").status == 200)
        #expect(server.process.isRunning)
        #expect(try await client.healthStatus() == 200)
    }
}
