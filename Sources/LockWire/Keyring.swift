import LockCrypto

/// The keyring a vault keeps on its server: everything needed to unlock MK
/// from a password or the recovery key, and nothing that helps without them.
///
///     0   1   version 0x01
///     1   16  vault id
///     17  29  KDF parameters (algorithm, opslimit, memlimit, salt)
///     46  2   password slot length p (u16 BE)
///     48  p   password slot: envelope kind 0x04 (MK under the password's KEK)
///     …   2   recovery slot length q (u16 BE)
///     …   q   recovery slot: envelope kind 0x05 (MK under the recovery KEK)
public struct Keyring: WireRecord {
    public static let wireVersion: UInt8 = 1
    public static let recordName = "keyring"
    static let slotBytes = Envelope.minimumSize...EnvelopeKind.passwordSlot.maxSealedSize

    public let vaultID: VaultID
    public let parameters: KDFParameters
    public let passwordSlot: [UInt8]
    public let recoverySlot: [UInt8]

    public init(vaultID: VaultID, parameters: KDFParameters, passwordSlot: [UInt8], recoverySlot: [UInt8]) {
        self.vaultID = vaultID
        self.parameters = parameters
        self.passwordSlot = passwordSlot
        self.recoverySlot = recoverySlot
    }

    /// A keyring for `keys`, unlockable by `password` keys and `recovery`.
    public static func make(keys: VaultKeys, password: PasswordKeys, parameters: KDFParameters,
                            recovery: RecoveryKey) throws -> Keyring {
        Keyring(vaultID: keys.vaultID, parameters: parameters,
                passwordSlot: try keys.passwordSlot(password, parameters: parameters),
                recoverySlot: try keys.recoverySlot(recovery))
    }

    /// The same keyring with MK rewrapped for a new password (and new parameters).
    public func rewrapped(keys: VaultKeys, password: PasswordKeys, parameters: KDFParameters) throws -> Keyring {
        Keyring(vaultID: vaultID, parameters: parameters,
                passwordSlot: try keys.passwordSlot(password, parameters: parameters), recoverySlot: recoverySlot)
    }

    /// Unlocks with a password. - Throws: `CryptoError.wrongPassword`, `.authenticationFailed`.
    public func unlock(password: PasswordKeys) throws -> VaultKeys {
        try VaultKeys.unlock(vaultID: vaultID, passwordSlot: passwordSlot, parameters: parameters, keys: password)
    }

    /// Unlocks with the recovery key. - Throws: `CryptoError.wrongRecoveryKey`, `.authenticationFailed`.
    public func unlock(recovery: RecoveryKey) throws -> VaultKeys {
        try VaultKeys.unlock(vaultID: vaultID, recoverySlot: recoverySlot, recovery: recovery)
    }

    public func encode(to w: inout WireWriter) {
        w.u8(Self.wireVersion)
        w.id(vaultID)
        w.raw(parameters.encoded)
        w.bytes16(passwordSlot)
        w.bytes16(recoverySlot)
    }

    public init(from r: inout WireReader) throws {
        try r.version(Self.wireVersion)
        vaultID = try r.id()
        parameters = try KDFParameters(encoded: r.raw(KDFParameters.encodedSize))
        passwordSlot = try r.bytes16(field: "password slot", allowed: Self.slotBytes)
        recoverySlot = try r.bytes16(field: "recovery slot", allowed: Self.slotBytes)
    }
}
