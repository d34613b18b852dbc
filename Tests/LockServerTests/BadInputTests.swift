import Foundation
import LockTesting
import LockCrypto
import LockWire
import NIOHTTP1
import Testing

/// Malformed, oversized and hostile input: each gets a clear 4xx (or, for
/// garbage on the socket, a closed connection), changes nothing, and the
/// server keeps serving. Everything runs against a real server process.
@Suite struct BadInputTests {
    /// What an account looks like from outside; compared before and after bad input.
    struct Snapshot: Equatable, CustomStringConvertible {
        let storedBytes: Int64
        let latest: UInt64
        let entries: [JournalEntry]
        let missing: [ChunkID]
        let devices: [String]
        let keyring: [UInt8]
        let checkpointStatus: Int
        var description: String {
            "stored \(storedBytes), latest \(latest), \(entries.count) entries, missing \(missing.count), \(devices.count) devices, checkpoint \(checkpointStatus)"
        }
    }

    static func snapshot(_ client: APIClient, probes: [ChunkID]) async throws -> Snapshot {
        let page = try await client.pull(after: 0)
        return Snapshot(storedBytes: try await client.accountInfo().storedBytes, latest: page.latest.rawValue,
                        entries: page.items.map(\.entry), missing: try await client.missing(probes),
                        devices: try await client.deviceList().map(\.id).sorted(),
                        keyring: try await client.send(.GET, "/v1/keyring").body,
                        checkpointStatus: try await client.send(.GET, "/v1/checkpoint").status)
    }

    /// A server with one account holding one chunk and one entry.
    struct Fixture {
        let server: ServerProcess
        let vault: TestVault
        let client: APIClient
        let stored: SealedChunk
        let head: ChainHead

        static func make(user: String, arguments: [String] = []) async throws -> Fixture {
            let server = try await ServerProcess.start(arguments: arguments)
            let vault = try TestVault.make(user: user)
            let client = try await vault.register(on: server)
            let stored = try vault.chunk("stored before the bad input")
            guard try await client.putChunk(stored).status == 201 else { throw TestFailure("fixture: upload failed") }
            let e1 = try vault.entry(creating: "first", manifest: try Manifest(chunks: [.init(id: stored.id, length: 27)]),
                                     baseSeq: .start, baseHead: vault.genesis)
            guard try await client.append(e1, references: [stored.id]).status == 201 else { throw TestFailure("fixture: append failed") }
            return Fixture(server: server, vault: vault, client: client, stored: stored, head: vault.genesis.next(seq: 1, entry: e1.encoded))
        }

        /// Health is 200 and the account is exactly as `before`.
        func expectServingAndUnchanged(_ before: Snapshot, probes: [ChunkID], _ what: String,
                                       sourceLocation: SourceLocation = #_sourceLocation) async throws {
            #expect(server.process.isRunning, "\(what): the server process died", sourceLocation: sourceLocation)
            #expect(try await client.healthStatus() == 200, "\(what): health", sourceLocation: sourceLocation)
            let after = try await BadInputTests.snapshot(client, probes: probes)
            #expect(after == before, "\(what): state changed from \(before) to \(after)", sourceLocation: sourceLocation)
        }
    }

    static func text(_ r: APIResponse) -> String { "HTTP \(r.status) \(String(decoding: r.body.prefix(300), as: UTF8.self))" }

    // MARK: Chunks

    @Test func malformedIDsInThePath() async throws {
        let f = try await Fixture.make(user: "bad-ids")
        defer { f.server.stop() }
        let before = try await Self.snapshot(f.client, probes: [f.stored.id])
        let hex = f.stored.id.hex
        let badIDs = [
            "abc",                                   // short
            String(hex.dropLast()),                  // 63 digits
            hex + "0",                               // 65 digits
            String(repeating: "z", count: 64),       // not hex
            "g" + hex.dropFirst(),                   // one non-hex digit
            String(hex.prefix(32)) + "%20" + String(hex.dropFirst(35)),  // a space in it
            String(repeating: "0", count: 128),      // far too long
        ]
        for id in badIDs {
            let get = try await f.client.send(.GET, "/v1/chunks/\(id)")
            #expect(get.status == 400 && get.errorCode == "bad_request", "GET /v1/chunks/\(id): \(Self.text(get))")
            let put = try await f.client.send(.PUT, "/v1/chunks/\(id)", body: f.stored.bytes, contentType: APIv1.binaryContentType)
            #expect(put.status == 400 && put.errorCode == "bad_request", "PUT /v1/chunks/\(id): \(Self.text(put))")
        }
        let device = try await f.client.currentDeviceID()
        for id in ["abc", String(device.dropLast()), device + "0", String(repeating: "x", count: 32), device + device] {
            let r = try await f.client.send(.DELETE, "/v1/devices/\(id)")
            #expect(r.status == 400 && r.errorCode == "bad_request", "DELETE /v1/devices/\(id): \(Self.text(r))")
        }
        try await f.expectServingAndUnchanged(before, probes: [f.stored.id], "malformed ids")
    }

