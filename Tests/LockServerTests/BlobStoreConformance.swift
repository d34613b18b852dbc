import Foundation
import LockTesting
import LockCrypto
import LockServer
import LockServerS3
import Testing

// MARK: - Implementations under test

/// One `BlobStore` implementation the conformance suite runs on.
///
/// To run the suite on a new implementation (S3-compatible, issue 7), add
/// ONE line to `all`: a factory returning an EMPTY store (a fresh bucket or
/// prefix) and a cleanup.
struct BlobStoreFactory: Sendable, CustomTestStringConvertible {
    let name: String
    let make: @Sendable () async throws -> BlobStoreUnderTest

    var testDescription: String { name }

    /// Every implementation; each conformance test runs once per entry.
    static let all: [BlobStoreFactory] = [
        .file,
        .s3,
    ]

    /// Files in a fresh temporary directory.
    static let file = BlobStoreFactory(name: "FileBlobStore") {
        let dir = try makeTemporaryDirectory("blob-conformance")
        return BlobStoreUnderTest(store: try FileBlobStore(root: dir), cleanup: { try? FileManager.default.removeItem(at: dir) })
    }

    /// Objects in a fresh bucket of the test process's moto server (S3TestServer).
    static let s3 = BlobStoreFactory(name: "S3BlobStore") {
        let server = try await S3TestServer.shared()
        let bucket = try server.makeBucket()
        let location = try S3Location(parsing: "s3://\(bucket)?endpoint=\(server.endpoint)&region=us-east-1")
        let store = S3BlobStore(location: location, credentials: S3Credentials(accessKeyID: "test", secretAccessKey: "test"))
        try await store.checkBucket()
        return BlobStoreUnderTest(store: store, cleanup: {})
    }

    /// Makes a fresh store, runs `body` on it, and removes its storage.
    func run(_ body: (any BlobStore) async throws -> Void) async throws {
        let subject = try await make()
        do {
            try await body(subject.store)
        } catch {
            await subject.cleanup()
            throw error
        }
        await subject.cleanup()
    }
}

struct BlobStoreUnderTest: Sendable {
    let store: any BlobStore
    let cleanup: @Sendable () async -> Void
}

// MARK: - The parameterised tests

/// The `BlobStore` contract (Sources/LockServer/BlobStore.swift), written
/// once in `BlobStoreConformance` and run on every implementation.
@Suite struct BlobStoreConformanceTests {
    @Test(arguments: BlobStoreFactory.all)
    func putGetExistsDelete(_ factory: BlobStoreFactory) async throws {
        try await factory.run { try await BlobStoreConformance.putGetExistsDelete($0) }
    }

    @Test(arguments: BlobStoreFactory.all)
    func keysAreVaultAndChunk(_ factory: BlobStoreFactory) async throws {
        try await factory.run { try await BlobStoreConformance.keysAreVaultAndChunk($0) }
    }

    @Test(arguments: BlobStoreFactory.all)
    func deleteAllRemovesOneVault(_ factory: BlobStoreFactory) async throws {
        try await factory.run { try await BlobStoreConformance.deleteAllRemovesOneVault($0) }
    }

    @Test(arguments: BlobStoreFactory.all)
    func putOfAnExistingKeyKeepsTheFirstBlob(_ factory: BlobStoreFactory) async throws {
        try await factory.run { try await BlobStoreConformance.putOfAnExistingKeyKeepsTheFirstBlob($0) }
    }

    @Test(arguments: BlobStoreFactory.all)
    func largeBlob(_ factory: BlobStoreFactory) async throws {
        try await factory.run { try await BlobStoreConformance.largeBlob($0) }
    }

    @Test(arguments: BlobStoreFactory.all)
    func concurrentPuts(_ factory: BlobStoreFactory) async throws {
        try await factory.run { try await BlobStoreConformance.concurrentPuts($0) }
    }

    @Test(arguments: BlobStoreFactory.all)
    func batchPuts(_ factory: BlobStoreFactory) async throws {
        try await factory.run { try await BlobStoreConformance.batchPuts($0) }
    }
}

// MARK: - The suite, once, over `any BlobStore`

enum BlobStoreConformance {
    static func key(_ vault: VaultID = .random()) -> BlobKey { BlobKey(vault: vault, chunk: try! ChunkID(bytes: Sodium.randomBytes(32))) }

