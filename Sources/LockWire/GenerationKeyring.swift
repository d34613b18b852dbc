import LockCrypto

/// The keyring of a vault with key generations: version 2 of the keyring
/// record (docs/design.md, "Key generations and the roster"). Not written
/// by any command yet: the rotation that makes it is the next step.
///
///     0   1   version 0x02
///     1   16  vault id
///     17  29  KDF parameters
///     46  4   generation g (u32 BE, ≥ 1)
///     50  32  recovery box key: X25519 public key of the recovery key (crypto_kdf id 3)
///     82  …   password slot: u16 length ‖ envelope kind 0x04 of MK_g, context
///             vault id ‖ parameters ‖ u32 g
///     …   …   recovery seal: u16 length ‖ GenerationSeal of MK_g to the recovery box key
///     …   2   link count (g − 1), then each: u16 length ‖ link (kind 0x06), newest first:
///             the link from g to g − 1, then g − 1 to g − 2, …
///     …   2   device seal count n, then each: device id (16) ‖ u16 length ‖
///             GenerationSeal of MK_g to that device's X25519 key
///
/// Every way in yields MK_g; the links then give every older generation, and
/// nothing in the record gives a newer one. A seal names its generation
/// inside, and the password slot binds it in its context, so a server cannot
/// pass an older generation's slot off as the current one.
public struct GenerationKeyring: WireRecord {
    public static let wireVersion: UInt8 = 2
    public static let recordName = "keyring"
    static let slotBytes = Envelope.minimumSize...EnvelopeKind.passwordSlot.maxSealedSize
    /// At most this many generations, and device seals.
    public static let maxGenerations = 10_000
    public static let maxDevices = 1_000

    public let vaultID: VaultID
    public let parameters: KDFParameters
    public let generation: UInt32
    public let recoveryBoxKey: [UInt8]
    public let passwordSlot: [UInt8]
    public let recoverySeal: [UInt8]
    /// Newest first: links[0] opens generation g − 1 with MK_g.
    public let links: [[UInt8]]
    public let deviceSeals: [(device: DeviceID, seal: [UInt8])]

    /// A keyring for the generations `keys` (newest first, the newest being
    /// generation `keys.count`), opened by `password`, the recovery key whose
    /// box key is `recoveryBoxKey`, and the devices' X25519 keys `devices`.
    public static func make(generations keys: [VaultKeys], password: PasswordKeys, parameters: KDFParameters,
                            recoveryBoxKey: [UInt8], devices: [(device: DeviceID, boxKey: [UInt8])],
                            nonce: [UInt8]? = nil) throws -> GenerationKeyring {
        precondition(!keys.isEmpty && Set(keys.map(\.vaultID)).count == 1)
        let g = UInt32(keys.count)
        let newest = keys[0]
        var links: [[UInt8]] = []
        for i in 0..<(keys.count - 1) {
            links.append(try keys[i].link(to: keys[i + 1], generation: g - UInt32(i), nonce: nonce))
        }
        return GenerationKeyring(
            vaultID: newest.vaultID, parameters: parameters, generation: g, recoveryBoxKey: recoveryBoxKey,
            passwordSlot: try newest.passwordSlot(password, parameters: parameters, generation: g, nonce: nonce),
            recoverySeal: try GenerationSeal.seal(newest.master, generation: g, to: recoveryBoxKey),
            links: links,
            deviceSeals: try devices.map { ($0.device, try GenerationSeal.seal(newest.master, generation: g, to: $0.boxKey)) })
    }

    public init(vaultID: VaultID, parameters: KDFParameters, generation: UInt32, recoveryBoxKey: [UInt8], passwordSlot: [UInt8],
         recoverySeal: [UInt8], links: [[UInt8]], deviceSeals: [(device: DeviceID, seal: [UInt8])]) {
        self.vaultID = vaultID
        self.parameters = parameters
        self.generation = generation
        self.recoveryBoxKey = recoveryBoxKey
        self.passwordSlot = passwordSlot
        self.recoverySeal = recoverySeal
        self.links = links
        self.deviceSeals = deviceSeals
    }