    @Test func chunkBodiesThatAreNotEnvelopes() async throws {
        let f = try await Fixture.make(user: "bad-envelopes")
        defer { f.server.stop() }
        let good = try f.vault.chunk("a well-formed chunk")
        let probes = [f.stored.id, good.id]
        let before = try await Self.snapshot(f.client, probes: probes)

        var wrongKind = good.bytes; wrongKind[1] = EnvelopeKind.journalEntry.rawValue
        var unknownKind = good.bytes; unknownKind[1] = 0x09
        var wrongVersion = good.bytes; wrongVersion[0] = 0x02
        let bodies: [([UInt8], String)] = [
            ([], "an empty body"),
            (Sodium.randomBytes(1000), "1000 random bytes"),
            (Sodium.randomBytes(50), "50 random bytes"),
            (Array(good.bytes.prefix(50)), "an envelope cut to 50 bytes"),
            (Array(good.bytes.dropLast()), "an envelope missing its last byte"),
            (good.bytes + [0], "an envelope with a trailing byte"),
            (wrongKind, "a journal-entry kind byte"),
            (unknownKind, "an unknown kind byte"),
            (wrongVersion, "version 2"),
            (Array(try JSONSerialization.data(withJSONObject: ["chunk": "x"])), "JSON"),
        ]
        for (body, what) in bodies {
            let r = try await f.client.send(.PUT, "/v1/chunks/\(good.id.hex)", body: body, contentType: APIv1.binaryContentType)
            #expect(r.status == 400 && r.errorCode == "bad_request", "PUT chunk with \(what): \(Self.text(r))")
        }

        // A batch with one good and one bad envelope is refused as a whole.
        var w = WireWriter()
        w.u8(1); w.u32(2)
        w.id(good.id); w.bytes32(good.bytes)
        w.id(f.stored.id); w.bytes32(wrongKind)
        let mixed = try await f.client.send(.POST, "/v1/chunks/batch", body: w.bytes, contentType: APIv1.binaryContentType)
        #expect(mixed.status == 400 && mixed.errorCode == "bad_request", "batch with a bad envelope: \(Self.text(mixed))")
        for (body, what) in [(Sodium.randomBytes(1024), "random bytes"), ([UInt8](), "empty"),
                             (Array(try ChunkBatch(chunks: [good]).encoded.dropLast()), "truncated"),
                             (try ChunkBatch(chunks: [good]).encoded + [0], "trailing byte"),
                             ([2] + Array(try ChunkBatch(chunks: [good]).encoded.dropFirst()), "version 2")] {
            let r = try await f.client.send(.POST, "/v1/chunks/batch", body: body, contentType: APIv1.binaryContentType)
            #expect(r.status == 400 && r.errorCode == "bad_request", "batch, \(what): \(Self.text(r))")
        }
        try await f.expectServingAndUnchanged(before, probes: probes, "chunk bodies that are not envelopes")
    }

    @Test func bodiesOverTheRouteLimit() async throws {
        let f = try await Fixture.make(user: "bad-sizes")
        defer { f.server.stop() }
        let id = try f.vault.chunk("never stored").id
        let probes = [f.stored.id, id]
        let before = try await Self.snapshot(f.client, probes: probes)
        let bin = APIv1.binaryContentType

        // A 5 MiB "chunk" (past the sealed maximum of 4,325,426 bytes).
        var huge = [UInt8](repeating: 0, count: 5 << 20); huge[0] = 1; huge[1] = 1
        let put = try await f.client.send(.PUT, "/v1/chunks/\(id.hex)", body: huge, contentType: bin)
        #expect(put.status == 413 && put.errorCode == "too_large", "PUT chunk of 5 MiB: \(Self.text(put))")

        // 10,001 real ids: one id past the route's byte limit.
        var ids = WireWriter()
        ids.u8(1); ids.u32(10_001)
        for _ in 0..<10_001 { ids.raw(Sodium.randomBytes(32)) }
        let missing = try await f.client.send(.POST, "/v1/chunks/missing", body: ids.bytes, contentType: bin)
        #expect(missing.status == 413 && missing.errorCode == "too_large", "missing with 10,001 ids: \(Self.text(missing))")

        // 17 MiB batch, 2 MiB checkpoint, 17 KiB JSON bodies.
        let batch = try await f.client.send(.POST, "/v1/chunks/batch", body: [UInt8](repeating: 1, count: 17 << 20), contentType: bin)
        #expect(batch.status == 413 && batch.errorCode == "too_large", "17 MiB batch: \(Self.text(batch))")
        let checkpoint = try await f.client.send(.PUT, "/v1/checkpoint", body: [UInt8](repeating: 1, count: 2 << 20), contentType: bin)
        #expect(checkpoint.status == 413 && checkpoint.errorCode == "too_large", "2 MiB checkpoint: \(Self.text(checkpoint))")
        let bigJSON = Array(try JSONSerialization.data(withJSONObject: ["user": String(repeating: "a", count: 17 << 10)]))
        for path in ["/v1/register", "/v1/login"] {
            let r = try await f.client.with(token: nil).send(.POST, path, body: bigJSON, contentType: "application/json")
            #expect(r.status == 413 && r.errorCode == "too_large", "\(path) with 17 KiB: \(Self.text(r))")
        }
        // A keyring replacement may be up to 1 MiB (links and device seals).
        let hugeJSON = Array(try JSONSerialization.data(withJSONObject: ["keyring": String(repeating: "a", count: 1 << 20)]))
        let keyring = try await f.client.send(.PUT, "/v1/keyring", body: hugeJSON, contentType: "application/json")
        #expect(keyring.status == 413 && keyring.errorCode == "too_large", "PUT keyring with 1 MiB: \(Self.text(keyring))")
        try await f.expectServingAndUnchanged(before, probes: probes, "oversized bodies")
    }

