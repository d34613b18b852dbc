import LockCrypto

/// Where a chunk's file lives under a folder of chunk files (the outbox, the
/// cache): `root/xx/<id in hex>`, `xx` the id's first byte, so that no folder
/// holds more than about 1/256 of them.
enum FanOut {
    /// The subfolder name of `id` (two hex digits).
    static func folder(_ id: ChunkID) -> String { String(id.hex.prefix(2)) }

    /// The file of `id` under `root`.
    static func path(_ root: String, _ id: ChunkID) -> String {
        let hex = id.hex
        return root + "/" + hex.prefix(2) + "/" + hex
    }
}