    static func putGetExistsDelete(_ store: any BlobStore) async throws {
        let k = key()
        let bytes = Sodium.randomBytes(1000)
        // Missing: nil and false, and deleting it is no error.
        #expect(try await store.get(k) == nil)
        #expect(try await store.exists(k) == false)
        try await store.delete(k)

        try await store.put(bytes, for: k)
        #expect(try await store.get(k) == bytes)
        #expect(try await store.exists(k) == true)

        try await store.delete(k)
        #expect(try await store.get(k) == nil)
        #expect(try await store.exists(k) == false)
        try await store.delete(k)

        // A deleted key can be stored again, with other bytes.
        let again = Sodium.randomBytes(77)
        try await store.put(again, for: k)
        #expect(try await store.get(k) == again)
    }

    /// A key is (vault, chunk): the same chunk id in two vaults is two blobs.
    static func keysAreVaultAndChunk(_ store: any BlobStore) async throws {
        let v1 = VaultID.random(), v2 = VaultID.random()
        let chunk = try ChunkID(bytes: Sodium.randomBytes(32))
        let a = Sodium.randomBytes(100), b = Sodium.randomBytes(200)
        try await store.put(a, for: BlobKey(vault: v1, chunk: chunk))
        #expect(try await store.exists(BlobKey(vault: v2, chunk: chunk)) == false)
        #expect(try await store.get(BlobKey(vault: v2, chunk: chunk)) == nil)
        try await store.put(b, for: BlobKey(vault: v2, chunk: chunk))
        #expect(try await store.get(BlobKey(vault: v1, chunk: chunk)) == a)
        #expect(try await store.get(BlobKey(vault: v2, chunk: chunk)) == b)
        try await store.delete(BlobKey(vault: v1, chunk: chunk))
        #expect(try await store.get(BlobKey(vault: v1, chunk: chunk)) == nil)
        #expect(try await store.get(BlobKey(vault: v2, chunk: chunk)) == b)
        // Chunk ids that share a prefix (and so a shard, for stores that shard) stay apart.
        var near = chunk.bytes
        near[31] ^= 1
        let neighbour = BlobKey(vault: v2, chunk: try ChunkID(bytes: near))
        #expect(try await store.get(neighbour) == nil)
        try await store.put(a, for: neighbour)
        #expect(try await store.get(neighbour) == a)
        #expect(try await store.get(BlobKey(vault: v2, chunk: chunk)) == b)
    }

