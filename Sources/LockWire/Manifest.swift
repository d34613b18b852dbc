import LockCrypto

/// A file's content: its chunks in order, with their plaintext lengths.
///
///     0   1    version 0x01
///     1   4    chunk count n (u32 BE, ≤ 2²⁴)
///     5   36n  n × (chunk id 32 ‖ plaintext length u32 BE, 1…4 MiB)
///
/// The file's size is the sum of the lengths; an empty file has no chunks.
public struct Manifest: WireRecord, Hashable {
    public static let wireVersion: UInt8 = 1
    public static let recordName = "manifest"

    public struct Chunk: Hashable, Sendable {
        public let id: ChunkID
        public let length: Int
        public init(id: ChunkID, length: Int) {
            self.id = id
            self.length = length
        }
    }

    public let chunks: [Chunk]

    /// - Throws: `WireError.lengthOutOfRange` for a chunk length outside 1…4 MiB or too many chunks.
    public init(chunks: [Chunk]) throws {
        guard chunks.count <= WireLimits.manifestChunks else {
            throw WireError.lengthOutOfRange(field: "manifest chunks", length: chunks.count, limit: WireLimits.manifestChunks)
        }
        for c in chunks where !WireLimits.chunkBytes.contains(c.length) {
            throw WireError.lengthOutOfRange(field: "chunk length", length: c.length, limit: WireLimits.chunkBytes.upperBound)
        }
        self.chunks = chunks
    }

    /// The empty file.
    public static let empty = try! Manifest(chunks: [])

    /// The file size in bytes.
    public var size: Int { chunks.reduce(0) { $0 + $1.length } }

    public func encode(to w: inout WireWriter) {
        w.u8(Self.wireVersion)
        w.u32(UInt32(chunks.count))
        for c in chunks {
            w.id(c.id)
            w.u32(UInt32(c.length))
        }
    }

    public init(from r: inout WireReader) throws {
        try r.version(Self.wireVersion)
        let n = try r.count(field: "manifest chunks", limit: WireLimits.manifestChunks, minimumItemSize: 36)
        var chunks: [Chunk] = []
        chunks.reserveCapacity(n)
        for _ in 0..<n {
            let id: ChunkID = try r.id()
            let length = Int(try r.u32())
            guard WireLimits.chunkBytes.contains(length) else {
                throw WireError.lengthOutOfRange(field: "chunk length", length: length, limit: WireLimits.chunkBytes.upperBound)
            }
            chunks.append(Chunk(id: id, length: length))
        }
        self.chunks = chunks
    }
}
