import CSodium

/// The libsodium library, initialised once per process.
///
/// Every entry point of LockCrypto that calls libsodium goes through
/// `Sodium.ready` first; `sodium_init` is idempotent and thread-safe, and a
/// failure (no usable entropy source) is unrecoverable for a crypto tool.
public enum Sodium {
    /// Initialises libsodium on first use.
    static let ready: Void = {
        guard sodium_init() >= 0 else {
            fatalError("libsodium could not be initialised (no entropy source?)")
        }
    }()

    /// The linked libsodium's version, e.g. "1.0.18".
    public static var versionString: String {
        String(cString: sodium_version_string())
    }

    /// Fills `count` bytes from the operating system's CSPRNG.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        _ = ready
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            randombytes_buf(buffer.baseAddress!, count)
            initialized = count
        }
    }

    /// Constant-time comparison of two byte strings of the same length.
    public static func constantTimeEqual(_ a: some ContiguousBytes, _ b: some ContiguousBytes) -> Bool {
        a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in
                pa.count == pb.count && (pa.count == 0 || sodium_memcmp(pa.baseAddress!, pb.baseAddress!, pa.count) == 0)
            }
        }
    }
}

/// Contiguous bytes without Foundation: arrays, array slices and the fixed-size ids.
public protocol ContiguousBytes {
    /// Calls `body` with the bytes.
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ContiguousBytes where Element == UInt8 {}
extension ArraySlice: ContiguousBytes where Element == UInt8 {}

extension UnsafeRawBufferPointer: ContiguousBytes {
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(self)
    }
}
