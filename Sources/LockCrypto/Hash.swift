import CSodium

/// BLAKE2b (libsodium's `crypto_generichash`).
public enum Hash {
    /// BLAKE2b-256 of `message`, keyed when `key` is given (16…64 bytes).
    public static func blake2b256(_ message: some ContiguousBytes, key: UnsafeRawBufferPointer? = nil) -> [UInt8] {
        _ = Sodium.ready
        return [UInt8](unsafeUninitializedCapacity: 32) { out, n in
            message.withUnsafeBytes { m in
                _ = crypto_generichash(
                    out.baseAddress!, 32,
                    m.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(m.count),
                    key?.baseAddress?.assumingMemoryBound(to: UInt8.self), key?.count ?? 0)
            }
            n = 32
        }
    }

    /// BLAKE2b-256 over several parts, as if concatenated (incremental API).
    public static func blake2b256(parts: [any ContiguousBytes]) -> [UInt8] {
        _ = Sodium.ready
        // crypto_generichash_state is 64-byte aligned, which Swift cannot
        // import as a struct: allocate it as raw aligned memory.
        var out = [UInt8](repeating: 0, count: 32)
        withUnsafeTemporaryAllocation(byteCount: crypto_generichash_statebytes(), alignment: 64) { raw in
            let state = OpaquePointer(raw.baseAddress!)
            crypto_generichash_init(state, nil, 0, 32)
            for part in parts {
                part.withUnsafeBytes { p in
                    _ = crypto_generichash_update(
                        state, p.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(p.count))
                }
            }
            crypto_generichash_final(state, &out, 32)
        }
        return out
    }
}
