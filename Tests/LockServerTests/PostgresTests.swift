import Foundation
import LockCrypto
import LockServer
import LockServerPostgres
import LockTesting
import LockWire
import Synchronization
import Testing

/// Databases in the test process's throwaway PostgreSQL cluster.
enum PostgresFixture {
    typealias F = MetadataFixture

    /// Store settings for `database` over TCP with the superuser's password
    /// (SCRAM): a small pool, short timeouts.
    static func settings(_ server: PostgresTestServer, _ database: String) -> PostgresSettings {
        var s = PostgresSettings(endpoint: .tcp(host: "127.0.0.1", port: server.port), user: server.user, database: database,
                                 tls: .disable, password: server.password)
        s.maxConnections = 4
        s.acquireTimeout = .seconds(3)
        s.connectTimeout = .seconds(3)
        return s
    }

    /// A fresh database in the shared cluster, and settings for it.
    static func freshDatabase(_ prefix: String) async throws -> (PostgresTestServer, String, PostgresSettings) {
        let server = try await PostgresTestServer.shared()
        let database = try await server.createDatabase(prefix)
        return (server, database, settings(server, database))
    }

    /// A passfile (mode 0600) with the server's password for 127.0.0.1.
    static func passfile(_ server: PostgresTestServer) throws -> String {
        let dir = try makeTemporaryDirectory("pgpass")
        let path = dir.appendingPathComponent("pgpass").path
        try "# test cluster\n127.0.0.1:\(server.port):*:\(server.user):\(server.password)\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        return path
    }

    /// Polls `condition` until it holds or `limit` passes.
    static func eventually(within limit: Duration, _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }
}

/// The PostgreSQL store beyond the conformance suite: URL and passfile
/// parsing, migrations, concurrency across instances, LISTEN/NOTIFY, and
/// a PostgreSQL restart while serving. All against a real PostgreSQL.
@Suite struct PostgresStoreTests {
    typealias F = MetadataFixture
    typealias P = PostgresFixture

    // MARK: Settings

    @Test func parsesURLs() throws {
        let tcp = try PostgresSettings(url: "postgres://lockfs@db.example.com:6543/meta?sslmode=require")
        #expect(tcp.endpoint == .tcp(host: "db.example.com", port: 6543))
        #expect(tcp.user == "lockfs" && tcp.database == "meta" && tcp.tls == .require)
        let defaults = try PostgresSettings(url: "postgresql://a%40b@10.0.0.5/my%20db")
        #expect(defaults.endpoint == .tcp(host: "10.0.0.5", port: 5432))
        #expect(defaults.user == "a@b" && defaults.database == "my db" && defaults.tls == .prefer)
        let socket = try PostgresSettings(url: "postgres://lockfs@/meta?host=/run/pg&port=5433")
        #expect(socket.endpoint == .socket(directory: "/run/pg", port: 5433))
        let local = try PostgresSettings(url: "postgres://lockfs@/meta")
        #expect(local.endpoint == .socket(directory: "/var/run/postgresql", port: 5432))
        let v6 = try PostgresSettings(url: "postgres://u@[::1]:7000/d?sslmode=verify-full")
        #expect(v6.endpoint == .tcp(host: "::1", port: 7000) && v6.tls == .verifyFull)

        let bad: [(String, String)] = [
            ("postgres://u:secret@h/d", "password in the URL"),
            ("mysql://u@h/d", "scheme"),
            ("postgres://h/d", "user name"),
            ("postgres://u@h", "database name"),
            ("postgres://u@h/d?sslmode=always", "sslmode must be one of"),
            ("postgres://u@h/d?colour=blue", "unknown parameter colour"),
            ("postgres://u@h/d?host=relative", "absolute path"),
            ("postgres://u@h:0/d", "port"),
        ]
        for (url, why) in bad {
            do {
                _ = try PostgresSettings(url: url)
                Issue.record("\(url) was accepted")
            } catch let e as PostgresSettingsError {
                #expect(e.description.contains(why), "\(url): \(e.description)")
                #expect(!e.description.contains("secret"), "the message repeats the password: \(e.description)")
            }
        }
    }

