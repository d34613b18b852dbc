import AsyncHTTPClient
import Foundation
import LockCrypto
import LockTesting
import LockWire
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#endif

/// The scale-out figures of the server part (phase `scaleout`): the same
/// append and upload workloads on the embedded server of this run (SQLite +
/// files), on PostgreSQL with local blobs, and on PostgreSQL + S3 with one and
/// with two instances, so the cost of each layer shows side by side.
///
/// PostgreSQL is a throwaway cluster (PostgresTestServer: fsync off, as in the
/// tests) and the S3 store is moto (S3TestServer, from .build/venv, which
/// `make bench` installs); both are started here and stopped at the end.
extension ServerRun {
    /// Concurrent clients of the append figures, each with its own account.
    static let scaleClients = 8
    static let appendsPerClient = 60

    /// One account of the append figures: its keys and the journal's end as last answered.
    struct BenchAccount: Sendable {
        let keys: VaultKeys
        let token: String
        var seq = JournalSeq.start
        var head: ChainHead
        /// The registered device and its keys: entries are signed, as the server wants.
        let device: DeviceID
        let identity: DeviceIdentity
        var appended = 0
    }

    mutating func scaleOut(http: HTTPClient) async throws {
        let clients = Self.scaleClients
        Bench.note("scale-out: server_*appends_per_s_*: \(clients) clients at once, each appending to its own vault "
                   + "(sequential POST /v1/journal per client, one create operation, no references: an append touches only the "
                   + "metadata store); _2 = clients alternate between two instances on one database; upload figures as "
                   + "server_upload_mbps (\(B.streams) streams of 1 MiB chunks); best of \(B.rounds) rounds")
        Bench.note("PostgreSQL 15: a throwaway local cluster on this machine's disk, every commit flushed (fsync and synchronous_commit on, "
                   + "as SQLite's synchronous=FULL); "
                   + "S3: moto, an in-memory Python test server on this machine, not a real object store — "
                   + "its figures say what lockfs-server adds, not what AWS, MinIO or Ceph would give")
        let parameters = KDFParameters.generate(.interactive)
        let password = try PasswordKeys.derive(password: "benchmark password", parameters: parameters)

        // The embedded server of this run (SQLite + files), same workload.
        var embedded = try await Self.register(clients, on: server.baseURL, http: http, password: password, parameters: parameters, prefix: "emb")
        Bench.report("server_appends_per_s_\(clients)clients", try await Self.appendRate(&embedded, urls: [server.baseURL], http: http),
                     unit: "appends/s")

        let pg = try await PostgresTestServer.start(durable: true)
        defer { pg.destroy() }
        let moto = try await S3TestServer.start()
        defer { moto.stop() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lockfs-bench-pgpass-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let passfile = dir.appendingPathComponent("pgpass").path
        try "127.0.0.1:\(pg.port):*:\(pg.user):\(pg.password)\n".write(toFile: passfile, atomically: true, encoding: .utf8)
        chmod(passfile, 0o600)

        // PostgreSQL, blobs in the instance's directory.
        let pgOnly = try await BenchServer.start(arguments: ["--metadata", pg.url(database: try await pg.createDatabase("bench_pg")),
                                                             "--pg-passfile", passfile])
        do {
            var accounts = try await Self.register(clients, on: pgOnly.baseURL, http: http, password: password, parameters: parameters,
                                                   prefix: "pg")
            Bench.report("server_pg_appends_per_s_1", try await Self.appendRate(&accounts, urls: [pgOnly.baseURL], http: http),
                         unit: "appends/s")
            let uploader = BenchClient(http: http, baseURL: pgOnly.baseURL, token: accounts[0].token)
            Bench.report("server_pg_upload_mbps", try await uploadRate(uploader, keys: accounts[0].keys, tag: 0x5000).mbps)
        } catch {
            pgOnly.stop(grace: .seconds(5))
            throw BenchFailure("PostgreSQL + files: \(error)\n--- server log (tail) ---\n\(pgOnly.log.suffix(3000))")
        }
        pgOnly.stop()

        // PostgreSQL + S3, one instance then two.
        let bucket = try moto.makeBucket()
        let s3Arguments = ["--metadata", pg.url(database: try await pg.createDatabase("bench_pg_s3")), "--pg-passfile", passfile,
                           "--blobs", "s3://\(bucket)?endpoint=\(moto.endpoint)&region=us-east-1"]
        let s3Environment: [String: String?] = ["AWS_ACCESS_KEY_ID": "lockfs-bench", "AWS_SECRET_ACCESS_KEY": "lockfs-bench-secret",
                                                "AWS_SESSION_TOKEN": nil]
        let first = try await BenchServer.start(arguments: s3Arguments, environment: s3Environment)
        var second: BenchServer?
        do {
            var accounts = try await Self.register(clients, on: first.baseURL, http: http, password: password, parameters: parameters,
                                                   prefix: "s3")
            Bench.report("server_pg_s3_appends_per_s_1", try await Self.appendRate(&accounts, urls: [first.baseURL], http: http),
                         unit: "appends/s")
            let other = try await BenchServer.start(arguments: s3Arguments, environment: s3Environment)
            second = other
            Bench.report("server_pg_s3_appends_per_s_2",
                         try await Self.appendRate(&accounts, urls: [first.baseURL, other.baseURL], http: http), unit: "appends/s")

            let uploader = BenchClient(http: http, baseURL: first.baseURL, token: accounts[0].token)
            let (s3mbps, chunks) = try await uploadRate(uploader, keys: accounts[0].keys, tag: 0x6000)
            Bench.report("server_s3_upload_mbps", s3mbps)
            var down = 0.0
            for _ in 0..<B.rounds {
                down = max(down, try await B.throughput(chunks, streams: B.streams) { chunk in
                    guard try await uploader.getChunk(id: chunk.id) == chunk.size else { throw BenchFailure("GET chunk: short body") }
                })
            }
            Bench.report("server_s3_download_mbps", down)

            // The same bytes PUT straight to moto: what is left is lockfs-server's own share.
            let direct = try await directPutRate(http: http, moto: moto, bucket: bucket, keys: accounts[0].keys)
            Bench.report("s3_direct_put_mbps", direct)
            let serverMs = 1000 / (s3mbps / 1.048576 / Double(B.streams))
            let directMs = 1000 / (direct / 1.048576 / Double(B.streams))
            Bench.note(String(format: "s3_direct_put_mbps: the same 1 MiB sealed chunks PUT to moto by this process (%d streams, "
                              + "unsigned: moto checks no signature); per 1 MiB chunk and stream ≈ %.1f ms through lockfs-server "
                              + "(auth, envelope checks, SHA-256 + SigV4, a second HTTP hop, the PostgreSQL record) vs %.1f ms direct",
                              B.streams, serverMs, directMs))
        } catch {
            let log = first.log
            first.stop(grace: .seconds(5))
            second?.stop(grace: .seconds(5))
            throw BenchFailure("PostgreSQL + S3: \(error)\n--- server log (tail) ---\n\(log.suffix(3000))")
        }
        first.stop()
        second?.stop()
    }

    // MARK: Helpers

    /// Registers `count` accounts on `url` (open registration); one password derivation for all.
    static func register(_ count: Int, on url: String, http: HTTPClient, password: PasswordKeys, parameters: KDFParameters,
                         prefix: String) async throws -> [BenchAccount] {
        let anonymous = BenchClient(http: http, baseURL: url)
        var accounts: [BenchAccount] = []
        for i in 0..<count {
            let keys = VaultKeys.generate()
            let keyring = try Keyring.make(keys: keys, password: password, parameters: parameters, recovery: .generate())
            let identity = DeviceIdentity.generate()
            let registration = RegisterRequest(user: "\(prefix)-\(i)", invite: nil,
                                               loginSecret: password.loginSecret.withUnsafeBytes { Array($0) },
                                               keyring: keyring, deviceName: "lockfs-bench", recoveryProof: Sodium.randomBytes(32), device: DevicePublicKeys(identity))
            let r = try await anonymous.expect(201, "register", .POST, "/v1/register",
                                               body: ByteBuffer(bytes: try registration.jsonData()), contentType: "application/json")
            guard let token = r.json["token"] as? String, let device = (r.json["device"] as? String).flatMap(DeviceID.init(hex:)) else {
                throw BenchFailure("register: no token or device in \(r.text)")
            }
            accounts.append(BenchAccount(keys: keys, token: token, head: ChainHead.genesis(of: keys.vaultID), device: device, identity: identity))
        }
        return accounts
    }

    /// Appends/s of every account appending at once (account i through urls[i mod count]); best of the rounds.
    /// The accounts' journal ends move on with every append (`accounts` is updated).
    static func appendRate(_ accounts: inout [BenchAccount], urls: [String], http: HTTPClient) async throws -> Double {
        let state = BenchAccounts(accounts)
        let tokens = accounts.map(\.token)
        defer { accounts = state.all }
        var best = 0.0
        for _ in 0..<B.rounds {
            let elapsed = try await B.timed {
                try await B.concurrently(tokens.count) { i in
                    let client = BenchClient(http: http, baseURL: urls[i % urls.count], token: tokens[i])
                    var account = state.take(i)
                    for _ in 0..<appendsPerClient {
                        let op = Operation.create(node: .random(), parent: .root, name: try Name("file-\(account.appended)"),
                                                  revision: .random(),
                                                  attributes: try NodeAttributes(mode: 0o644, mtime: Timestamp(nanoseconds: 0)),
                                                  content: .file(.empty))
                        let batch = try OperationBatch(device: account.device, createdAt: Timestamp(nanoseconds: Int64(account.appended)),
                                                       operations: [op])
                        let entry = try JournalEntry.seal(batch, keys: account.keys, baseSeq: account.seq, baseHead: account.head)
                            .signed(by: account.identity, device: account.device, vault: account.keys.vaultID)
                        (account.seq, account.head) = try await client.append(entry)
                        account.appended += 1
                    }
                    guard account.seq.rawValue == UInt64(account.appended) else {
                        throw BenchFailure("appends: seq \(account.seq) after \(account.appended) appends")
                    }
                    state.put(i, account)
                }
            }
            best = max(best, Double(tokens.count * appendsPerClient) / Bench.seconds(elapsed))
        }
        return best
    }

    /// Upload MB/s of fresh 1 MiB chunks, `streams` at a time, best of the rounds; returns the chunks too.
    func uploadRate(_ client: BenchClient, keys: VaultKeys, tag: UInt64) async throws -> (mbps: Double, chunks: [B.PreparedChunk]) {
        let rounds = try (0..<B.rounds).map { try B.seal(count: 48, size: B.bigChunk, base: base, tag: tag + UInt64($0), keys: keys) }
        var best = 0.0
        for chunks in rounds {
            best = max(best, try await B.throughput(chunks, streams: B.streams) { try await client.putChunk(id: $0.id, body: $0.body) })
        }
        return (best, Array(rounds.joined()))
    }

    /// MB/s of PUTs of fresh sealed 1 MiB chunks straight to moto, `streams` at a time, best of the rounds.
    func directPutRate(http: HTTPClient, moto: S3TestServer, bucket: String, keys: VaultKeys) async throws -> Double {
        let rounds = try (0..<B.rounds).map { try B.seal(count: 48, size: B.bigChunk, base: base, tag: 0x7000 + UInt64($0), keys: keys) }
        let prefix = keys.vaultID.hex
        var best = 0.0
        for chunks in rounds {
            best = max(best, try await B.throughput(chunks, streams: B.streams) { chunk in
                var request = HTTPClientRequest(url: "\(moto.endpoint)/\(bucket)/direct-\(prefix)/\(chunk.id)")
                request.method = .PUT
                request.headers.add(name: "Authorization", value: "AWS4-HMAC-SHA256 Credential=lockfs-bench/20250101/us-east-1/s3/aws4_request, "
                                    + "SignedHeaders=host, Signature=0")
                request.headers.add(name: "x-amz-content-sha256", value: "UNSIGNED-PAYLOAD")
                request.headers.add(name: "Content-Type", value: "application/octet-stream")
                request.body = .bytes(chunk.body)
                let response = try await http.execute(request, timeout: .seconds(120))
                _ = try await response.body.collect(upTo: 1 << 20)
                guard response.status.code == 200 else { throw BenchFailure("direct PUT to moto: HTTP \(response.status.code)") }
            })
        }
        return best
    }
}

/// The accounts' states, handed to one task each per round.
final class BenchAccounts: @unchecked Sendable {
    private var accounts: [ServerRun.BenchAccount]
    private let lock = NSLock()
    init(_ accounts: [ServerRun.BenchAccount]) { self.accounts = accounts }
    func take(_ i: Int) -> ServerRun.BenchAccount { lock.withLock { accounts[i] } }
    func put(_ i: Int, _ a: ServerRun.BenchAccount) { lock.withLock { accounts[i] = a } }
    var all: [ServerRun.BenchAccount] { lock.withLock { accounts } }
}