    @Test func chunkIDListAndBatchCounts() async throws {
        let f = try await Fixture.make(user: "bad-counts")
        defer { f.server.stop() }
        let before = try await Self.snapshot(f.client, probes: [f.stored.id])
        let bin = APIv1.binaryContentType

        func idList(count: UInt32, ids: Int, version: UInt8 = 1, trailing: [UInt8] = []) -> [UInt8] {
            var w = WireWriter()
            w.u8(version); w.u32(count)
            for _ in 0..<ids { w.raw(Sodium.randomBytes(32)) }
            w.raw(trailing)
            return w.bytes
        }
        let cases: [([UInt8], String)] = [
            (idList(count: 10_001, ids: 10_000), "count 10,001 (10,000 ids sent)"),
            (idList(count: 10_001, ids: 0), "count 10,001 and no ids"),
            (idList(count: UInt32.max, ids: 1), "count 2³²−1"),
            (idList(count: 3, ids: 2), "count 3, 2 ids"),
            (idList(count: 1, ids: 2), "count 1, 2 ids"),
            (idList(count: 1, ids: 1, trailing: [0]), "a trailing byte"),
            (idList(count: 1, ids: 1, version: 2), "version 2"),
            (idList(count: 1, ids: 1, version: 0), "version 0"),
            ([], "an empty body"),
            ([1, 0, 0], "a cut header"),
        ]
        for (body, what) in cases {
            let r = try await f.client.send(.POST, "/v1/chunks/missing", body: body, contentType: bin)
            #expect(r.status == 400 && r.errorCode == "bad_request", "missing, \(what): \(Self.text(r))")
        }
        // The boundary itself is fine: 10,000 ids, all reported missing.
        let boundary = try await f.client.send(.POST, "/v1/chunks/missing", body: idList(count: 10_000, ids: 10_000), contentType: bin)
        #expect(boundary.status == 200)
        #expect(try ChunkIDList(decoding: boundary.body).ids.count == 10_000)

        // A batch of 1,001 well-framed minimal envelopes is over the count limit.
        let minimal: [UInt8] = [1, EnvelopeKind.chunk.rawValue] + [UInt8](repeating: 0, count: Envelope.minimumSize - 2)
        var w = WireWriter()
        w.u8(1); w.u32(1_001)
        for _ in 0..<1_001 { w.raw(Sodium.randomBytes(32)); w.bytes32(minimal) }
        let batch = try await f.client.send(.POST, "/v1/chunks/batch", body: w.bytes, contentType: bin)
        #expect(batch.status == 400 && batch.errorCode == "bad_request", "batch of 1,001: \(Self.text(batch))")
        try await f.expectServingAndUnchanged(before, probes: [f.stored.id], "chunk id list and batch counts")
    }

    /// One id twice in a batch, with envelopes of different sizes: the server
    /// must store one of them and count the size of the one it stored (or
    /// refuse the batch), else a client can store more than its usage (and
    /// quota) shows. Which duplicate wins may depend on timing, so the batch
    /// holds ten such pairs.
    @Test func batchWithOneIDTwiceCountsWhatItStores() async throws {
        let f = try await Fixture.make(user: "dup-batch")
        defer { f.server.stop() }
        let before = try await f.client.accountInfo().storedBytes
        var batch: [SealedChunk] = []
        for g in 0..<10 {
            let small = try f.vault.chunk("x\(g)")
            let large = SealedChunk(id: small.id, bytes: try f.vault.chunk(String(repeating: "y", count: 1_400_000) + "\(g)").bytes)
            batch += [small, large]
        }
        let r = try await f.client.putBatch(batch)
        if r.status == 400 { return }  // refusing duplicate ids is fine
        #expect(r.status == 201, "\(Self.text(r))")
        var storedSizes = 0
        for pair in stride(from: 0, to: batch.count, by: 2) {
            let stored = try await f.client.getChunk(batch[pair].id)
            #expect(stored.body == batch[pair].bytes || stored.body == batch[pair + 1].bytes)
            storedSizes += stored.body.count
        }
        let counted = try await f.client.accountInfo().storedBytes - before
        #expect(counted == Int64(storedSizes), "usage grew by \(counted) bytes for stored blobs of \(storedSizes) bytes")
    }

    // MARK: Content types and JSON

    @Test func wrongOrMissingContentType() async throws {
        let f = try await Fixture.make(user: "bad-types")
        defer { f.server.stop() }
        let chunk = try f.vault.chunk("typed")
        let probes = [f.stored.id, chunk.id]
        let before = try await Self.snapshot(f.client, probes: probes)
        let bin = APIv1.binaryContentType
        let json = "application/json"
        let login = Array(try LoginRequest(user: f.vault.user, loginSecret: f.vault.loginSecret, deviceName: "typed", device: testDeviceKeys).jsonData())
        let register = Array(try RegisterRequest(user: "bad-types-new", invite: "0000-0000-0000-0000", loginSecret: f.vault.loginSecret,
                                                 keyring: f.vault.keyring, deviceName: "x", recoveryProof: f.vault.recoveryProof, device: testDeviceKeys).jsonData())
        let keyring = Array(try KeyringReplaceRequest(keyring: f.vault.keyring, loginSecret: Sodium.randomBytes(32), proof: .password(f.vault.loginSecret)).jsonData())
        let entry = try f.vault.entry(creating: "typed", baseSeq: JournalSeq(1), baseHead: f.head)
        let routes: [(HTTPMethod, String, [UInt8], String)] = [
            (.POST, "/v1/register", register, json),
            (.POST, "/v1/login", login, json),
            (.PUT, "/v1/keyring", keyring, json),
            (.POST, "/v1/chunks/missing", try ChunkIDList(ids: [chunk.id]).encoded, bin),
            (.POST, "/v1/chunks/batch", try ChunkBatch(chunks: [chunk]).encoded, bin),
            (.PUT, "/v1/chunks/\(chunk.id.hex)", chunk.bytes, bin),
            (.POST, "/v1/journal", AppendRequest(entry: entry, references: []).encoded, bin),
            (.PUT, "/v1/checkpoint", try f.vault.checkpoint(seq: JournalSeq(1), head: f.head), bin),
        ]
        for (method, path, body, expected) in routes {
            let wrong: [String?] = [nil, expected == json ? bin : json, "text/plain", "application/octet-stream",
                                    "\(expected)x", "multipart/form-data; boundary=\(expected)"]
            for type in wrong {
                let r = try await f.client.send(method, path, body: body, contentType: type)
                #expect(r.status == 415 && r.errorCode == "unsupported_media_type",
                        "\(method) \(path) with Content-Type \(type ?? "none"): \(Self.text(r))")
            }
        }
        try await f.expectServingAndUnchanged(before, probes: probes, "wrong content types")

