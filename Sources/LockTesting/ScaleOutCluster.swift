import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Several `lockfs-server serve` processes sharing one PostgreSQL database
/// (in the test process's shared throwaway cluster) and one S3 bucket (in
/// the shared moto server): the scale-out set-up of docs/operations.md on
/// loopback. Each instance has its own data directory, port and pool; they
/// share nothing else.
///
/// Without PostgreSQL or moto installed, `start` throws a message naming
/// `make test`: the tests that use it fail, they never skip.
public final class ScaleOutCluster: @unchecked Sendable {
    /// S3 credentials for moto (which checks no signature, but the store needs some).
    public static let s3Environment: [String: String?] = ["AWS_ACCESS_KEY_ID": "lockfs-test",
                                                          "AWS_SECRET_ACCESS_KEY": "lockfs-test-secret",
                                                          "AWS_SESSION_TOKEN": nil]

    public let postgres: PostgresTestServer
    public let database: String
    public let moto: S3TestServer
    public let bucket: String
    /// The `serve` flags every instance gets (--metadata, --pg-passfile, --blobs).
    public let arguments: [String]
    public let instances: [ServerProcess]
    private let passfileDirectory: URL

    /// Starts `count` instances on a fresh database and a fresh bucket, and
    /// waits until each has its LISTEN connection (so long-polls wake across instances).
    /// - Parameter postgres: the cluster to use (default: the shared one).
    public static func start(instances count: Int, name: String = "scale",
                             postgres: PostgresTestServer? = nil) async throws -> ScaleOutCluster {
        let pg: PostgresTestServer
        if let postgres { pg = postgres } else { pg = try await PostgresTestServer.shared() }
        let moto = try await S3TestServer.shared()
        let database = try await pg.createDatabase(name)
        let bucket = try moto.makeBucket()
        let dir = try makeTemporaryDirectory("pgpass")
        let passfile = dir.appendingPathComponent("pgpass").path
        try "127.0.0.1:\(pg.port):*:\(pg.user):\(pg.password)\n".write(toFile: passfile, atomically: true, encoding: .utf8)
        chmod(passfile, 0o600)
        let arguments = ["--metadata", pg.url(database: database), "--pg-passfile", passfile,
                         "--blobs", "s3://\(bucket)?endpoint=\(moto.endpoint)&region=us-east-1"]
        // One after the other: the first migrates, the others find the schema made.
        var servers: [ServerProcess] = []
        for _ in 0..<count {
            servers.append(try await ServerProcess.start(arguments: arguments, environment: s3Environment))
        }
        let cluster = ScaleOutCluster(postgres: pg, database: database, moto: moto, bucket: bucket, arguments: arguments,
                                      instances: servers, passfileDirectory: dir)
        try await cluster.waitForListeners(count)
        return cluster
    }

    private init(postgres: PostgresTestServer, database: String, moto: S3TestServer, bucket: String, arguments: [String],
                 instances: [ServerProcess], passfileDirectory: URL) {
        self.postgres = postgres
        self.database = database
        self.moto = moto
        self.bucket = bucket
        self.arguments = arguments
        self.instances = instances
        self.passfileDirectory = passfileDirectory
    }

    /// Polls pg_stat_activity until `count` LISTEN connections (application
    /// name "lockfs-server listen") are open on the database.
    public func waitForListeners(_ count: Int, within limit: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + limit
        var seen = ""
        while ContinuousClock.now < deadline {
            seen = (try? await postgres.psql("""
                SELECT count(*) FROM pg_stat_activity
                WHERE datname = '\(database)' AND application_name = 'lockfs-server listen'
                """)) ?? ""
            if seen == "\(count)\n" { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestFailure("expected \(count) LISTEN connections on \(database), found \(seen)")
    }

    /// Whether the bucket holds `VAULTHEX/CHUNKHEX` (HEAD straight to moto).
    public func objectExists(vault: String, chunk: String) throws -> Bool {
        try S3TestServer.rawRequest(port: moto.port, method: "HEAD", path: "/\(bucket)/\(vault)/\(chunk)") == 200
    }

    /// Stops every instance (SIGTERM) and drops the database.
    public func stop() async {
        for server in instances { server.stop() }
        try? await postgres.dropDatabase(database)
        try? FileManager.default.removeItem(at: passfileDirectory)
    }
}
