import Foundation
import LockCrypto
import LockTesting
import Testing

/// `lockfs-server serve --blobs s3://…`: SQLite for metadata, moto for
/// blobs, real HTTP on loopback, and the admin commands with the same flags.
@Suite struct S3ServeTests {
    static let keys: [String: String?] = ["AWS_ACCESS_KEY_ID": "lockfs-test", "AWS_SECRET_ACCESS_KEY": "lockfs-test-secret",
                                          "AWS_SESSION_TOKEN": nil]
    static let noKeys: [String: String?] = ["AWS_ACCESS_KEY_ID": nil, "AWS_SECRET_ACCESS_KEY": nil, "AWS_SESSION_TOKEN": nil]

    /// Files under DIR/blobs other than the store's own temporary-directory bookkeeping.
    static func localBlobs(_ dir: URL) -> [String] {
        let blobs = dir.appendingPathComponent("blobs")
        guard let walker = FileManager.default.enumerator(atPath: blobs.path) else { return [] }
        return walker.compactMap { $0 as? String }.filter { !$0.hasPrefix(".tmp") }
    }

    @Test func chunksGoToTheBucketAndComeBack() async throws {
        let moto = try await S3TestServer.shared()
        let bucket = try moto.makeBucket()
        let url = "s3://\(bucket)?endpoint=\(moto.endpoint)&region=us-east-1"
        let server = try await ServerProcess.start(arguments: ["--blobs", url], environment: Self.keys)
        defer { server.stop() }
        let vault = try TestVault.make(user: "s3-frank")
        let frank = try await vault.register(on: server)
        let chunks = try (0..<5).map { try vault.chunk(String(repeating: "s3 chunk \($0) ", count: 500 * ($0 + 1))) }
        for chunk in chunks { #expect(try await frank.putChunk(chunk).status == 201) }
        // Uploaded again: already there, still 201, nothing rewritten.
        #expect(try await frank.putChunk(chunks[0]).status == 201)
        for chunk in chunks {
            let back = try await frank.getChunk(chunk.id)
            #expect(back.status == 200 && back.body == chunk.bytes, "chunk \(chunk.id): HTTP \(back.status)")
            // The object is in the bucket under VAULT/CHUNK, and nothing is in the data directory.
            #expect(try S3TestServer.rawRequest(port: moto.port, method: "HEAD",
                                                path: "/\(bucket)/\(vault.keyring.vaultID.hex)/\(chunk.id.hex)") == 200)
        }
        #expect(Self.localBlobs(server.dataDirectory) == [])
        #expect(try await frank.missing(chunks.map(\.id)) == [])

        // `user remove` with the same flags removes the vault's objects from the bucket.
        let removed = try await server.admin(["user", "remove", "s3-frank", "--yes", "--blobs", url])
        #expect(removed.status == 0, "user remove: \(removed.output)")
        for chunk in chunks {
            #expect(try S3TestServer.rawRequest(port: moto.port, method: "HEAD",
                                                path: "/\(bucket)/\(vault.keyring.vaultID.hex)/\(chunk.id.hex)") == 404)
        }
    }

    @Test func credentialsFromAFile() async throws {
        let moto = try await S3TestServer.shared()
        let bucket = try moto.makeBucket()
        let dir = try makeTemporaryDirectory("s3-creds")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("s3.credentials")
        try "[default]\naws_access_key_id = lockfs-file\naws_secret_access_key = from-a-file\n".write(to: file, atomically: true, encoding: .utf8)
        let url = "s3://\(bucket)?endpoint=\(moto.endpoint)"
        let server = try await ServerProcess.start(arguments: ["--blobs", url, "--s3-credentials", file.path], environment: Self.noKeys)
        defer { server.stop() }
        let vault = try TestVault.make(user: "s3-grace")
        let grace = try await vault.register(on: server)
        let chunk = try vault.chunk("from a credentials file")
        #expect(try await grace.putChunk(chunk).status == 201)
        #expect(try await grace.getChunk(chunk.id).body == chunk.bytes)
        #expect(try S3TestServer.rawRequest(port: moto.port, method: "HEAD", path: "/\(bucket)/\(vault.keyring.vaultID.hex)/\(chunk.id.hex)") == 200)
    }

    /// Mistakes end `serve` (and the admin commands) at once with a message and a nonzero status.
    @Test func mistakesAreClearErrors() async throws {
        let moto = try await S3TestServer.shared()
        let data = try makeTemporaryDirectory("s3-errors")
        defer { try? FileManager.default.removeItem(at: data) }
        let cases: [([String], [String: String?], String)] = [
            (["serve", "--blobs", "s3://x"], Self.keys, "not a valid bucket name"),
            (["serve", "--blobs", "s3://bucket-a?endpont=\(moto.endpoint)"], Self.keys, "unknown parameter “endpont”"),
            (["serve", "--blobs", "s3://bucket-a?endpoint=\(moto.endpoint)"], Self.noKeys, "no S3 credentials"),
            (["serve", "--blobs", "s3://bucket-a?endpoint=\(moto.endpoint)", "--s3-credentials", "/nonexistent/creds"], Self.noKeys,
             "cannot read the S3 credentials file"),
            (["serve", "--s3-credentials", "/nonexistent/creds"], Self.noKeys, "--s3-credentials goes with --blobs"),
            (["serve", "--blobs", "s3://lockfs-never-made?endpoint=\(moto.endpoint)"], Self.keys, "does not exist"),
            (["user", "list", "--blobs", "s3://bucket-a?endpoint=\(moto.endpoint)"], Self.noKeys, "no S3 credentials"),
        ]
        for (arguments, environment, message) in cases {
            let result = try await runProcess(ServerProcess.binary, arguments + ["--data", data.path, "--listen", "127.0.0.1:0"].suffix(arguments[0] == "serve" ? 4 : 2),
                                              environment: environment, timeout: .seconds(60))
            #expect(result.status != 0, "\(arguments) exited 0")
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
    }
}