        // Parameters and case are ignored: these are accepted.
        let ok = try await f.client.with(token: nil).send(.POST, "/v1/login", body: login, contentType: "Application/JSON; charset=utf-8")
        #expect(ok.status == 200, "login with a charset parameter: \(Self.text(ok))")
        let put = try await f.client.send(.PUT, "/v1/chunks/\(chunk.id.hex)", body: chunk.bytes, contentType: "\(bin); q=1")
        #expect(put.status == 201, "PUT chunk with a parameter: \(Self.text(put))")
    }

    /// Variants of a JSON object: one unknown key, each key missing, each key of a wrong type.
    static func variants(of object: [String: Any]) throws -> [([UInt8], String)] {
        func encode(_ o: Any) throws -> [UInt8] { Array(try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .fragmentsAllowed])) }
        var out: [([UInt8], String)] = []
        var extra = object; extra["admin"] = true
        out.append((try encode(extra), "an unknown key"))
        for key in object.keys.sorted() {
            // Optional keys (the invite) may be omitted: docs/protocol.md.
            if key != "invite" {
                var missing = object; missing[key] = nil
                out.append((try encode(missing), "\(key) missing"))
            }
            for (value, type) in [(42 as Any, "a number"), ([1, 2] as Any, "an array"), (["x": 1] as Any, "an object"), (false as Any, "a bool")] {
                var wrong = object; wrong[key] = value
                out.append((try encode(wrong), "\(key) as \(type)"))
            }
        }
        out += [
            (Array("user=alice&loginSecret=x".utf8), "a form body"),
            (Array("not json at all".utf8), "text"),
            ([], "an empty body"),
            (Array("{".utf8), "a cut object"),
            (Array(try encode(object).dropLast()), "a cut body"),
            (try encode([object]), "an array of the object"),
            (Array("null".utf8), "null"),
            (Array("\"string\"".utf8), "a string"),
            ([0xff, 0xfe, 0x7b, 0x7d], "bytes that are not UTF-8"),
            (Array(String(repeating: "[", count: 15_000).utf8), "15,000 nested arrays"),
            (Array((String(repeating: "{\"a\":", count: 2_000) + "1" + String(repeating: "}", count: 2_000)).utf8), "2,000 nested objects"),
        ]
        return out
    }

    @Test func malformedJSONBodies() async throws {
        let f = try await Fixture.make(user: "bad-json")
        defer { f.server.stop() }
        let before = try await Self.snapshot(f.client, probes: [f.stored.id])
        let invite = try await f.server.inviteCode(for: "bad-json-new")
        let other = try TestVault.make(user: "bad-json-new")
        let secret = Data(f.vault.loginSecret).base64EncodedString()
        let register: [String: Any] = ["user": "bad-json-new", "invite": invite, "loginSecret": Data(other.loginSecret).base64EncodedString(),
                                       "keyring": Data(other.keyring.encoded).base64EncodedString(), "deviceName": "laptop",
                                       "recoveryProof": Data(other.recoveryProof).base64EncodedString(),
                                       "signingKey": Data(testDeviceKeys.signing).base64EncodedString(),
                                       "boxKey": Data(testDeviceKeys.box).base64EncodedString()]
        let login: [String: Any] = ["user": f.vault.user, "loginSecret": secret, "deviceName": "laptop",
                                    "signingKey": Data(testDeviceKeys.signing).base64EncodedString(),
                                    "boxKey": Data(testDeviceKeys.box).base64EncodedString()]
        let keyring: [String: Any] = ["keyring": Data(f.vault.keyring.encoded).base64EncodedString(), "loginSecret": secret,
                                      "currentLoginSecret": secret]

        for (method, path, object, client) in [(HTTPMethod.POST, "/v1/register", register, f.client.with(token: nil)),
                                               (.POST, "/v1/login", login, f.client.with(token: nil)),
                                               (.PUT, "/v1/keyring", keyring, f.client)] {
            for (body, what) in try Self.variants(of: object) {
                let r = try await client.send(method, path, body: body, contentType: "application/json")
                if what == "recoveryProof missing" || what == "currentLoginSecret missing" {
                    // What a client older than the proofs sends: told to upgrade, not "bad request".
                    #expect(r.status == 409 && r.errorCode == "upgrade_required", "\(method) \(path) with \(what): \(Self.text(r))")
                    continue
                }
                #expect(r.status == 400 && r.errorCode == "bad_request", "\(method) \(path) with \(what): \(Self.text(r))")
            }
        }
        // Values of the right type but wrong content.
        var values: [(String, [String: Any], String)] = []
        for (key, value) in [("loginSecret", "not base64!"), ("loginSecret", Data(Sodium.randomBytes(31)).base64EncodedString()),
                             ("loginSecret", Data(Sodium.randomBytes(33)).base64EncodedString()),
                             ("keyring", "not base64!"), ("keyring", Data(Sodium.randomBytes(100)).base64EncodedString()),
                             ("keyring", Data(f.vault.keyring.encoded + [0]).base64EncodedString()),
                             ("keyring", Data(f.vault.keyring.encoded.dropLast()).base64EncodedString()),
                             ("recoveryProof", "not base64!"), ("recoveryProof", Data(Sodium.randomBytes(31)).base64EncodedString())] {
            var r = register; r[key] = value
            values.append(("/v1/register", r, "register with a bad \(key)"))
            var k = keyring; k[key] = value
            values.append(("/v1/keyring", k, "keyring with a bad \(key)"))
        }
        for (path, object, what) in values {
            let client = path == "/v1/keyring" ? f.client : f.client.with(token: nil)
            let r = try await client.send(path == "/v1/keyring" ? .PUT : .POST, path,
                                          body: Array(try JSONSerialization.data(withJSONObject: object)), contentType: "application/json")
            #expect(r.status == 400 && r.errorCode == "bad_request", "\(what): \(Self.text(r))")
        }
        try await f.expectServingAndUnchanged(before, probes: [f.stored.id], "malformed JSON")
        // None of it consumed the invite or changed the login secret.
        let ok = try await f.client.with(token: nil).send(.POST, "/v1/register", body: Array(try JSONSerialization.data(withJSONObject: register)),
                                                          contentType: "application/json")
        #expect(ok.status == 201, "the invite still works: \(Self.text(ok))")
        _ = try await f.vault.login(on: f.server)
    }

    // MARK: Registration

    @Test func invalidUserAndDeviceNamesOnRegister() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "names-ok")
        let invite = try await server.inviteCode(for: "names-ok")
        let anon = APIClient(baseURL: server.baseURL)
        func register(_ user: String, _ device: String) async throws -> APIResponse {
            try await anon.json(.POST, "/v1/register", RegisterRequest(user: user, invite: invite, loginSecret: vault.loginSecret,
                                                                       keyring: vault.keyring, deviceName: device, recoveryProof: vault.recoveryProof, device: testDeviceKeys))
        }
        let badUsers = ["", "Alice", "NAMES-OK", "names ok", "names/ok", "names\u{0}ok", "ålice", "names-ok\n", "名前",
                        String(repeating: "a", count: 65), "a@b", "a+b", "a:b", "%2e"]
        for user in badUsers {
            let r = try await register(user, "laptop")
            #expect(r.status == 400 && r.errorCode == "bad_request", "user name \(user.debugDescription): \(Self.text(r))")
        }
        let badDevices = ["", String(repeating: "d", count: 129), String(repeating: "é", count: 65), "line\nbreak", "tab\there",
                          "nul\u{0}", "bell\u{7}", "del\u{7f}", "c1\u{85}", "\r"]
        for device in badDevices {
            let r = try await register("names-ok", device)
            #expect(r.status == 400 && r.errorCode == "bad_request", "device name \(device.debugDescription): \(Self.text(r))")
        }
        let prelogin = try PreLoginResponse.decodeStrictly(Data(try await anon.send(.GET, "/v1/accounts/names-ok/prelogin").body))
        #expect(try prelogin.parameters() != vault.parameters, "no account was created")
        // The invite is intact: the longest valid names work.
        let ok = try await register("names-ok", String(repeating: "é", count: 64))
        #expect(ok.status == 201, "valid names: \(Self.text(ok))")
        let long = String(repeating: "z", count: 64)
        let v2 = try TestVault.make(user: long)
        _ = try await v2.register(on: server, deviceName: "x")
        #expect(try await anon.healthStatus() == 200)
    }

    @Test func registrationNeedsAValidUnusedInvite() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let anon = APIClient(baseURL: server.baseURL)
        let vault = try TestVault.make(user: "inv-x")
        func register(_ user: String, _ invite: String?) async throws -> APIResponse {
            try await anon.json(.POST, "/v1/register", RegisterRequest(user: user, invite: invite, loginSecret: vault.loginSecret,
                                                                       keyring: vault.keyring, deviceName: "laptop", recoveryProof: vault.recoveryProof, device: testDeviceKeys))
        }
        let code = try await server.inviteCode(for: "inv-x")
        for (user, invite, what) in [("inv-x", nil, "no invite"), ("inv-x", "", "an empty invite"), ("inv-x", "not-an-invite", "a malformed invite"),
                                     ("inv-x", "0000-0000-0000-0000", "a wrong invite"), ("inv-y", code, "another name's invite"),
                                     ("inv-x", code + "0", "an invite with an extra digit")] as [(String, String?, String)] {
            let r = try await register(user, invite)
            #expect(r.status == 403 && r.errorCode == "forbidden", "\(what): \(Self.text(r))")
        }
        // Typed loosely (lower case, no hyphens) it works, once.
        let ok = try await register("inv-x", code.lowercased().replacingOccurrences(of: "-", with: ""))
        #expect(ok.status == 201, "the invite, typed loosely: \(Self.text(ok))")
        let again = try await register("inv-x", code)
        #expect([403, 409].contains(again.status), "the used invite again: \(Self.text(again))")
        // A used code does not open another name either.
        _ = try await server.inviteCode(for: "inv-z")
        let z = try await register("inv-z", code)
        #expect(z.status == 403 && z.errorCode == "forbidden", "a used invite for another name: \(Self.text(z))")
        #expect(try await anon.healthStatus() == 200)

        // With open registration no invite is needed, and a taken name is 409 user_exists.
        let open = try await ServerProcess.start(arguments: ["--open-registration"])
        defer { open.stop() }
        let openAnon = APIClient(baseURL: open.baseURL)
        let first = try await openAnon.json(.POST, "/v1/register", RegisterRequest(user: "open-a", invite: nil, loginSecret: vault.loginSecret,
                                                                                   keyring: vault.keyring, deviceName: "a", recoveryProof: vault.recoveryProof, device: testDeviceKeys))
        #expect(first.status == 201)
        let other = try TestVault.make(user: "open-a")
        let taken = try await openAnon.json(.POST, "/v1/register", RegisterRequest(user: "open-a", invite: nil, loginSecret: other.loginSecret,
                                                                                   keyring: other.keyring, deviceName: "b", recoveryProof: other.recoveryProof, device: testDeviceKeys))
        #expect(taken.status == 409 && taken.errorCode == "user_exists", "a taken name: \(Self.text(taken))")
        // The first owner is untouched.
        let login = try await openAnon.json(.POST, "/v1/login", LoginRequest(user: "open-a", loginSecret: vault.loginSecret, deviceName: "c", device: testDeviceKeys))
        #expect(login.status == 200)
        let intruder = try await openAnon.json(.POST, "/v1/login", LoginRequest(user: "open-a", loginSecret: other.loginSecret, deviceName: "d", device: testDeviceKeys))
        #expect(intruder.status == 403)
    }

    // MARK: Journal

    @Test func journalQueriesOutOfRange() async throws {
        let f = try await Fixture.make(user: "bad-query")
        defer { f.server.stop() }
        let before = try await Self.snapshot(f.client, probes: [f.stored.id])
        let queries = ["after=-1", "after=abc", "after=1.5", "after=", "after=0x10", "after=18446744073709551616",
                       "limit=0", "limit=-1", "limit=1001", "limit=100000", "limit=abc", "limit=",
                       "wait=abc", "wait=-1", "wait=nan", "wait=inf", "wait=-inf", "wait=",
                       "after=0&limit=0&wait=0"]
        for q in queries {
            let r = try await f.client.send(.GET, "/v1/journal?\(q)", timeout: .seconds(10))
            #expect(r.status == 400 && r.errorCode == "bad_request", "GET /v1/journal?\(q): \(Self.text(r))")
        }
        // The edges that are fine.
        for q in ["after=0&limit=1000&wait=0", "limit=1", "wait=0.0", "after=1", ""] {
            let r = try await f.client.send(.GET, "/v1/journal?\(q)", timeout: .seconds(10))
            #expect(r.status == 200, "GET /v1/journal?\(q): \(Self.text(r))")
        }
        try await f.expectServingAndUnchanged(before, probes: [f.stored.id], "bad journal queries")
    }

    /// Numbers that parse but do not fit the server's arithmetic must not crash it.
    ///
    /// ServerProcess runs the server with the crash backtracer off, so a crash ends it at once.
    @Test(arguments: ["after=9223372036854775808", "after=18446744073709551615", "after=0&wait=1e300", "after=0&wait=1e16"])
    func journalQueryWithAHugeNumberDoesNotCrashTheServer(query: String) async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let vault = try TestVault.make(user: "huge-query")
        let client = try await vault.register(on: server)
        let entry = try vault.entry(creating: "first", baseSeq: .start, baseHead: vault.genesis)
        #expect(try await client.append(entry, references: []).status == 201)

        // The account has an entry, so a page after 0 returns at once whatever the wait.
        do {
            let r = try await client.send(.GET, "/v1/journal?\(query)", timeout: .seconds(5))
            #expect([200, 400].contains(r.status), "GET /v1/journal?\(query): \(Self.text(r))")
            if r.status == 200 {
                let page = try EntryPage(decoding: r.body)
                #expect(page.latest == JournalSeq(1))
                #expect(page.items.map(\.entry) == (query.hasPrefix("after=0") ? [entry] : []))
            }
        } catch {
            let deadline = ContinuousClock.now + .seconds(5)
            while server.process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            let crash = server.log.split(separator: "\n").first { $0.contains("Fatal error") }.map(String.init)
            Issue.record("GET /v1/journal?\(query) got no answer (\(error)); the server \(server.process.isRunning ? "still runs" : "died"): \(crash ?? String(server.log.suffix(300)))")
            return
        }
        #expect(try await client.healthStatus() == 200)
        let page = try await client.pull(after: 0)
        #expect(page.items.map(\.entry) == [entry] && page.latest == JournalSeq(1))
    }

    @Test func appendsThatDoNotFitTheChain() async throws {
        let f = try await Fixture.make(user: "bad-append")
        defer { f.server.stop() }
        let absent1 = try f.vault.chunk("absent one"), absent2 = try f.vault.chunk("absent two")
        let probes = [f.stored.id, absent1.id, absent2.id]
        let before = try await Self.snapshot(f.client, probes: probes)

        // Bases that are not in the chain.
        let bases: [(JournalSeq, ChainHead, String)] = [
            (JournalSeq(2), f.head, "seq past the latest"),
            (JournalSeq(5), f.vault.genesis, "seq far past the latest"),
            (JournalSeq(1), f.vault.genesis, "seq 1 with the genesis head"),
            (JournalSeq(0), f.head, "seq 0 with head 1"),
            (JournalSeq(1), try ChainHead(bytes: Sodium.randomBytes(32)), "a random head"),
            (JournalSeq(UInt64.max), f.head, "seq 2⁶⁴−1"),
        ]
        for (seq, head, what) in bases {
            let r = try await f.client.append(try f.vault.entry(creating: "forked", baseSeq: seq, baseHead: head), references: [])
            #expect(r.status == 409 && r.errorCode == "bad_base", "base \(what): \(Self.text(r))")
        }
        // Absent chunks: exactly those, in the order given, present ones left out.
        let entry = try f.vault.entry(creating: "refs", baseSeq: JournalSeq(1), baseHead: f.head)
        let missing = try await f.client.append(entry, references: [absent1.id, f.stored.id, absent2.id])
        #expect(missing.status == 409 && missing.errorCode == "missing_chunks", "\(Self.text(missing))")
        #expect(missing.json["missing"] as? [String] == [absent1.id.hex, absent2.id.hex])

        // Malformed append bodies.
        let good = AppendRequest(entry: entry, references: []).encoded
        var wrongKind = good; wrongKind[5 + (entry.signer == nil ? JournalEntry.headerSize : JournalEntry.signedHeaderSize) + 1] = EnvelopeKind.chunk.rawValue
        var longCount = good; longCount[longCount.count - 1] = 1    // claims 1 reference, has none
        var w = WireWriter()
        w.u8(1); w.u32(UInt32(entry.encoded.count)); w.raw(entry.encoded); w.u32(1); w.raw([1, 2, 3])
        let malformed: [([UInt8], String)] = [
            ([], "an empty body"),
            (Sodium.randomBytes(1024), "random bytes"),
            (Array(good.prefix(40)), "a cut header"),
            (Array(good.dropLast()), "a cut reference count"),
            (good + [0], "a trailing byte"),
            ([3] + good.dropFirst(), "version 3"),
            (wrongKind, "a chunk envelope as the entry"),
            (longCount, "a reference count past the body"),
            (w.bytes, "a cut reference"),
        ]
        for (body, what) in malformed {
            let r = try await f.client.send(.POST, "/v1/journal", body: body, contentType: APIv1.binaryContentType)
            #expect(r.status == 400 && r.errorCode == "bad_request", "append with \(what): \(Self.text(r))")
        }
        try await f.expectServingAndUnchanged(before, probes: probes, "appends that do not fit")
        // The chain still takes the right next entry.
        #expect(try await f.client.append(entry, references: [f.stored.id]).status == 201)
    }

    @Test func checkpointsThatDoNotFit() async throws {
        let f = try await Fixture.make(user: "bad-checkpoint")
        defer { f.server.stop() }
        let before = try await Self.snapshot(f.client, probes: [f.stored.id])
        let good = try f.vault.checkpoint(seq: JournalSeq(1), head: f.head)
        var wrongKind = good; wrongKind[41 + 1] = EnvelopeKind.chunk.rawValue
        for (body, what) in [([UInt8](), "an empty body"), (Sodium.randomBytes(500), "random bytes"), (Array(good.prefix(41)), "no envelope"),
                             (Array(good.dropLast()), "a cut envelope"), (good + [0], "a trailing byte"), (wrongKind, "a chunk envelope"),
                             ([2] + good.dropFirst(), "version 2")] {
            let r = try await f.client.send(.PUT, "/v1/checkpoint", body: body, contentType: APIv1.binaryContentType)
            #expect(r.status == 400 && r.errorCode == "bad_request", "checkpoint with \(what): \(Self.text(r))")
        }
        for (seq, head, what) in [(JournalSeq(2), f.head, "a seq past the latest"), (JournalSeq(1), f.vault.genesis, "a wrong head"),
                                  (JournalSeq(UInt64.max), f.head, "seq 2⁶⁴−1")] {
            let r = try await f.client.send(.PUT, "/v1/checkpoint", body: try f.vault.checkpoint(seq: seq, head: head),
                                            contentType: APIv1.binaryContentType)
            #expect(r.status == 409 && r.errorCode == "bad_checkpoint", "checkpoint at \(what): \(Self.text(r))")
        }
        try await f.expectServingAndUnchanged(before, probes: [f.stored.id], "bad checkpoints")
    }

    // MARK: The socket

    @Test func garbageOnARawSocket() async throws {
        let f = try await Fixture.make(user: "bad-socket")
        defer { f.server.stop() }
        let before = try await Self.snapshot(f.client, probes: [f.stored.id])
        var random = Sodium.randomBytes(1024); random[0] = 0xff
        let inputs: [([UInt8], String)] = [
            (random, "1 KiB of random bytes"),
            (Array("G\u{1}T /v1/health HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "a control byte in the method"),
            (Array("GET /v1/health\u{0}\u{7f} HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "NUL in the target"),
            (Array("GET /v1/health HTTP/1.1 trailing garbage\r\nHost: x\r\n\r\n".utf8), "garbage after the version"),
            (Array("GET /v1/health HTTP/1.1\r\nthis is not a header\r\n\r\n".utf8), "a header line without a colon"),
            (Array("POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".utf8), "a negative Content-Length"),
            (Array("POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".utf8),
             "Content-Length with a bad chunked body"),
            (Array("\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\u{0}\u{1}\u{fc}\u{3}\u{3}".utf8) + Sodium.randomBytes(200), "a TLS ClientHello"),
        ]
        for (bytes, what) in inputs {
            let connection = try RawTCPConnection(port: f.server.port, receiveTimeout: .seconds(2))
            _ = connection.write(bytes)
            let (response, closed) = await connection.readUntilClosed()
            let text = String(decoding: response.prefix(200), as: UTF8.self)
            // Answered with a 4xx and closed, or closed without an answer; never left hanging.
            #expect(closed && (text.hasPrefix("HTTP/1.1 4") || response.isEmpty), "\(what): answered \(text.debugDescription), closed: \(closed)")
            #expect(!text.hasPrefix("HTTP/1.1 2") && !text.hasPrefix("HTTP/1.1 5"), "\(what): \(text.debugDescription)")
        }
        try await f.expectServingAndUnchanged(before, probes: [f.stored.id], "garbage on the socket")
    }

    @Test func slowClientsDoNotBlockOthers() async throws {
        let f = try await Fixture.make(user: "slow")
        defer { f.server.stop() }
        let chunk = try f.vault.chunk("sent slowly")
        let probes = [f.stored.id, chunk.id]
        let before = try await Self.snapshot(f.client, probes: probes)
        let token = try #require(f.client.token)
        let halves: [String] = [
            "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n",                        // headers never end
            "GET /v1/hea",                                                           // request line never ends
            "POST /v1/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"user\":",
            "PUT /v1/chunks/\(chunk.id.hex) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n"
                + "Content-Type: \(APIv1.binaryContentType)\r\nContent-Length: \(chunk.bytes.count)\r\n\r\n"
                + String(repeating: "x", count: 20),
        ]
        var hanging: [RawTCPConnection] = []
        for i in 0..<24 {
            let c = try RawTCPConnection(port: f.server.port, receiveTimeout: .milliseconds(200))
            #expect(c.write(Array(halves[i % halves.count].utf8)))
            hanging.append(c)
        }
        // Meanwhile, ordinary requests complete promptly.
        let clock = ContinuousClock()
        let start = clock.now
        #expect(try await f.client.with(token: nil).send(.GET, "/v1/health", timeout: .seconds(5)).status == 200)
        let (other, _) = try await f.vault.login(on: f.server, deviceName: "while others hang")
        let fresh = try f.vault.chunk("uploaded while others hang")
        #expect(try await other.send(.PUT, "/v1/chunks/\(fresh.id.hex)", body: fresh.bytes, contentType: APIv1.binaryContentType,
                                     timeout: .seconds(5)).status == 201)
        #expect(try await other.send(.GET, "/v1/chunks/\(fresh.id.hex)", timeout: .seconds(5)).body == fresh.bytes)
        // Each request is bounded by its own 5 s time-out above; together they
        // took 3.5 s on a loaded machine, so 15 s still tells "not blocked" apart.
        #expect(clock.now - start < .seconds(15), "requests took \(clock.now - start) beside hanging clients")
        // The hanging clients got no answer (they have not finished a request).
        for c in hanging.prefix(4) {
            let (bytes, _) = await c.readUntilClosed()
            #expect(bytes.isEmpty, "a half request was answered: \(String(decoding: bytes.prefix(100), as: UTF8.self))")
        }
        hanging.removeAll()
        // The half-sent chunk was not stored; the login device is the only change.
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await f.client.missing([chunk.id]) == [chunk.id])
        #expect(try await other.send(.DELETE, "/v1/devices/\(try await other.currentDeviceID())").status == 204)
        #expect(try await f.client.send(.GET, "/v1/chunks/\(fresh.id.hex)").status == 200)
        let after = try await Self.snapshot(f.client, probes: [f.stored.id])
        #expect(after.latest == before.latest && after.devices == before.devices && after.entries == before.entries)
        #expect(try await f.client.healthStatus() == 200)
    }

    // MARK: Rate limits

    @Test func loginRateLimitPerNameAndAddress() async throws {
        // A refill of 30 s, 5x the default 6 s: on a loaded machine ten slow-hashed logins
        // took longer than 6 s, and one attempt came back before the eleventh.
        let server = try await ServerProcess.start(arguments: ["--login-refill", "30"])
        defer { server.stop() }
        let target = try TestVault.make(user: "rl-target")
        let bystander = try TestVault.make(user: "rl-bystander")
        let targetClient = try await target.register(on: server)
        _ = try await bystander.register(on: server)
        let anon = APIClient(baseURL: server.baseURL)
        func login(_ user: String, _ secret: [UInt8]) async throws -> APIResponse {
            try await anon.json(.POST, "/v1/login", LoginRequest(user: user, loginSecret: secret, deviceName: "guess", device: testDeviceKeys))
        }
        for i in 1...10 {
            let r = try await login("rl-target", Sodium.randomBytes(32))
            #expect(r.status == 403 && r.errorCode == "forbidden", "wrong login \(i): \(Self.text(r))")
        }
        let limited = try await login("rl-target", Sodium.randomBytes(32))
        #expect(limited.status == 429 && limited.errorCode == "rate_limited", "wrong login 11: \(Self.text(limited))")
        let retry = limited.headers.first(name: "Retry-After").flatMap { Int($0) }
        #expect(retry != nil && (1...30).contains(retry!), "Retry-After: \(limited.headers.first(name: "Retry-After") ?? "none")")
        // Still limited, even with the right secret (no oracle while limited).
        let right = try await login("rl-target", target.loginSecret)
        #expect(right.status == 429 && right.errorCode == "rate_limited")
        // Other names, known or not, are unaffected; the target's devices keep working.
        #expect(try await login("rl-bystander", Sodium.randomBytes(32)).status == 403)
        #expect(try await login("rl-bystander", bystander.loginSecret).status == 200)
        #expect(try await login("rl-unknown", Sodium.randomBytes(32)).status == 403)
        #expect(try await targetClient.send(.GET, "/v1/account").status == 200)
        // The limit lifts: one attempt comes back after Retry-After.
        try await Task.sleep(for: .seconds(Double(retry ?? 6)) + .milliseconds(100))
        #expect(try await login("rl-target", target.loginSecret).status == 200)
        #expect(try await login("rl-target", target.loginSecret).status == 429)
        #expect(try await anon.healthStatus() == 200)
    }
}

