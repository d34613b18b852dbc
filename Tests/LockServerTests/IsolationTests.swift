import Foundation
import LockTesting
import LockCrypto
import LockServer
import LockWire
import NIOHTTP1
import Testing

/// Account isolation (docs/security.md, "Another account on the same server"):
/// account A can never read, list, append to or learn the existence of
/// account B's data. Everything runs against a real server process.
@Suite struct IsolationTests {
    /// One request of every authenticated route, with a body that would be
    /// accepted from a valid token (so a 401 can only come from the token).
    struct Route: Sendable, CustomStringConvertible {
        let method: HTTPMethod
        let path: String
        let body: [UInt8]?
        let contentType: String?
        var description: String { "\(method) \(path.prefix(40))" }
    }

    static func everyAuthenticatedRoute(vault: TestVault, chunk: SealedChunk, deviceID: String) throws -> [Route] {
        let bin = APIv1.binaryContentType
        let entry = try vault.entry(creating: "unauthorized", baseSeq: .start, baseHead: vault.genesis)
        return [
            Route(method: .GET, path: "/v1/devices", body: nil, contentType: nil),
            Route(method: .DELETE, path: "/v1/devices/\(deviceID)", body: nil, contentType: nil),
            Route(method: .POST, path: "/v1/devices/\(deviceID)/revoke",
                  body: Array(try RevokeDeviceRequest(loginSecret: vault.loginSecret).jsonData()), contentType: "application/json"),
            Route(method: .GET, path: "/v1/keyring", body: nil, contentType: nil),
            Route(method: .PUT, path: "/v1/keyring",
                  body: Array(try KeyringReplaceRequest(keyring: vault.keyring, loginSecret: Sodium.randomBytes(32), proof: .password(vault.loginSecret)).jsonData()),
                  contentType: "application/json"),
            Route(method: .GET, path: "/v1/account", body: nil, contentType: nil),
            Route(method: .POST, path: "/v1/chunks/missing", body: try ChunkIDList(ids: [chunk.id]).encoded, contentType: bin),
            Route(method: .POST, path: "/v1/chunks/batch", body: try ChunkBatch(chunks: [chunk]).encoded, contentType: bin),
            Route(method: .PUT, path: "/v1/chunks/\(chunk.id.hex)", body: chunk.bytes, contentType: bin),
            Route(method: .GET, path: "/v1/chunks/\(chunk.id.hex)", body: nil, contentType: nil),
            Route(method: .POST, path: "/v1/journal", body: AppendRequest(entry: entry, references: []).encoded, contentType: bin),
            Route(method: .GET, path: "/v1/journal?after=0", body: nil, contentType: nil),
            Route(method: .PUT, path: "/v1/checkpoint", body: try vault.checkpoint(seq: .start, head: vault.genesis), contentType: bin),
            Route(method: .GET, path: "/v1/checkpoint", body: nil, contentType: nil),
        ]
    }