    /// Every generation, newest first, from the password.
    /// - Throws: `CryptoError.wrongPassword`, `.authenticationFailed`, link errors.
    public func unlock(password: PasswordKeys) throws -> [VaultKeys] {
        try walk(from: VaultKeys.unlock(vaultID: vaultID, passwordSlot: passwordSlot, parameters: parameters,
                                        generation: generation, keys: password))
    }

    /// Every generation, newest first, from the recovery key.
    /// - Throws: `CryptoError.authenticationFailed` for another recovery key or altered bytes.
    public func unlock(recovery: RecoveryKey) throws -> [VaultKeys] {
        try walk(from: open(recoverySeal, secret: recovery.boxSecret))
    }

    /// Every generation, newest first, for `device` with its X25519 secret.
    /// - Throws: `CryptoError.authenticationFailed` if the keyring holds no
    ///   seal for the device (a revoked one) or it does not open.
    public func unlock(device: DeviceID, identity: DeviceIdentity) throws -> [VaultKeys] {
        guard let seal = deviceSeals.first(where: { $0.device == device })?.seal else { throw CryptoError.authenticationFailed }
        return try walk(from: open(seal, secret: identity.boxSecret))
    }

    private func open<P>(_ seal: [UInt8], secret: SecretKey<P>) throws -> VaultKeys {
        let (g, master) = try GenerationSeal.open(seal, secret: secret)
        guard g == generation else { throw CryptoError.authenticationFailed }
        return VaultKeys(vaultID: vaultID, master: master)
    }

    private func walk(from newest: VaultKeys) throws -> [VaultKeys] {
        var out = [newest]
        for (i, link) in links.enumerated() {
            out.append(try out[i].openLink(link, generation: generation - UInt32(i)))
        }
        return out
    }

    public func encode(to w: inout WireWriter) {
        w.u8(Self.wireVersion)
        w.id(vaultID)
        w.raw(parameters.encoded)
        w.u32(generation)
        w.raw(recoveryBoxKey)
        w.bytes16(passwordSlot)
        w.bytes16(recoverySeal)
        w.u16(UInt16(links.count))
        for l in links { w.bytes16(l) }
        w.u16(UInt16(deviceSeals.count))
        for d in deviceSeals {
            w.id(d.device)
            w.bytes16(d.seal)
        }
    }

    public init(from r: inout WireReader) throws {
        try r.version(Self.wireVersion)
        vaultID = try r.id()
        parameters = try KDFParameters(encoded: r.raw(KDFParameters.encodedSize))
        generation = try r.u32()
        guard (1...UInt32(Self.maxGenerations)).contains(generation) else {
            throw WireError.invalidValue(field: "generation", reason: "must be 1…\(Self.maxGenerations)")
        }
        recoveryBoxKey = try r.raw(32)
        passwordSlot = try r.bytes16(field: "password slot", allowed: Self.slotBytes)
        recoverySeal = try r.bytes16(field: "recovery seal", allowed: GenerationSeal.sealedSize...GenerationSeal.sealedSize)
        let linkCount = Int(try r.u16())
        guard linkCount == Int(generation) - 1 else {
            throw WireError.invalidValue(field: "links", reason: "a keyring of generation \(generation) has \(generation - 1) links")
        }
        var links: [[UInt8]] = []
        for _ in 0..<linkCount { links.append(try r.bytes16(field: "link", allowed: Self.slotBytes)) }
        self.links = links
        let deviceCount = Int(try r.u16())
        guard deviceCount <= Self.maxDevices else {
            throw WireError.lengthOutOfRange(field: "device seals", length: deviceCount, limit: Self.maxDevices)
        }
        var seals: [(device: DeviceID, seal: [UInt8])] = []
        for _ in 0..<deviceCount {
            let device: DeviceID = try r.id()
            guard !seals.contains(where: { $0.device == device }) else {
                throw WireError.invalidValue(field: "device seals", reason: "a device has two seals")
            }
            seals.append((device, try r.bytes16(field: "device seal", allowed: GenerationSeal.sealedSize...GenerationSeal.sealedSize)))
        }
        deviceSeals = seals
    }
}

extension GenerationKeyring: Equatable {
    public static func == (a: GenerationKeyring, b: GenerationKeyring) -> Bool { a.encoded == b.encoded }
}
