/// Every way LockCrypto refuses input. Each failure has its own case so that
/// callers (and tests) can tell them apart; none of them carries key bytes
/// or plaintext.
public enum CryptoError: Error, Equatable, Sendable {
    /// A blob shorter than the smallest valid envelope of its kind.
    case truncated(size: Int, minimum: Int)
    /// A blob longer than its kind allows (or a plaintext too long to seal).
    case tooLarge(size: Int, limit: Int)
    /// A blob whose ciphertext length no sealer produces (not a Padmé length):
    /// cut short or extended.
    case invalidLength(size: Int)
    /// The envelope's version byte is not one this build reads.
    case unsupportedVersion(UInt8)
    /// The envelope is of another kind (a chunk where a journal entry was expected…).
    case wrongKind(expected: UInt8, found: UInt8)
    /// The envelope was sealed under a different key than the one offered.
    case wrongKey
    /// The Poly1305 tag does not verify: the blob was altered or corrupted.
    case authenticationFailed
    /// Authentic plaintext with malformed padding (only a buggy sealer makes this).
    case invalidPadding
    /// A chunk decrypted fine but its plaintext does not hash to its id:
    /// the server returned another chunk (or this vault's keys are mixed up).
    case chunkIDMismatch
    /// The password does not open the keyring.
    case wrongPassword
    /// The recovery key does not open the keyring.
    case wrongRecoveryKey
    /// A recovery key with a character outside the alphabet or of the wrong length.
    case malformedRecoveryKey(String)
    /// A recovery key whose checksum fails: a typo.
    case recoveryKeyTypo
    /// Argon2id parameters below the floor this client accepts, or above the ceiling.
    case unacceptableKDFParameters(String)
    /// An unknown key-derivation algorithm number.
    case unsupportedKDF(UInt8)
    /// Argon2id could not run (usually: not enough memory for its limit).
    case kdfFailed
    /// A key of the wrong length.
    case invalidKeySize(Int)
    /// An identifier of the wrong length.
    case invalidIdentifier(length: Int)
    /// A keyring whose key generations do not extend the ones this device
    /// holds (one is missing or has another key): a keyring made by
    /// someone without the vault's keys.
    case generationMismatch(String)
}
