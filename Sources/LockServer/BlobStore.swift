import LockCrypto

/// Where a chunk's envelope lives: per vault, so accounts never share blobs.
public struct BlobKey: Hashable, Sendable, CustomStringConvertible {
    public let vault: VaultID
    public let chunk: ChunkID
    public init(vault: VaultID, chunk: ChunkID) {
        self.vault = vault
        self.chunk = chunk
    }
    /// "VAULTHEX/CHUNKHEX": the object name in any store.
    public var description: String { "\(vault.hex)/\(chunk.hex)" }
}

/// Storage of chunk envelopes: opaque bytes under opaque names.
///
/// `FileBlobStore` keeps them in a directory tree; an S3-compatible store
/// follows (issue 7). Every implementation passes the same conformance suite.
public protocol BlobStore: Sendable {
    /// Stores `bytes` durably under `key` before returning; storing a key
    /// that exists already succeeds without rewriting it. A crash at any
    /// point leaves either no blob or the whole blob visible, never part.
    /// - Throws: `ServerError.unavailable` when the medium fails.
    func put(_ bytes: [UInt8], for key: BlobKey) async throws
    /// Stores many blobs durably before returning, with the guarantees of
    /// `put` for each; an implementation may make the whole batch durable
    /// at once (one sync instead of one per blob).
    func put(batch: [(key: BlobKey, bytes: [UInt8])]) async throws
    /// The blob, or nil when there is none.
    func get(_ key: BlobKey) async throws -> [UInt8]?
    /// Whether a blob exists.
    func exists(_ key: BlobKey) async throws -> Bool
    /// Removes a blob (no error if absent).
    func delete(_ key: BlobKey) async throws
    /// Removes every blob of a vault (account removal).
    func deleteAll(vault: VaultID) async throws
}

extension BlobStore {
    /// Default batch: the single puts, concurrently.
    public func put(batch: [(key: BlobKey, bytes: [UInt8])]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for item in batch { group.addTask { try await self.put(item.bytes, for: item.key) } }
            try await group.waitForAll()
        }
    }
}
