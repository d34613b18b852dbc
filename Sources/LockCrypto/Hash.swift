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

/// SHA-256 and HMAC-SHA256 (libsodium's `crypto_hash_sha256` and
/// `crypto_auth_hmacsha256`).
///
/// lockfs's own formats use BLAKE2b; these exist only because AWS Signature
/// Version 4, which the S3-compatible blob store (LockServerS3) must speak,
/// is defined over SHA-256 and HMAC-SHA256.
public enum SHA256 {
    /// The 32-byte SHA-256 digest of `message`.
    public static func hash(_ message: some ContiguousBytes) -> [UInt8] {
        _ = Sodium.ready
        return [UInt8](unsafeUninitializedCapacity: 32) { out, n in
            message.withUnsafeBytes { m in
                _ = crypto_hash_sha256(out.baseAddress!, m.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(m.count))
            }
            n = 32
        }
    }

    /// HMAC-SHA256 of `message` under `key` (RFC 2104; any key length: a
    /// key longer than 64 bytes is hashed first, as the RFC says).
    public static func hmac(key: some ContiguousBytes, _ message: some ContiguousBytes) -> [UInt8] {
        _ = Sodium.ready
        var state = crypto_auth_hmacsha256_state()
        var out = [UInt8](repeating: 0, count: 32)
        key.withUnsafeBytes { k in
            var none: UInt8 = 0  // libsodium wants a pointer even for an empty key
            if let base = k.baseAddress, k.count > 0 {
                _ = crypto_auth_hmacsha256_init(&state, base.assumingMemoryBound(to: UInt8.self), k.count)
            } else {
                _ = crypto_auth_hmacsha256_init(&state, &none, 0)
            }
        }
        message.withUnsafeBytes { m in
            guard let base = m.baseAddress, m.count > 0 else { return }  // an empty message adds nothing
            _ = crypto_auth_hmacsha256_update(&state, base.assumingMemoryBound(to: UInt8.self), UInt64(m.count))
        }
        _ = crypto_auth_hmacsha256_final(&state, &out)
        sodium_memzero(&state, MemoryLayout<crypto_auth_hmacsha256_state>.size)
        return out
    }
}