    @Test func passfileLookupFollowsLibpq() throws {
        let s = try PostgresSettings(url: "postgres://alice@db:5432/meta")
        let text = """
            # comment
            other:5432:meta:alice:wrong-host
            db:5433:meta:alice:wrong-port
            db:5432:*:bob:wrong-user
            db:5432:*:alice:pa\\:ss\\\\word
            *:*:*:*:fallback
            """
        #expect(PostgresPassfile.password(for: s, passfile: text) == "pa:ss\\word")
        #expect(PostgresPassfile.password(for: try PostgresSettings(url: "postgres://carol@x/y"), passfile: text) == "fallback")
        #expect(PostgresPassfile.password(for: s, passfile: "db:5432:meta:bob:x\n") == nil)
        // The default socket directory also matches "localhost".
        let socket = try PostgresSettings(url: "postgres://alice@/meta")
        #expect(PostgresPassfile.password(for: socket, passfile: "localhost:5432:meta:alice:sock\n") == "sock")

        // PGPASSWORD wins; a passfile readable by others is refused with the fix.
        let dir = try makeTemporaryDirectory("passfile")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("pgpass").path
        try "db:5432:meta:alice:from-file\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        #expect(throws: PostgresSettingsError.self) { try PostgresPassfile.resolve(for: s, explicitPath: path, environment: [:]) }
        chmod(path, 0o600)
        #expect(try PostgresPassfile.resolve(for: s, explicitPath: path, environment: [:]) == "from-file")
        #expect(try PostgresPassfile.resolve(for: s, explicitPath: nil, environment: ["PGPASSFILE": path]) == "from-file")
        #expect(try PostgresPassfile.resolve(for: s, explicitPath: path, environment: ["PGPASSWORD": "env"]) == "env")
        #expect(try PostgresPassfile.resolve(for: s, explicitPath: nil, environment: ["HOME": dir.path]) == nil)
    }

    // MARK: Migrations

