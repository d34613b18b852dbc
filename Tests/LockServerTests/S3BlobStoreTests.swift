import Foundation
import LockCrypto
import LockServer
import LockServerS3
import LockTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The S3 store beyond the shared BlobStore contract: object names, a dead
/// or silent object store, and the s3:// location and credentials.
@Suite struct S3BlobStoreTests {
    static let credentials = S3Credentials(accessKeyID: "test", secretAccessKey: "test")

    static func store(endpoint: String, bucket: String = "lockfs-none", path: String = "",
                      configuration: S3BlobStore.Configuration = .init()) throws -> S3BlobStore {
        S3BlobStore(location: try S3Location(parsing: "s3://\(bucket)\(path)?endpoint=\(endpoint)"), credentials: credentials,
                    configuration: configuration)
    }

    static func isUnavailable(_ error: any Error) -> Bool {
        if case ServerError.unavailable = error { return true }
        return false
    }

    /// Every operation on `store` throws `ServerError.unavailable` within `limit`.
    static func expectUnavailable(_ store: S3BlobStore, within limit: Duration) async {
        let key = BlobStoreConformance.key()
        let operations: [(String, @Sendable () async throws -> Void)] = [
            ("put", { try await store.put([1, 2, 3], for: key) }),
            ("get", { _ = try await store.get(key) }),
            ("exists", { _ = try await store.exists(key) }),
            ("delete", { try await store.delete(key) }),
            ("deleteAll", { try await store.deleteAll(vault: key.vault) }),
        ]
        // All at once (each try waits for its connect time-out), each timed on its own.
        await withTaskGroup(of: Void.self) { group in
            for (name, operation) in operations {
                group.addTask {
                    let start = ContinuousClock.now
                    do {
                        try await operation()
                        Issue.record("\(name) succeeded on a dead object store")
                    } catch {
                        #expect(isUnavailable(error), "\(name): \(error)")
                    }
                    let took = ContinuousClock.now - start
                    #expect(took < limit, "\(name) took \(took)")
                }
            }
        }
    }

    @Test func objectsAreNamedPrefixVaultSlashChunk() async throws {
        let server = try await S3TestServer.shared()
        let bucket = try server.makeBucket()
        let plain = try Self.store(endpoint: server.endpoint, bucket: bucket)
        let prefixed = try Self.store(endpoint: server.endpoint, bucket: bucket, path: "/tenant-a/blobs")
        let key = BlobStoreConformance.key()
        try await plain.put([7], for: key)
        try await prefixed.put([8, 8], for: key)
        #expect(plain.objectName(key) == "\(key.vault.hex)/\(key.chunk.hex)")
        #expect(prefixed.objectName(key) == "tenant-a/blobs/\(key.vault.hex)/\(key.chunk.hex)")
        // Seen from outside the store: exactly those objects.
        #expect(try S3TestServer.rawRequest(port: server.port, method: "HEAD", path: "/\(bucket)/\(key.vault.hex)/\(key.chunk.hex)") == 200)
        #expect(try S3TestServer.rawRequest(port: server.port, method: "HEAD",
                                            path: "/\(bucket)/tenant-a/blobs/\(key.vault.hex)/\(key.chunk.hex)") == 200)
        #expect(try await plain.get(key) == [7])
        #expect(try await prefixed.get(key) == [8, 8])
        // deleteAll of the prefixed store leaves the other prefix alone.
        try await prefixed.deleteAll(vault: key.vault)
        #expect(try await prefixed.get(key) == nil)
        #expect(try await plain.get(key) == [7])
    }

    @Test func aMissingBucketIsReportedWhenOpened() async throws {
        let server = try await S3TestServer.shared()
        let store = try Self.store(endpoint: server.endpoint, bucket: "lockfs-no-such-bucket")
        do {
            try await store.checkBucket()
            Issue.record("checkBucket succeeded without a bucket")
        } catch ServerError.unavailable(let message) {
            #expect(message.contains("lockfs-no-such-bucket") && message.contains("does not exist"), "\(message)")
        }
    }

    /// Nobody listens on the port: connection refused on every try.
    @Test func aClosedPortIsUnavailableWithinBoundedTime() async throws {
        let store = try Self.store(endpoint: "http://127.0.0.1:\(try S3TestServer.freePort())")
        // The defaults: 3 tries of at most 3 s to connect, plus backoff (about 10 s); a loaded
        // machine took 45 s for the five at once, so the bound is 90 s: it still catches a hang.
        await Self.expectUnavailable(store, within: .seconds(90))
    }

    /// A store that accepts connections and never answers: each try ends at its time limit.
    @Test func aSilentStoreIsUnavailableAfterItsTimeouts() async throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        try #require(listening)
        var configuration = S3BlobStore.Configuration()
        configuration.attempts = 2
        configuration.attemptTimeout = .seconds(1)
        let store = try Self.store(endpoint: "http://127.0.0.1:\(UInt16(bigEndian: addr.sin_port))", configuration: configuration)
        let start = ContinuousClock.now
        do {
            _ = try await store.get(BlobStoreConformance.key())
            Issue.record("a get succeeded on a store that never answers")
        } catch {
            #expect(Self.isUnavailable(error), "\(error)")
            if case ServerError.unavailable(let message) = error { #expect(message.contains("after 2 tries"), "\(message)") }
        }
        let took = ContinuousClock.now - start
        // At least the two time limits; at most a generous bound (a loaded test machine delays
        // timers: with the server suites in parallel on a fresh 2-core machine one run took
        // 32.7 s against a 30 s bound, the run before passed). The bound tells "gave up after
        // its tries" from "hung"; why a loaded run can take 30 s is an open question (issue note).
        #expect(took >= .seconds(2) && took < .seconds(90), "2 tries of 1 s took \(took)")
    }

    /// moto goes away after a blob was stored: reads and writes fail as unavailable, quickly.
    @Test func aKilledStoreIsUnavailable() async throws {
        let server = try await S3TestServer.start()
        let bucket = try server.makeBucket()
        let store = try Self.store(endpoint: server.endpoint, bucket: bucket)
        let key = BlobStoreConformance.key()
        try await store.put([1, 2, 3], for: key)
        #expect(try await store.get(key) == [1, 2, 3])
        server.stop()
        await Self.expectUnavailable(store, within: .seconds(90))
    }
}