    static func deleteAllRemovesOneVault(_ store: any BlobStore) async throws {
        let v1 = VaultID.random(), v2 = VaultID.random()
        let keys1 = (0..<5).map { _ in key(v1) }, keys2 = (0..<3).map { _ in key(v2) }
        var contents: [BlobKey: [UInt8]] = [:]
        for k in keys1 + keys2 {
            contents[k] = Sodium.randomBytes(64 + Int.random(in: 0..<512))
            try await store.put(contents[k]!, for: k)
        }
        try await store.deleteAll(vault: v1)
        for k in keys1 {
            #expect(try await store.get(k) == nil)
            #expect(try await store.exists(k) == false)
        }
        for k in keys2 { #expect(try await store.get(k) == contents[k]) }
        // Again, and for a vault that never had blobs: no error.
        try await store.deleteAll(vault: v1)
        try await store.deleteAll(vault: .random())
        // The vault can be used again afterwards.
        try await store.put([1, 2, 3], for: keys1[0])
        #expect(try await store.get(keys1[0]) == [1, 2, 3])
        #expect(try await store.get(keys1[1]) == nil)
    }

    /// THE CONTRACT: "storing a key that exists already succeeds without
    /// rewriting it". A chunk's key is derived from its content, so a second
    /// put of a key is a retry of the same chunk; keeping the first blob
    /// means a retry can never replace a complete blob (the server relies
    /// on this after a crash between writing a blob and recording it). A
    /// second put with DIFFERENT bytes therefore keeps the FIRST bytes.
    static func putOfAnExistingKeyKeepsTheFirstBlob(_ store: any BlobStore) async throws {
        let k = key()
        let first = Sodium.randomBytes(500), second = Sodium.randomBytes(800)
        try await store.put(first, for: k)
        try await store.put(second, for: k)
        #expect(try await store.get(k) == first)
        try await store.put(first, for: k)
        #expect(try await store.get(k) == first)
    }

    /// 4.2 MiB, a little over the largest chunk plaintext (4 MiB): an envelope's size.
    static func largeBlob(_ store: any BlobStore) async throws {
        let k = key()
        let bytes = Sodium.randomBytes(4_404_019)
        try await store.put(bytes, for: k)
        let back = try #require(try await store.get(k))
        #expect(back.count == 4_404_019)
        // Compared outside #expect: a failing == on megabytes makes swift-testing diff them for minutes.
        let identical = back == bytes
        #expect(identical, "the 4.2 MiB blob came back different (\(back.count) bytes)")
    }

    static func batchPuts(_ store: any BlobStore) async throws {
        // A batch of new keys, one key stored before (kept), across new shard directories.
        let vault = VaultID.random()
        let existing = key(vault)
        try await store.put([9, 9, 9], for: existing)
        var items = (0..<200).map { i in (key: key(vault), bytes: Sodium.randomBytes(64 + 13 * i)) }
        items.append((key: existing, bytes: [1, 2, 3]))
        try await store.put(batch: items)
        for (k, bytes) in items.dropLast() {
            let back = try await store.get(k)
            let identical = back == bytes
            #expect(identical, "batch blob \(k): \(back?.count ?? -1) bytes back, \(bytes.count) put")
        }
        #expect(try await store.get(existing) == [9, 9, 9])
        try await store.put(batch: [])
    }

    static func concurrentPuts(_ store: any BlobStore) async throws {
        // Many keys at once: every blob whole.
        let vault = VaultID.random()
        let items = (0..<32).map { i in (key(vault), Sodium.randomBytes(1000 + 997 * i)) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (k, bytes) in items { group.addTask { try await store.put(bytes, for: k) } }
            try await group.waitForAll()
        }
        for (k, bytes) in items {
            let back = try await store.get(k)
            let identical = back == bytes
            #expect(identical, "blob \(k): \(back?.count ?? -1) bytes back, \(bytes.count) put")
        }

        // One key from many writers: afterwards it holds exactly one writer's bytes.
        let contested = key(vault)
        let candidates = (0..<8).map { i in Sodium.randomBytes(100_000 + 4096 * i) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for bytes in candidates { group.addTask { try await store.put(bytes, for: contested) } }
            try await group.waitForAll()
        }
        let winner = try #require(try await store.get(contested))
        let isOne = candidates.contains(winner)
        #expect(isOne, "the blob (\(winner.count) bytes) is none of the bytes written")
        // A later put does not change it (the first-wins contract).
        try await store.put(Sodium.randomBytes(10), for: contested)
        let kept = try await store.get(contested) == winner
        #expect(kept, "a later put replaced the blob")
    }
}

// MARK: - FileBlobStore only (not part of the protocol contract)

/// Behaviour specific to `FileBlobStore`: its temporary directory.
@Suite struct FileBlobStoreConformanceTests {
    @Test func leftoversInTmpAreRemovedWhenOpened() async throws {
        let root = try makeTemporaryDirectory("fileblob")
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try FileBlobStore(root: root)
        let k = BlobStoreConformance.key()
        try await store.put([1, 2, 3], for: k)
        let tmp = root.appendingPathComponent(".tmp")
        #expect(FileBlobStore.temporaryFiles(under: root) == [])

        // Interrupted puts of dead processes: a loose partial file, and a
        // per-process directory whose lock nobody holds.
        let leftover = tmp.appendingPathComponent("0123456789abcdef01234567")
        try Data(repeating: 0xAB, count: 4096).write(to: leftover)
        let dead = tmp.appendingPathComponent("deadbeefdeadbeef")
        try FileManager.default.createDirectory(at: dead, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dead.appendingPathComponent(".lock").path, contents: nil)
        try Data(repeating: 0xCD, count: 4096).write(to: dead.appendingPathComponent("partial"))
        #expect(FileBlobStore.temporaryFiles(under: root) == ["0123456789abcdef01234567", "deadbeefdeadbeef/partial"])

        // A live store's own directory (the first store still holds its lock) survives.
        let live = try FileManager.default.contentsOfDirectory(atPath: tmp.path).filter { $0 != "0123456789abcdef01234567" && $0 != "deadbeefdeadbeef" }
        try Data([1]).write(to: tmp.appendingPathComponent(live[0]).appendingPathComponent("in-flight"))

        let reopened = try FileBlobStore(root: root)
        #expect(FileBlobStore.temporaryFiles(under: root) == ["\(live[0])/in-flight"])
        #expect(!FileManager.default.fileExists(atPath: dead.path))
        // Stored blobs are untouched by the clean-up.
        #expect(try await reopened.get(k) == [1, 2, 3])
        _ = store
    }

    @Test func putLeavesNothingInTmp() async throws {
        let root = try makeTemporaryDirectory("fileblob")
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try FileBlobStore(root: root)
        let vault = VaultID.random()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 { group.addTask { try await store.put(Sodium.randomBytes(50_000), for: BlobStoreConformance.key(vault)) } }
            let k = BlobStoreConformance.key(vault)
            for _ in 0..<4 { group.addTask { try await store.put(Sodium.randomBytes(50_000), for: k) } }
            try await group.waitForAll()
        }
        #expect(FileBlobStore.temporaryFiles(under: root) == [])
    }
}