    /// Several instances starting at once on a fresh database: all succeed,
    /// each migration is applied once, and the schema is complete.
    @Test func concurrentMigrationsOnAFreshDatabase() async throws {
        let (server, database, settings) = try await P.freshDatabase("migrate")
        defer { Task { try? await server.dropDatabase(database) } }
        let stores = try await withThrowingTaskGroup(of: PostgresMetadataStore.self) { group in
            for _ in 0..<4 { group.addTask { try await PostgresMetadataStore.open(settings) } }
            return try await group.reduce(into: [PostgresMetadataStore]()) { $0.append($1) }
        }
        #expect(stores.count == 4)
        #expect(try await server.psql("SELECT version FROM schema_migrations ORDER BY version", database: database) == "1\n2\n3\n4\n5\n")
        let tables = try await server.psql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name", database: database)
        #expect(tables.split(separator: "\n") == ["accounts", "checkpoints", "chunks", "devices", "entries", "entry_refs",
                                                   "invites", "schema_migrations", "settings"])
        // Every instance works on the one schema.
        let (alice, keys, _) = try await F.register(stores[0], "alice")
        _ = try await F.appendChain(stores[1], alice, keys, count: 2)
        #expect(try await stores[3].entries(account: alice.id, after: .start, limit: 10).latest == JournalSeq(2))
        // Opening again migrates nothing.
        _ = try await PostgresMetadataStore.open(settings)
        #expect(try await server.psql("SELECT count(*) FROM schema_migrations", database: database) == "5\n")
        for s in stores { await s.close() }
    }

    /// A database whose schema is newer than this build is refused with a clear message.
    @Test func refusesANewerSchema() async throws {
        let (server, database, settings) = try await P.freshDatabase("newer")
        defer { Task { try? await server.dropDatabase(database) } }
        await (try PostgresMetadataStore.open(settings)).close()
        try await server.psql("INSERT INTO schema_migrations (version) VALUES (99)", database: database)
        do {
            _ = try await PostgresMetadataStore.open(settings)
            Issue.record("a schema of version 99 was accepted")
        } catch let e as PostgresSettingsError {
            #expect(e.description.contains("version 99") && e.description.contains("upgrade lockfs-server"), "\(e)")
        }
    }

    // MARK: Concurrent appends across instances

    /// Three instances (three pools) appending to one vault at once: one
    /// chain 1…N, each head on the one before; nothing forked.
    @Test func concurrentAppendsThroughThreeInstancesMakeOneChain() async throws {
        let (server, database, settings) = try await P.freshDatabase("chain")
        defer { Task { try? await server.dropDatabase(database) } }
        var stores: [PostgresMetadataStore] = []
        for _ in 0..<3 { stores.append(try await PostgresMetadataStore.open(settings)) }
        let (alice, keys, device) = try await F.register(stores[0], "alice")
        let writers = 9, perWriter = 8
        let genesis = ChainHead.genesis(of: alice.vaultID)
        let results = try await withThrowingTaskGroup(of: [StoredEntry].self) { group in
            for w in 0..<writers {
                let store = stores[w % stores.count]
                group.addTask {
                    var mine: [StoredEntry] = []
                    var base = (JournalSeq.start, genesis)
                    for _ in 0..<perWriter {
                        let e = try F.entry(keys, base.0, base.1)
                        let s = try await store.append(account: alice.id, vault: alice.vaultID, entry: e, bytes: e.encoded,
                                                       references: [], device: device.id, now: F.now)
                        mine.append(s)
                        base = (s.seq, s.head)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [StoredEntry]()) { $0 += $1 }
        }
        let n = writers * perWriter
        #expect(results.map(\.seq.rawValue).sorted() == Array(1...UInt64(n)))
        let page = try await stores[2].entries(account: alice.id, after: .start, limit: 1000)
        #expect(page.items.map(\.seq.rawValue) == Array(1...UInt64(n)))
        #expect(F.chainVerifies(page.items, genesis: genesis))
        let stored = Dictionary(uniqueKeysWithValues: page.items.map { ($0.seq, $0) })
        for r in results { #expect(stored[r.seq]?.head == r.head && stored[r.seq]?.bytes == r.bytes) }
        for s in stores { await s.close() }
    }

    // MARK: LISTEN / NOTIFY

    /// An append through one instance wakes a waiter of another within a
    /// second; an append to another account does not; after the LISTEN
    /// connection is killed it reconnects, wakes every waiter once, and
    /// wakes them again on the next append.
    @Test func appendsWakeWaitersOfAnotherInstance() async throws {
        let (server, database, settings) = try await P.freshDatabase("listen")
        defer { Task { try? await server.dropDatabase(database) } }
        let a = try await PostgresMetadataStore.open(settings)
        let b = try await PostgresMetadataStore.open(settings)
        let (alice, keys, device) = try await F.register(b, "alice")
        let (bob, bobKeys, bobDevice) = try await F.register(b, "bob")

        let notifier = JournalNotifier()
        let events = Task { await a.runJournalEvents(into: notifier) }
        defer { events.cancel() }
        // Listening: the start-up notifyAll has bumped every generation.
        let nobody = AccountID(-1)
        try #require(await P.eventually(within: .seconds(10)) { notifier.generation(of: nobody) > 0 }, "the LISTEN connection did not start")

        var head = (JournalSeq.start, ChainHead.genesis(of: alice.vaultID))
        func appendAlice() async throws {
            let e = try F.entry(keys, head.0, head.1)
            let s = try await b.append(account: alice.id, vault: alice.vaultID, entry: e, bytes: e.encoded, references: [],
                                       device: device.id, now: F.now)
            head = (s.seq, s.head)
        }

        // One append through b wakes alice's waiter on a.
        for _ in 0..<3 {
            let before = notifier.generation(of: alice.id)
            let start = ContinuousClock.now
            // The mechanism is a wake-up long before the 30 s time-out (5 s is
            // 5× what a loaded machine took: 1.06 s once against an old 1 s bound).
            async let woke: Void = notifier.wait(for: alice.id, after: before, timeout: .seconds(30))
            try await appendAlice()
            await woke
            let elapsed = ContinuousClock.now - start
            #expect(notifier.generation(of: alice.id) > before, "the waiter timed out: no notification arrived")
            #expect(elapsed < .seconds(5), "woken after \(elapsed)")
        }

        // bob's append does not wake alice's waiter.
        let aliceBefore = notifier.generation(of: alice.id), bobBefore = notifier.generation(of: bob.id)
        let bobEntry = try F.entry(bobKeys, .start, ChainHead.genesis(of: bob.vaultID))
        _ = try await b.append(account: bob.id, vault: bob.vaultID, entry: bobEntry, bytes: bobEntry.encoded, references: [],
                               device: bobDevice.id, now: F.now)
        #expect(await P.eventually(within: .seconds(2)) { notifier.generation(of: bob.id) > bobBefore })
        #expect(notifier.generation(of: alice.id) == aliceBefore)

        // Kill the LISTEN connection: the store reconnects and wakes everyone once.
        let epochBefore = notifier.generation(of: nobody)
        let killed = try await server.psql("""
            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE datname = '\(database)' AND application_name = '\(PostgresMetadataStore.listenApplicationName)'
            """)
        #expect(killed == "1\n", "expected one LISTEN connection, found \(killed)")
        #expect(await P.eventually(within: .seconds(5)) { notifier.generation(of: nobody) > epochBefore },
                "no reconnect (and wake-all) after the LISTEN connection was killed")
        let before = notifier.generation(of: alice.id)
        let start = ContinuousClock.now
        async let woke: Void = notifier.wait(for: alice.id, after: before, timeout: .seconds(5))
        try await appendAlice()
        await woke
        #expect(notifier.generation(of: alice.id) > before)
        #expect(ContinuousClock.now - start < .seconds(1))

        events.cancel()
        await events.value
        await a.close()
        await b.close()
    }

    // MARK: PostgreSQL restart

    /// PostgreSQL stops and starts again while a writer appends: calls fail
    /// with the retryable `unavailable` (never another error, never a wrong
    /// answer), and the same store recovers without being reopened.
    @Test func restartGivesUnavailableThenRecovers() async throws {
        let server = try await PostgresTestServer.start()
        defer { server.destroy() }
        let database = try await server.createDatabase("restart")
        var settings = P.settings(server, database)
        settings.acquireTimeout = .seconds(2)
        settings.operationTimeout = .seconds(3)
        let store = try await PostgresMetadataStore.open(settings)
        let (alice, keys, device) = try await F.register(store, "alice")
        _ = try await F.appendChain(store, alice, keys, count: 3)

        let log = WriterLog()
        let writer = Task {
            while !Task.isCancelled {
                do {
                    // Base each entry on what the store says now (an append whose
                    // answer was lost may have committed: re-read, never guess).
                    let latest = try await store.entries(account: alice.id, after: .start, limit: 1000).items.last
                    let e = try F.entry(keys, latest?.seq ?? .start, latest?.head ?? ChainHead.genesis(of: alice.vaultID))
                    let s = try await store.append(account: alice.id, vault: alice.vaultID, entry: e, bytes: e.encoded,
                                                   references: [], device: device.id, now: F.now)
                    log.record(.success(s))
                } catch let e as ServerError where e.code == "unavailable" {
                    log.record(.unavailable)
                    try? await Task.sleep(for: .milliseconds(50))
                } catch is CancellationError {
                    break
                } catch {
                    log.record(.other("\(error)"))
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
        }
        defer { writer.cancel() }
        try #require(await P.eventually(within: .seconds(10)) { log.successes >= 3 })

        try await server.stopServer()
        // While it is down: unavailable, within the acquire timeout (plus slack).
        let start = ContinuousClock.now
        let down = await F.serverError { try await store.entries(account: alice.id, after: .start, limit: 10) }
        #expect(down?.code == "unavailable", "while PostgreSQL is down: \(String(describing: down))")
        #expect(ContinuousClock.now - start < .seconds(6))
        #expect(await P.eventually(within: .seconds(10)) { log.unavailable > 0 })
        let successesWhileDown = log.successes

        try await server.startServer()
        // Recovery without reopening the store.
        #expect(await P.eventually(within: .seconds(30)) {
            (try? await store.entries(account: alice.id, after: .start, limit: 1)) != nil
        }, "the store did not recover after PostgreSQL came back")
        #expect(await P.eventually(within: .seconds(30)) { log.successes >= successesWhileDown + 3 })
        writer.cancel()
        await writer.value

        #expect(log.others.isEmpty, "errors other than unavailable: \(log.others.prefix(3))")
        let page = try await store.entries(account: alice.id, after: .start, limit: 1000)
        #expect(F.chainVerifies(page.items, genesis: ChainHead.genesis(of: alice.vaultID)))
        let stored = Dictionary(uniqueKeysWithValues: page.items.map { ($0.seq, $0) })
        for s in log.stored {
            #expect(stored[s.seq]?.head == s.head && stored[s.seq]?.bytes == s.bytes, "seq \(s.seq) was acknowledged but is not stored so")
        }
        await store.close()
    }
}

/// What the writer of the restart test saw.
final class WriterLog: Sendable {
    enum Outcome { case success(StoredEntry), unavailable, other(String) }
    private let outcomes = Mutex([Outcome]())
    func record(_ o: Outcome) { outcomes.withLock { $0.append(o) } }
    var stored: [StoredEntry] { outcomes.withLock { $0.compactMap { if case .success(let s) = $0 { s } else { nil } } } }
    var successes: Int { stored.count }
    var unavailable: Int { outcomes.withLock { $0.filter { if case .unavailable = $0 { true } else { false } }.count } }
    var others: [String] { outcomes.withLock { $0.compactMap { if case .other(let m) = $0 { m } else { nil } } } }
}

/// `lockfs-server serve --metadata postgres://…` as processes, over real HTTP.
@Suite struct PostgresServeTests {
    typealias P = PostgresFixture

    /// One server on PostgreSQL (password from --pg-passfile, blobs under
    /// --data): register, upload, append, pull; the journal is in PostgreSQL
    /// and the admin commands see the same accounts.
    @Test func servesWithPostgresMetadata() async throws {
        let pg = try await PostgresTestServer.shared()
        let database = try await pg.createDatabase("serve")
        defer { Task { try? await pg.dropDatabase(database) } }
        let passfile = try P.passfile(pg)
        let server = try await ServerProcess.start(arguments: ["--metadata", pg.url(database: database), "--pg-passfile", passfile])
        defer { server.stop() }

        let vault = try TestVault.make(user: "alice")
        let alice = try await vault.register(on: server)
        let chunk = try vault.chunk("stored in a file, recorded in PostgreSQL")
        #expect(try await alice.putChunk(chunk).status == 201)
        let e1 = try vault.entry(creating: "a.txt", baseSeq: .start, baseHead: vault.genesis)
        let r1 = try await alice.append(e1, references: [chunk.id])
        #expect(r1.status == 201, "append: \(String(decoding: r1.body, as: UTF8.self))")
        let missing = try vault.chunk("never uploaded")
        let e2 = try vault.entry(creating: "b.txt", baseSeq: JournalSeq(1), baseHead: vault.genesis.next(seq: 1, entry: e1.encoded))
        let refused = try await alice.append(e2, references: [missing.id])
        #expect(refused.status == 409 && refused.errorCode == "missing_chunks")
        let page = try await alice.pull(after: 0)
        #expect(page.items.map(\.seq) == [JournalSeq(1)])
        #expect(page.items.first?.head == vault.genesis.next(seq: 1, entry: e1.encoded))
        #expect(try await alice.getChunk(chunk.id).body == chunk.bytes)

        // The metadata is in PostgreSQL, not in a SQLite file under --data.
        #expect(try await pg.psql("SELECT count(*) FROM entries", database: database) == "1\n")
        #expect(try await pg.psql("SELECT name FROM accounts", database: database) == "alice\n")
        #expect(!FileManager.default.fileExists(atPath: server.dataDirectory.appendingPathComponent("metadata.sqlite").path))
        let list = try await server.admin(["user", "list"])
        #expect(list.status == 0 && list.output.contains("alice"), "user list: \(list.output)")

        // A restarted server finds everything again.
        try await server.restart()
        let again = APIClient(baseURL: server.baseURL, token: alice.token)
        #expect(try await again.pull(after: 0).items.count == 1)
    }

    /// Bad --metadata values end the command with a message and a nonzero exit.
    @Test func badMetadataURLsAreRefusedClearly() async throws {
        let cases: [([String], String)] = [
            (["serve", "--metadata", "postgres://u:hunter2@127.0.0.1/d"], "PGPASSWORD"),
            (["serve", "--metadata", "mysql://u@127.0.0.1/d"], "postgres://"),
            (["user", "list", "--metadata", "postgres://u@127.0.0.1/d?sslmode=maybe"], "sslmode"),
            (["serve", "--pg-passfile", "/nonexistent"], "--pg-passfile needs --metadata"),
        ]
        for (args, expected) in cases {
            let dir = try makeTemporaryDirectory("badurl")
            defer { try? FileManager.default.removeItem(at: dir) }
            let r = try await runProcess(ServerProcess.binary, args + ["--data", dir.path], timeout: .seconds(30))
            #expect(r.status != 0, "\(args) exited 0")
            #expect(r.stderr.contains(expected), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("hunter2"), "the password was echoed: \(r.stderr)")
        }
        // A server that cannot reach PostgreSQL says so and exits nonzero.
        let port = try await PostgresTestServer.shared().port + 1
        let dir = try makeTemporaryDirectory("unreachable")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try await runProcess(ServerProcess.binary, ["serve", "--data", dir.path, "--listen", "127.0.0.1:0",
                                                            "--metadata", "postgres://lockfs@127.0.0.1:\(port)/none?sslmode=disable"],
                                     timeout: .seconds(30))
        #expect(r.status != 0)
        #expect(r.stderr.contains("cannot connect to PostgreSQL"), "\(r.stderr)")
    }

    /// Two lockfs-server processes on one database: a long-poll on the first
    /// returns within a second of an append through the second.
    @Test func twoInstancesWakeEachOthersLongPolls() async throws {
        let pg = try await PostgresTestServer.shared()
        let database = try await pg.createDatabase("twoinstances")
        defer { Task { try? await pg.dropDatabase(database) } }
        let passfile = try P.passfile(pg)
        let args = ["--metadata", pg.url(database: database), "--pg-passfile", passfile]
        let first = try await ServerProcess.start(arguments: args)
        defer { first.stop() }
        let second = try await ServerProcess.start(arguments: args)
        defer { second.stop() }
        // Both LISTEN connections are up.
        let listening = await P.eventually(within: .seconds(10)) {
            (try? await pg.psql("""
                SELECT count(*) FROM pg_stat_activity
                WHERE datname = '\(database)' AND application_name = '\(PostgresMetadataStore.listenApplicationName)'
                """)) == "2\n"
        }
        try #require(listening, "expected one LISTEN connection per instance")

        let vault = try TestVault.make(user: "alice")
        let viaFirst = try await vault.register(on: first)
        let viaSecond = APIClient(baseURL: second.baseURL, token: viaFirst.token)
        var head = (JournalSeq.start, vault.genesis)
        for round in 1...3 {
            let after = head.0.rawValue
            let poll = Task { try await viaFirst.pull(after: after, wait: 20) }
            // The poll is open on the first instance.
            try #require(await first.longPollsOpen(1), "the long-poll did not open")
            let entry = try vault.entry(creating: "f\(round)", baseSeq: head.0, baseHead: head.1)
            let start = ContinuousClock.now
            let r = try await viaSecond.append(entry, references: [])
            #expect(r.status == 201)
            let page = try await poll.value
            let elapsed = ContinuousClock.now - start
            #expect(page.items.map(\.seq) == [head.0.next], "round \(round): \(page.items.map(\.seq))")
            // Woken by the append, not by the 20 s wait (5× what a loaded machine took).
            #expect(elapsed < .seconds(8), "round \(round): the long-poll returned \(elapsed) after the append")
            head = (head.0.next, head.1.next(seq: head.0.next.rawValue, entry: entry.encoded))
        }
    }
}