/// `s3://` locations and credentials: what is accepted, and the message for what is not.
@Suite struct S3ConfigurationTests {
    @Test func locations() throws {
        let moto = try S3Location(parsing: "s3://lockfs-blobs?endpoint=http://127.0.0.1:9000&region=eu-west-1")
        #expect(moto.bucket == "lockfs-blobs" && moto.prefix == "" && moto.host == "127.0.0.1" && moto.port == 9000)
        #expect(moto.region == "eu-west-1" && moto.scheme == "http" && !moto.virtualHosted)

        let aws = try S3Location(parsing: "s3://my.bucket-1/some/prefix")
        #expect(aws.host == "s3.us-east-1.amazonaws.com" && aws.scheme == "https" && aws.virtualHosted)
        #expect(aws.prefix == "some/prefix/" && aws.region == "us-east-1")

        let virtual = try S3Location(parsing: "s3://bkt?endpoint=https://objects.example.net&style=virtual&region=garage")
        #expect(virtual.virtualHosted && virtual.host == "objects.example.net" && virtual.region == "garage")
    }

    @Test(arguments: [
        ("http://bucket", "is not an s3:// URL"),
        ("s3://", "names no bucket"),
        ("s3://?endpoint=http://h:1", "names no bucket"),
        ("s3://Bad_Bucket", "not a valid bucket name"),
        ("s3://ab", "not a valid bucket name"),
        ("s3://bkt?endpoint=ftp://host", "endpoint must be http(s)://HOST[:PORT]"),
        ("s3://bkt?endpoint=http://host:9000/path", "endpoint must be http(s)://HOST[:PORT]"),
        ("s3://bkt?endpoint=", "endpoint= has no value"),
        ("s3://bkt?foo=1", "unknown parameter “foo”"),
        ("s3://bkt?style=sideways", "style must be path or virtual"),
        ("s3://bkt?region=us%20east", "is not a region name"),
        ("s3://key:secret@bkt", "must not contain credentials"),
        ("s3://bkt:9000", "put the port in endpoint="),
    ])
    func badLocations(_ text: String, _ message: String) {
        #expect(throws: S3ConfigError.self) { try S3Location(parsing: text) }
        do {
            _ = try S3Location(parsing: text)
        } catch {
            #expect(error.message.contains(message), "\(text): \(error.message)")
        }
    }

    @Test func credentialsFromTheEnvironment() throws {
        let full = try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_SESSION_TOKEN": "tok"])
        #expect(full == S3Credentials(accessKeyID: "AKID", secretAccessKey: "s3cr3t-value", sessionToken: "tok"))
        #expect(!"\(full)".contains("s3cr3t") && !"\(full)".contains("tok"))
        for env in [[:], ["AWS_ACCESS_KEY_ID": "AKID"], ["AWS_SECRET_ACCESS_KEY": "s"], ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "s"]] {
            #expect(throws: S3ConfigError.self) { try S3Credentials.fromEnvironment(env) }
        }
    }

    @Test func credentialsFromAFile() throws {
        let dir = try makeTemporaryDirectory("s3creds")
        defer { try? FileManager.default.removeItem(at: dir) }
        let shared = dir.appendingPathComponent("credentials")
        try """
            # an AWS shared-credentials file
            [other]
            aws_access_key_id = WRONG
            [default]
            aws_access_key_id = AKIDFILE
            aws_secret_access_key = "se cret"
            aws_session_token = tok
            """.write(to: shared, atomically: true, encoding: .utf8)
        #expect(try S3Credentials.fromFile(shared.path) == S3Credentials(accessKeyID: "AKIDFILE", secretAccessKey: "se cret", sessionToken: "tok"))

        let plain = dir.appendingPathComponent("env")
        try "AWS_ACCESS_KEY_ID=AK2\nAWS_SECRET_ACCESS_KEY=S2\n".write(to: plain, atomically: true, encoding: .utf8)
        #expect(try S3Credentials.fromFile(plain.path) == S3Credentials(accessKeyID: "AK2", secretAccessKey: "S2"))

        let partial = dir.appendingPathComponent("partial")
        try "[default]\naws_access_key_id = AK3\n".write(to: partial, atomically: true, encoding: .utf8)
        #expect(throws: S3ConfigError.self) { try S3Credentials.fromFile(partial.path) }
        #expect(throws: S3ConfigError.self) { try S3Credentials.fromFile(dir.appendingPathComponent("missing").path) }
    }
}