    /// (a) No token, malformed tokens, a random well-formed token and a revoked
    /// device's token get 401 "unauthorized" on every authenticated route, and
    /// change nothing.
    @Test func everyAuthenticatedRouteRefusesBadTokens() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "iso-tokens")
        let owner = try await vault.register(on: server)
        let ownerDevice = try await owner.currentDeviceID()
        let stored = try vault.chunk("already stored")
        #expect(try await owner.putChunk(stored).status == 201)

        // A second device, revoked by the first: its token must be dead everywhere.
        let (revoked, revokedID) = try await vault.login(on: server, deviceName: "lost laptop")
        #expect(try await revoked.send(.GET, "/v1/account").status == 200)
        #expect(try await owner.json(.POST, "/v1/devices/\(revokedID)/revoke", RevokeDeviceRequest(loginSecret: vault.loginSecret)).status == 204)
        let before = try await owner.accountInfo()

        let wellFormed = Base64URL.encode(Sodium.randomBytes(32))
        let realToken = owner.token!
        // (header value or nil for none, what it is)
        let authorizations: [(String?, String)] = [
            (nil, "no Authorization header"),
            ("", "empty header"),
            ("Bearer", "scheme only"),
            ("Bearer ", "empty token"),
            ("Bearer not a token", "spaces"),
            ("Bearer \(String(realToken.dropLast()))", "truncated token"),
            ("Bearer \(realToken)A", "token with an extra character"),
            ("Bearer \(realToken)=", "padded token"),
            ("Bearer \(Base64URL.encode(Sodium.randomBytes(31)))", "31-byte token"),
            ("Bearer \(Data(Sodium.randomBytes(32)).base64EncodedString())+/", "base64, not base64url"),
            ("Basic \(realToken)", "another scheme"),
            ("Bearer \(wellFormed)", "random well-formed token"),
            ("Bearer \(revoked.token!)", "revoked device's token"),
        ]
        let routes = try Self.everyAuthenticatedRoute(vault: vault, chunk: stored, deviceID: ownerDevice)
        for route in routes {
            for (authorization, what) in authorizations {
                let anon = owner.with(token: nil)
                let r = try await anon.send(route.method, route.path, body: route.body, contentType: route.contentType,
                                            headers: authorization.map { [("Authorization", $0)] } ?? [])
                #expect(r.status == 401, "\(route) with \(what): HTTP \(r.status)")
                #expect(r.errorCode == "unauthorized", "\(route) with \(what): \(String(decoding: r.body, as: UTF8.self))")
                #expect(r.headers.first(name: "Content-Type")?.hasPrefix("application/json") == true, "\(route) with \(what)")
            }
        }

        // Nothing changed: the owner's device, keyring, usage, journal and checkpoint are as before.
        let after = try await owner.accountInfo()
        #expect(after.storedBytes == before.storedBytes)
        #expect(try await owner.deviceList().map(\.id) == [ownerDevice])
        #expect(try await owner.send(.GET, "/v1/keyring").body == vault.keyring.encoded)
        let page = try await owner.pull(after: 0)
        #expect(page.items.isEmpty && page.latest == .start)
        #expect(try await owner.send(.GET, "/v1/checkpoint").status == 404)
        // The old login secret still works (the PUT keyring with bad tokens did nothing).
        _ = try await vault.login(on: server, deviceName: "check")
        #expect(try await owner.healthStatus() == 200)
    }

    /// (b) With A's valid token and B's ids: nothing of B is readable, listable,
    /// writable or detectable, and B is unaffected by anything A does.
    @Test func accountCannotReachAnotherAccountsData() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vaultA = try TestVault.make(user: "iso-a")
        let vaultB = try TestVault.make(user: "iso-b")
        let a = try await vaultA.register(on: server)
        let b = try await vaultB.register(on: server)
        let bDevice = try await b.currentDeviceID()

        // B stores a chunk, two journal entries and a checkpoint.
        let secret = try vaultB.chunk("B's secret")
        #expect(try await b.putChunk(secret).status == 201)
        let batchChunk = try vaultB.chunk("B's batched chunk")
        #expect(try await b.putBatch([batchChunk]).status == 201)
        let e1 = try vaultB.entry(creating: "b1", manifest: try Manifest(chunks: [.init(id: secret.id, length: 10)]),
                                  baseSeq: .start, baseHead: vaultB.genesis)
        #expect(try await b.append(e1, references: [secret.id]).status == 201)
        let h1 = vaultB.genesis.next(seq: 1, entry: e1.encoded)
        let e2 = try vaultB.entry(creating: "b2", baseSeq: JournalSeq(1), baseHead: h1)
        #expect(try await b.append(e2, references: []).status == 201)
        let h2 = h1.next(seq: 2, entry: e2.encoded)
        let bCheckpoint = try vaultB.checkpoint(seq: JournalSeq(2), head: h2)
        #expect(try await b.send(.PUT, "/v1/checkpoint", body: bCheckpoint, contentType: APIv1.binaryContentType).status == 201)
        let bBefore = try await b.accountInfo()

        // Chunks: A cannot read or detect B's chunks.
        for id in [secret.id, batchChunk.id] {
            let get = try await a.getChunk(id)
            #expect(get.status == 404 && get.errorCode == "not_found", "A GET B's chunk: HTTP \(get.status)")
            #expect(get.body != secret.bytes)
        }
        #expect(try await a.missing([secret.id, batchChunk.id]) == [secret.id, batchChunk.id])

        // A uploads its own bytes under B's ids (single and batch): they land in A's space only.
        let mine = try vaultA.chunk("A's bytes under B's id")
        let impostor = SealedChunk(id: secret.id, bytes: mine.bytes)
        let aBefore = try await a.accountInfo()
        #expect(try await a.putChunk(impostor).status == 201)
        let mine2 = try vaultA.chunk("A's batched bytes under B's id")
        #expect(try await a.putBatch([SealedChunk(id: batchChunk.id, bytes: mine2.bytes)]).status == 201)
        let aGet = try await a.getChunk(secret.id)
        #expect(aGet.status == 200 && aGet.body == mine.bytes, "A reads its own upload back")
        #expect(try await a.getChunk(batchChunk.id).body == mine2.bytes)
        #expect(try await a.accountInfo().storedBytes == aBefore.storedBytes + Int64(mine.bytes.count + mine2.bytes.count))
        let bGet = try await b.getChunk(secret.id)
        #expect(bGet.status == 200 && bGet.body == secret.bytes, "B's copy is unchanged")
        #expect(try vaultB.keys.openChunk(SealedChunk(id: secret.id, bytes: bGet.body)) == Array("B's secret".utf8))
        #expect(try await b.getChunk(batchChunk.id).body == batchChunk.bytes)
        #expect(try await b.accountInfo().storedBytes == bBefore.storedBytes, "B's usage is unchanged")

        // Journal: A sees none of B's entries, and A's appends do not move B's seq.
        let aPage = try await a.pull(after: 0)
        #expect(aPage.items.isEmpty && aPage.latest == .start)
        #expect(try await a.pull(after: 1).items.isEmpty)
        // B's base position is not in A's chain.
        let onBsBase = try vaultA.entry(creating: "fork", baseSeq: JournalSeq(2), baseHead: h2)
        let forked = try await a.append(onBsBase, references: [])
        #expect(forked.status == 409 && forked.errorCode == "bad_base")
        // A referencing B's chunk id that A has not uploaded is "missing" for A.
        let onlyB = try vaultB.chunk("only B has this")
        #expect(try await b.putChunk(onlyB).status == 201)
        let bUsage = try await b.accountInfo().storedBytes
        let refB = try await a.append(try vaultA.entry(creating: "ref", baseSeq: .start, baseHead: vaultA.genesis), references: [onlyB.id])
        #expect(refB.status == 409 && refB.errorCode == "missing_chunks")
        #expect(refB.json["missing"] as? [String] == [onlyB.id.hex])
        // A's long poll is not woken by B's append (and returns no B entries).
        let poll = Task { try await a.pull(after: 0, wait: 1) }
        try await Task.sleep(for: .milliseconds(200))
        let e3 = try vaultB.entry(creating: "b3", baseSeq: JournalSeq(2), baseHead: h2)
        #expect(try await b.append(e3, references: []).status == 201)
        let polled = try await poll.value
        #expect(polled.items.isEmpty && polled.latest == .start)
        // A's own append is numbered in A's journal; B's latest stays 3.
        let aEntry = try vaultA.entry(creating: "a1", baseSeq: .start, baseHead: vaultA.genesis)
        let appended = try await a.append(aEntry, references: [])
        #expect(appended.status == 201 && appended.json["seq"] as? Int == 1)
        #expect(try await b.pull(after: 0).latest == JournalSeq(3))
        #expect(try await b.pull(after: 0).items.map(\.entry) == [e1, e2, e3])
        #expect(try await a.pull(after: 0).items.map(\.entry) == [aEntry])

        // Devices: A cannot list or revoke B's device; B's device keeps working.
        #expect(try await a.deviceList().map(\.id).contains(bDevice) == false)
        let revoke = try await a.json(.POST, "/v1/devices/\(bDevice)/revoke", RevokeDeviceRequest(loginSecret: vaultA.loginSecret))
        #expect(revoke.status == 404 && revoke.errorCode == "not_found")
        #expect(try await b.send(.GET, "/v1/account").status == 200)
        #expect(try await b.deviceList().map(\.id) == [bDevice])

        // Keyring and account: A gets its own; A cannot install B's keyring.
        #expect(try await a.send(.GET, "/v1/keyring").body == vaultA.keyring.encoded)
        let info = try await a.accountInfo()
        #expect(info.user == "iso-a" && info.vault == vaultA.keys.vaultID.hex)
        let steal = try await a.json(.PUT, "/v1/keyring", KeyringReplaceRequest(keyring: vaultB.keyring, loginSecret: vaultA.loginSecret, proof: .password(vaultA.loginSecret)))
        #expect(steal.status == 400 && steal.errorCode == "bad_request")
        #expect(try await a.send(.GET, "/v1/keyring").body == vaultA.keyring.encoded)
        #expect(try await b.send(.GET, "/v1/keyring").body == vaultB.keyring.encoded)

        // Checkpoints: B's is not visible to A, and A cannot store B's.
        let aCheckpoint = try await a.send(.GET, "/v1/checkpoint")
        #expect(aCheckpoint.status == 404 && aCheckpoint.errorCode == "not_found")
        let put = try await a.send(.PUT, "/v1/checkpoint", body: bCheckpoint, contentType: APIv1.binaryContentType)
        #expect(put.status == 409 && put.errorCode == "bad_checkpoint")
        #expect(try await a.send(.GET, "/v1/checkpoint").status == 404)
        #expect(try await b.send(.GET, "/v1/checkpoint").body == bCheckpoint)
        #expect(try await b.accountInfo().storedBytes == bUsage + Int64(e3.encoded.count), "nothing A did changed B's usage (B's own entry counts)")
    }

    /// (c) Pre-login answers every name alike, and login failures are the same
    /// for an unknown name and a wrong secret.
    @Test func preLoginAndLoginDoNotRevealWhichAccountsExist() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "iso-exists")
        _ = try await vault.register(on: server)
        let anon = APIClient(baseURL: server.baseURL)

        func prelogin(_ name: String) async throws -> (Int, String, KDFParameters?) {
            let r = try await anon.send(.GET, "/v1/accounts/\(name)/prelogin")
            let body = try? PreLoginResponse.decodeStrictly(Data(r.body))
            return (r.status, r.headers.first(name: "Content-Type") ?? "", try body?.parameters())
        }
        let (existingStatus, existingType, existing) = try await prelogin("iso-exists")
        #expect(existingStatus == 200 && existingType.hasPrefix("application/json"))
        #expect(existing == vault.parameters)

        let (unknownStatus, unknownType, unknown) = try await prelogin("iso-nobody")
        #expect(unknownStatus == 200 && unknownType.hasPrefix("application/json"))
        let fake = try #require(unknown, "the unknown name's parameters must decode and pass the client's checks")
        #expect(fake.salt.count == 16)
        #expect(fake.opsLimit >= KDFParameters.minimumOpsLimit && fake.memLimit >= KDFParameters.minimumMemLimit)
        // Stable: the same answer twice, and different names get different salts.
        #expect(try await prelogin("iso-nobody").2 == fake)
        #expect(try await prelogin("iso-nobody-2").2?.salt != fake.salt)
        // Stable across a restart too (the fake salt is keyed by a stored secret).
        try await server.restart()
        let anon2 = APIClient(baseURL: server.baseURL)
        let again = try PreLoginResponse.decodeStrictly(Data(try await anon2.send(.GET, "/v1/accounts/iso-nobody/prelogin").body))
        #expect(try again.parameters() == fake)

        // Login: unknown name and wrong secret look the same.
        let wrongSecret = try await anon2.json(.POST, "/v1/login",
                                               LoginRequest(user: "iso-exists", loginSecret: Sodium.randomBytes(32), deviceName: "x", device: testDeviceKeys))
        let unknownName = try await anon2.json(.POST, "/v1/login",
                                               LoginRequest(user: "iso-nobody", loginSecret: Sodium.randomBytes(32), deviceName: "x", device: testDeviceKeys))
        #expect(wrongSecret.status == 403 && wrongSecret.errorCode == "forbidden")
        #expect(unknownName.status == wrongSecret.status && unknownName.errorCode == wrongSecret.errorCode)
        #expect(unknownName.json["message"] as? String == wrongSecret.json["message"] as? String)
        #expect(unknownName.headers.first(name: "Retry-After") == nil)
    }

    /// Registering with a made-up invite must not tell whether the name is
    /// taken: otherwise anyone can enumerate accounts, which pre-login and
    /// login take care to hide.
    @Test func registerWithABogusInviteDoesNotRevealWhichAccountsExist() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "iso-taken")
        _ = try await vault.register(on: server)
        let probe = try TestVault.make(user: "iso-probe")
        let anon = APIClient(baseURL: server.baseURL)
        let bogus = "0000-0000-0000-0000"
        let taken = try await anon.json(.POST, "/v1/register", RegisterRequest(
            user: "iso-taken", invite: bogus, loginSecret: probe.loginSecret, keyring: probe.keyring, deviceName: "probe", recoveryProof: probe.recoveryProof, device: testDeviceKeys))
        let free = try await anon.json(.POST, "/v1/register", RegisterRequest(
            user: "iso-free", invite: bogus, loginSecret: probe.loginSecret, keyring: probe.keyring, deviceName: "probe", recoveryProof: probe.recoveryProof, device: testDeviceKeys))
        #expect(free.status == 403 && free.errorCode == "forbidden")
        #expect(taken.status == free.status && taken.errorCode == free.errorCode,
                "existing name with a bogus invite: HTTP \(taken.status) \(taken.errorCode ?? "-"), unknown name: HTTP \(free.status) \(free.errorCode ?? "-")")
    }

    /// Two accounts whose keyrings claim the same vault id must not share
    /// blobs: the vault id is chosen by the client, and it is not secret
    /// (every device of the vault knows it).
    @Test func aClaimedVaultIDDoesNotShareBlobs() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vaultB = try TestVault.make(user: "iso-victim")
        let b = try await vaultB.register(on: server)
        let secret = try vaultB.chunk("the victim's chunk")
        #expect(try await b.putChunk(secret).status == 201)

        // The attacker's keyring: its own slots, but B's vault id.
        let attacker = try TestVault.make(user: "iso-attacker")
        let claimed = Keyring(vaultID: vaultB.keys.vaultID, parameters: attacker.parameters,
                              passwordSlot: attacker.keyring.passwordSlot, recoverySlot: attacker.keyring.recoverySlot)
        let invite = try await server.inviteCode(for: "iso-attacker")
        let r = try await APIClient(baseURL: server.baseURL).json(.POST, "/v1/register", RegisterRequest(
            user: "iso-attacker", invite: invite, loginSecret: attacker.loginSecret, keyring: claimed, deviceName: "evil", recoveryProof: attacker.recoveryProof, device: testDeviceKeys))
        if r.status != 201 {
            // Refusing a vault id that is in use is one correct answer.
            #expect([400, 409].contains(r.status), "register with a used vault id: HTTP \(r.status)")
            return
        }
        let a = APIClient(baseURL: server.baseURL, token: try #require(r.json["token"] as? String))

        // A uploads its own bytes under B's chunk id, then reads "its" chunk back.
        let junk = try attacker.chunk("attacker's bytes")
        #expect(try await a.putChunk(SealedChunk(id: secret.id, bytes: junk.bytes)).status == 201)
        let read = try await a.getChunk(secret.id)
        #expect(read.body != secret.bytes, "the attacker read the victim's chunk through a claimed vault id")
        #expect(read.body == junk.bytes)

        // A uploads first under an id B will use: B's upload must still store B's bytes.
        let later = try vaultB.chunk("the victim's later chunk")
        #expect(try await a.putChunk(SealedChunk(id: later.id, bytes: junk.bytes)).status == 201)
        #expect(try await b.putChunk(later).status == 201)
        #expect(try await b.getChunk(later.id).body == later.bytes, "the victim's upload was silently replaced by the attacker's bytes")

        // Removing the attacker's account must not delete the victim's blobs.
        #expect(try await server.admin(["user", "remove", "iso-attacker", "--yes"]).status == 0)
        let survived = try await b.getChunk(secret.id)
        #expect(survived.status == 200 && survived.body == secret.bytes, "removing another account deleted the victim's chunk: HTTP \(survived.status)")
    }
}
