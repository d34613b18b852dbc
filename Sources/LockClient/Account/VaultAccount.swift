import Foundation
import LockCrypto
import LockWire

/// The life of a vault account as one device sees it: create, log in, change
/// the password, recover with the recovery key, list and revoke devices, log out.
///
/// Every function talks to the server only through `Remote`, and trusts
/// nothing it answers: a keyring must belong to the vault the device knows
/// and open to the key it holds, or the call fails with `LockError.integrity`.
/// Password-derived bytes are wiped after use; nothing here logs a key, a
/// password or a token (docs/security.md, "Device credentials").
///
/// Errors are `LockError` throughout (remote failures mapped by
/// `LockError.from(_:)`), except `CryptoError.unacceptableKDFParameters` and
/// `.kdfFailed`, which pass through so the CLI can say what they mean.
public enum VaultAccount {
    /// The answer to a wrong user name or password (the server does not say which).
    public static let wrongLogin = "wrong user name or password"

    /// Creates the account and its vault on the server and enrols this device.
    ///
    /// Makes a new vault (random vault id and MK), derives the password keys
    /// with new Argon2id parameters, wraps MK for the password and for a new
    /// recovery key, and registers the keyring with the login secret.
    ///
    /// - Parameters:
    ///   - server: the server's base URL, stored in the credentials.
    ///   - invite: the invite code from `lockfs-server user add`; nil under open registration.
    ///   - remote: the server, without a token.
    ///   - strength: Argon2id limits; `.moderate` unless testing.
    /// - Returns: this device's credentials, and the recovery key to show once.
    /// - Throws: `LockError.unauthorized` for a missing, wrong or used invite;
    ///   `.remote` if the name is taken (or any other refusal); `.offline`.
    public static func create(server: String, user: String, invite: String?, password: String, deviceName: String,
                              caFile: String? = nil, remote: any Remote,
                              strength: KDFParameters.Strength = .moderate) async throws -> (DeviceCredentials, RecoveryKey) {
        let parameters = KDFParameters.generate(strength)
        let keys = VaultKeys.generate()
        let passwordKeys = try PasswordKeys.derive(password: password, parameters: parameters)
        let recovery = RecoveryKey.generate()
        // Version 2 from the start (generation 1): a rotation then needs
        // neither the recovery key nor an upgrade of the record.
        let keyring = try GenerationKeyring.make(generations: [keys], password: passwordKeys, parameters: parameters,
                                                 recoveryBoxKey: recovery.boxPublicKey, devices: [])
        var secret = passwordKeys.loginSecret.withUnsafeBytes { Array($0) }
        defer { Sodium.wipe(&secret) }
        let identity = DeviceIdentity.generate()
        let request = RegisterRequest(user: user, invite: invite, loginSecret: secret, keyring: keyring, deviceName: deviceName,
                                      recoveryProof: recovery.proof.withUnsafeBytes { Array($0) }, device: DevicePublicKeys(identity))
        let session: Session
        do {
            session = try await remote.register(request)
        } catch let error as RemoteError {
            switch error {
            case .forbidden: throw LockError.unauthorized("the invite code is missing, wrong, used or expired; ask the server's admin for a new one (lockfs-server user add \(user))")
            case .conflict(code: "user_exists", message: _): throw LockError.remote("the user name \(user) is taken on this server; log in with `lockfs login`, or pick another name")
            default: throw LockError.from(error)
            }
        }
        guard session.vault == keys.vaultID else {
            throw LockError.integrity("the server registered another vault id than the one sent")
        }
        let credentials = DeviceCredentials(server: server, user: user, device: session.device, deviceName: deviceName,
                                            vault: keys.vaultID, token: session.token, keys: keys, caFile: caFile, identity: identity,
                                            kdf: parameters)
        return (credentials, recovery)
    }

    /// Enrols this device in an existing vault with the password.
    ///
    /// Pre-login gives the account's Argon2id parameters (refused below
    /// INTERACTIVE, docs/security.md, "Password"); the derived login secret
    /// gets a device token; with it the keyring is fetched and opened with the
    /// password's key. A server that accepts the login secret but serves a
    /// keyring the same password does not open is broken or hostile: the new
    /// device is revoked again (best effort) and the call fails.
    ///
    /// - Parameters:
    ///   - remote: the server, without a token.
    ///   - authenticated: the same server with a device token.
    /// - Throws: `LockError.unauthorized(wrongLogin)` for a wrong name or
    ///   password; `LockError.integrity` for a server whose answers do not fit
    ///   together; `CryptoError.unacceptableKDFParameters` for parameters below
    ///   the floor; `.offline`.
    public static func login(server: String, user: String, password: String, deviceName: String, caFile: String? = nil,
                             remote: any Remote, authenticated: (String) -> any Remote) async throws -> DeviceCredentials {
        let parameters: KDFParameters
        do {
            parameters = try await remote.preLogin(user: user)
        } catch RemoteError.malformedResponse(let m) {
            throw LockError.integrity("the server's password parameters were refused (\(m)); it is misconfigured or hostile, so no password was derived for it")
        } catch let error as RemoteError {
            throw LockError.from(error)
        }
        let passwordKeys = try PasswordKeys.derive(password: password, parameters: parameters)
        var secret = passwordKeys.loginSecret.withUnsafeBytes { Array($0) }
        defer { Sodium.wipe(&secret) }
        return try await enrol(server: server, user: user, deviceName: deviceName, caFile: caFile, wrong: wrongLogin,
                               authenticated: authenticated, request: { keys in
            try await remote.login(LoginRequest(user: user, loginSecret: secret, deviceName: deviceName, device: keys))
        }, open: { _, keyring in
            guard keyring.parameters == parameters else {
                throw LockError.integrity("the server's keyring names other password parameters than its pre-login answer")
            }
            return (try unlock(keyring, password: passwordKeys, accepted: "accepted the password at login"), parameters)
        })
    }

    /// Changes the password: checks the current one against the server's
    /// keyring, rewraps MK for the new one (new salt and parameters), and
    /// replaces the keyring and login secret together, proving the current
    /// password to the server (its login secret). The recovery slot is kept,
    /// so the recovery key still works; the old password stops working for
    /// new logins. Devices already enrolled keep their tokens.
    ///
    /// - Parameters:
    ///   - remote: the server with this device's token.
    ///   - registerRecovery: the recovery key, to register its proof on a
    ///     server that has none for this account (vaults made before lockfs
    ///     0.2); it must open the keyring to this device's MK.
    /// - Throws: `LockError.unauthorized("the current password is wrong")`;
    ///   `.integrity` if the keyring opens to another key than this device's
    ///   or belongs to another vault; `.offline`; `.unauthorized` for a revoked device.
    @discardableResult
    public static func changePassword(credentials: DeviceCredentials, old: String, new: String, remote: any Remote,
                                      registerRecovery: RecoveryKey? = nil,
                                      strength: KDFParameters.Strength = .moderate) async throws -> KDFParameters {
        let keyring = try await verifiedKeyring(credentials, remote: remote)
        let oldKeys = try PasswordKeys.derive(password: old, parameters: keyring.parameters)
        let opened = try unlock(keyring, password: oldKeys, wrong: .unauthorized("the current password is wrong"))
        try requireHeld(opened, credentials)
        if let registerRecovery { try requireHeld(try openRecoverySlot(keyring, registerRecovery), credentials) }
        var current = oldKeys.loginSecret.withUnsafeBytes { Array($0) }
        defer { Sodium.wipe(&current) }
        return try await replacePassword(keyring: keyring, generations: opened, new: new, proof: .password(current),
                                  registerRecovery: registerRecovery, remote: remote, strength: strength)
    }

    /// Sets a new password with the recovery key, from a device that is still
    /// enrolled (the forgotten-password case).
    ///
    /// The recovery key must open the server's keyring to the MK this device
    /// holds; then MK is rewrapped for the new password as in
    /// `changePassword`, and the recovery proof convinces the server, which
    /// signs every other device out (whoever forgot the password may have
    /// lost a device too; log the others in again).
    ///
    /// - Throws: `CryptoError.recoveryKeyTypo` / `.malformedRecoveryKey` are
    ///   the caller's (parsing); `LockError.unauthorized("the recovery key is wrong")`;
    ///   `.unauthorized` when the server has no recovery proof for a vault
    ///   made before lockfs 0.2; `.integrity`; `.offline`.
    @discardableResult
    public static func recover(credentials: DeviceCredentials, recoveryKey: RecoveryKey, newPassword: String,
                               remote: any Remote, strength: KDFParameters.Strength = .moderate) async throws -> KDFParameters {
        let keyring = try await verifiedKeyring(credentials, remote: remote)
        let opened = try openRecoverySlot(keyring, recoveryKey)
        try requireHeld(opened, credentials)
        return try await replacePassword(keyring: keyring, generations: opened, new: newPassword,
                                  proof: .recovery(recoveryKey.proof.withUnsafeBytes { Array($0) }),
                                  registerRecovery: nil, remote: remote, strength: strength)
    }

    /// Recovery on a machine that was never enrolled (every device and the
    /// password lost): proves the recovery key to the server, which enrols
    /// this device; opens MK from the keyring's recovery slot; sets the new
    /// password (which signs every other device out); returns this device's
    /// credentials. If a step after the enrolment fails, the new device is
    /// revoked again (best effort) and nothing is saved.
    ///
    /// - Parameters:
    ///   - remote: the server, without a token.
    ///   - authenticated: the same server with a device token.
    /// - Throws: `LockError.unauthorized` for a wrong user name or recovery
    ///   key (one answer), or an account whose server has no recovery proof
    ///   (made before lockfs 0.2); `.integrity` for a keyring that does not
    ///   belong to the vault or whose recovery slot the key does not open
    ///   after the server accepted its proof; `.offline`.
    public static func recoverWithoutDevice(server: String, user: String, recoveryKey: RecoveryKey, newPassword: String,
                                            deviceName: String, caFile: String? = nil, remote: any Remote,
                                            authenticated: (String) -> any Remote,
                                            strength: KDFParameters.Strength = .moderate) async throws -> DeviceCredentials {
        let proof = recoveryKey.proof.withUnsafeBytes { Array($0) }
        return try await enrol(server: server, user: user, deviceName: deviceName, caFile: caFile,
                               wrong: "wrong user name or recovery key (or the account was made before lockfs 0.2 and its server cannot check recovery keys; see docs/operations.md, \"Recovery\")",
                               authenticated: authenticated, request: { keys in
            try await remote.recover(RecoverRequest(user: user, recoveryProof: proof, deviceName: deviceName, device: keys))
        }, open: { device, keyring in
            let keys: [VaultKeys]
            do {
                keys = try keyring.unlock(recovery: recoveryKey)
            } catch CryptoError.wrongRecoveryKey {
                throw LockError.integrity("the server accepted the recovery key but its keyring does not open with it: the server is broken or hostile")
            } catch CryptoError.authenticationFailed {
                throw LockError.integrity("the server's keyring was altered")
            }
            let parameters = try await replacePassword(keyring: keyring, generations: keys, new: newPassword, proof: .recovery(proof),
                                                       registerRecovery: nil, remote: device, strength: strength)
            return (keys, parameters)
        })
    }

    /// Enrols a new device (by password or recovery key): makes its keys,
    /// asks the server (`request`, given the public keys), runs `open` with
    /// the new device's remote to get the vault keys, and returns the
    /// credentials. `open` gets the new device's remote and the server's
    /// keyring, checked to belong to the vault the server named. If anything
    /// fails after the server enrolled the device, it
    /// is revoked again (best effort): no token is left that no device holds.
    /// - Throws: `LockError.unauthorized(wrong)` when the server says 403.
    static func enrol(server: String, user: String, deviceName: String, caFile: String?, wrong: String,
                      authenticated: (String) -> any Remote,
                      request: (DevicePublicKeys) async throws -> Session,
                      open: (any Remote, VaultKeyring) async throws -> ([VaultKeys], KDFParameters)) async throws -> DeviceCredentials {
        let identity = DeviceIdentity.generate()
        let session: Session
        do {
            session = try await request(DevicePublicKeys(identity))
        } catch RemoteError.forbidden {
            throw LockError.unauthorized(wrong)
        } catch let error as RemoteError {
            throw LockError.from(error)
        }
        let device = authenticated(session.token)
        do {
            let keyring = try await mapped { try await device.keyring() }
            guard keyring.vaultID == session.vault else {
                throw LockError.integrity("the server's keyring belongs to another vault than the one it enrolled this device in")
            }
            let (keys, kdf) = try await open(device, keyring)
            return DeviceCredentials(server: server, user: user, device: session.device, deviceName: deviceName,
                                     vault: session.vault, token: session.token, keys: keys[0], olderKeys: Array(keys.dropFirst()),
                                     caFile: caFile, identity: identity, kdf: kdf)
        } catch {
            try? await device.revokeDevice(session.device, loginSecret: nil)
            throw error
        }
    }

    /// The account's enrolled devices. - Throws: `.offline`, `.unauthorized`.
    public static func devices(remote: any Remote) async throws -> [DeviceInfo] {
        try await mapped { try await remote.devices() }
    }

    /// Revokes another device: its token stops working at once. The server
    /// wants a fresh password proof (a stolen token alone cannot sign the
    /// owner's devices out); the password is checked here first against the
    /// keyring, so a typo gets a clear answer. The revoked device keeps what
    /// it already has on disk (its MK included); see docs/security.md.
    /// - Throws: `LockError.unauthorized("the password is wrong")`;
    ///   `LockError.notFound` if the account has no such device; `.offline`.
    public static func revoke(_ device: DeviceID, password: String, credentials: DeviceCredentials, remote: any Remote) async throws {
        let keyring = try await verifiedKeyring(credentials, remote: remote)
        let keys = try PasswordKeys.derive(password: password, parameters: keyring.parameters)
        _ = try unlock(keyring, password: keys, wrong: .unauthorized("the password is wrong"))
        var secret = keys.loginSecret.withUnsafeBytes { Array($0) }
        defer { Sodium.wipe(&secret) }
        do {
            try await remote.revokeDevice(device, loginSecret: secret)
        } catch RemoteError.forbidden(let m) {
            throw LockError.unauthorized("the server refused the password (\(m))")
        } catch let error as RemoteError {
            throw LockError.from(error)
        }
    }

    /// What a key rotation did.
    public struct Rotation: Sendable {
        /// This device's credentials, holding the new generation.
        public var credentials: DeviceCredentials
        /// The new generation's number.
        public var generation: UInt32
        /// The other devices the new generation was sealed to.
        public var sealedFor: [String]
        /// Devices left out, and why: they must log in again to read what is
        /// written from now on.
        public var left: [(name: String, why: String)]
    }

    /// Makes a new key generation (docs/design.md, "Key generations and the
    /// roster"): a random MK_{g+1}, sealed to this device, to every other
    /// enrolled device whose box key is signed by the signing key the
    /// journal bound to it (`signers`; a server cannot add a device or swap
    /// its key), and to the recovery key; the password slot rewrapped; a link
    /// to every older generation. A revoked device is no longer listed, so it
    /// gets nothing: with its saved keys it opens nothing sealed from now on.
    ///
    /// - Parameters:
    ///   - signers: the Ed25519 keys the journal bound to devices (the index's).
    ///   - recoveryKey: needed once for a vault whose keyring predates key
    ///     generations (version 1: it holds no recovery box key).
    /// - Throws: `LockError.unauthorized("the password is wrong")`;
    ///   `.invalid` for a version 1 keyring without the recovery key;
    ///   `.conflict`-like `.remote` when another device changed the keyring
    ///   meanwhile; `.integrity`; `.offline`.
    public static func rotateKeys(password: String, credentials: DeviceCredentials, remote: any Remote,
                                  signers: [DeviceID: [UInt8]], recoveryKey: RecoveryKey? = nil) async throws -> Rotation {
        let keyring = try await verifiedKeyring(credentials, remote: remote)
        let passwordKeys = try PasswordKeys.derive(password: password, parameters: keyring.parameters)
        let held = try unlock(keyring, password: passwordKeys, wrong: .unauthorized("the password is wrong"))
        try requireHeld(held, credentials)
        let recoveryBoxKey: [UInt8]
        if let box = keyring.recoveryBoxKey {
            recoveryBoxKey = box
        } else if let recoveryKey {
            try requireHeld(try openRecoverySlot(keyring, recoveryKey), credentials)
            recoveryBoxKey = recoveryKey.boxPublicKey
        } else {
            throw LockError.invalid("this vault's keyring predates key generations: give the recovery key once (--recovery-key-file FILE), so that it opens the new keys too")
        }
        guard let identity = credentials.identity else {
            throw LockError.invalid("this device has no device keys yet; run `lockfs sync` once and try again")
        }
        var targets: [(device: DeviceID, boxKey: [UInt8])] = [(credentials.device, identity.boxPublicKey)]
        var sealedFor: [String] = []
        var left: [(name: String, why: String)] = []
        for d in try await mapped({ try await remote.devices() }) {
            guard let id = DeviceID(hex: d.id), id != credentials.device else { continue }
            switch sealTarget(d, bound: signers[id]) {
            case .success(let box): targets.append((id, box)); sealedFor.append(d.name)
            case .failure(let why): left.append((d.name, why.reason))
            }
        }
        let next = VaultKeys(vaultID: credentials.vault, master: .random())
        let generations = [next] + held
        let rotated = try GenerationKeyring.make(generations: generations, password: passwordKeys, parameters: keyring.parameters,
                                                 recoveryBoxKey: recoveryBoxKey, devices: targets)
        var secret = passwordKeys.loginSecret.withUnsafeBytes { Array($0) }
        defer { Sodium.wipe(&secret) }
        do {
            try await remote.replaceKeyring(KeyringReplaceRequest(keyring: rotated, loginSecret: secret, proof: .password(secret)))
        } catch RemoteError.conflict(code: "keyring_changed", let m) {
            throw LockError.remote("the vault's keys changed meanwhile (\(m)); run the command again")
        } catch RemoteError.forbidden(let m) {
            throw LockError.unauthorized("the server refused the password (\(m))")
        } catch let error as RemoteError {
            throw LockError.from(error)
        }
        var updated = credentials
        updated.generations = generations
        return Rotation(credentials: updated, generation: rotated.generation, sealedFor: sealedFor, left: left)
    }

    /// Why a device gets no seal at a rotation.
    struct LeftOut: Error { let reason: String }

    /// The box key to seal a new generation to for a listed device, if the
    /// journal vouches for it: its box key signed by the signing key the
    /// device's first signed entry bound (`bound`). Pure; table-tested.
    static func sealTarget(_ device: DeviceInfo, bound: [UInt8]?) -> Result<[UInt8], LeftOut> {
        guard let keys = device.verifiedKeys else {
            return .failure(LeftOut(reason: "the server lists no signed box key for it (enrolled by an older lockfs)"))
        }
        guard let bound else {
            return .failure(LeftOut(reason: "it has written nothing to the vault yet, so the journal does not vouch for its key"))
        }
        guard Sodium.constantTimeEqual(bound, keys.signing) else {
            return .failure(LeftOut(reason: "the server lists another signing key for it than the journal holds"))
        }
        return .success(keys.box)
    }

    /// What `logout` managed to do on the server.
    public enum LogoutOutcome: Sendable, Equatable {
        /// The server revoked this device's token.
        case revoked
        /// The server no longer knew the token (revoked before).
        case alreadyRevoked
        /// The server could not be reached: the token is still valid there
        /// until the device is revoked from another device or by the admin.
        case serverUnreachable(String)
    }

    /// What `logout` did.
    public struct LogoutResult: Sendable, Equatable {
        public var outcome: LogoutOutcome
        /// Queued changes left in the home: the device was revoked before, so
        /// it can never send them; a new login in this home sends them.
        public var keptChanges = 0
        /// What `discardChanges` dropped.
        public var discarded: Index.DiscardedQueue?
    }

    /// Logs this device out: revokes its token on the server if it can, then
    /// deletes the credentials file whatever the server said — but never
    /// silently drops a change made here that the server does not have.
    ///
    /// With changes queued in `home` (docs/operations.md, "Logging out"):
    /// - `discardChanges`: logs out and drops them (pending operations, sealed
    ///   entries in flight, their outbox chunks), so no later login in this
    ///   home sends them; `discarded` says how many.
    /// - else, if the server refuses this device's token (it was revoked), the
    ///   device can never send them itself: the credentials are deleted and the
    ///   changes stay in the home (`keptChanges`) for the next `login` there,
    ///   which sends them as the new device.
    /// - else (the server takes the token, or cannot be reached) nothing is
    ///   changed and it throws `LockError.changesQueued`: sync first.
    ///
    /// The caller holds the home (no engine may run on it meanwhile).
    /// - Throws: `LockError.changesQueued(n)`; `LockError.io` if a file cannot
    ///   be deleted; remote errors other than unreachable or an already revoked
    ///   token (the file is deleted in every case but a local I/O error).
    public static func logout(credentials: DeviceCredentials, home: ClientHome, remote: any Remote,
                              discardChanges: Bool = false) async throws -> LogoutResult {
        let file = home.credentialsFile
        let queued = try home.queuedChanges()
        if queued > 0 && !discardChanges {
            do {
                _ = try await remote.devices()
            } catch RemoteError.unauthorized {
                try deleteCredentials(file)
                return LogoutResult(outcome: .alreadyRevoked, keptChanges: queued)
            } catch {}
            throw LockError.changesQueued(queued)
        }
        var result = LogoutResult(outcome: .revoked)
        var failure: (any Error)?
        do {
            try await remote.revokeDevice(credentials.device, loginSecret: nil)
        } catch RemoteError.unauthorized, RemoteError.notFound {
            result.outcome = .alreadyRevoked
        } catch let error as RemoteError where error.isRetryable {
            result.outcome = .serverUnreachable("\(error)")
        } catch {
            failure = error
        }
        try deleteCredentials(file)
        if discardChanges && queued > 0 { result.discarded = try home.discardQueuedChanges() }
        if let failure {
            if let e = failure as? RemoteError { throw LockError.from(e) }
            throw failure
        }
        return result
    }

    static func deleteCredentials(_ file: URL) throws {
        if unlink(file.path) != 0 && errno != ENOENT {
            throw LockError.io(errno: errno, "delete \(file.path)")
        }
    }

    // MARK: Helpers

    /// Runs a remote call, mapping `RemoteError` to `LockError`.
    static func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as RemoteError { throw LockError.from(error) }
    }

    /// The server's keyring, checked to belong to this device's vault.
    static func verifiedKeyring(_ credentials: DeviceCredentials, remote: any Remote) async throws -> VaultKeyring {
        let keyring: VaultKeyring
        do {
            keyring = try await remote.keyring()
        } catch RemoteError.malformedResponse(let m) {
            throw LockError.integrity("the server's keyring was refused (\(m)); it is broken or hostile")
        } catch let error as RemoteError {
            throw LockError.from(error)
        }
        guard keyring.vaultID == credentials.vault else {
            throw LockError.integrity("the server's keyring belongs to another vault than this device's")
        }
        if let known = credentials.kdf, let why = weaker(keyring.parameters, than: known) {
            throw LockError.integrity("the server's keyring names weaker password parameters than this device last saw (\(why)); refused, nothing was derived for it. If you lowered them yourself on another device, log this device in again")
        }
        return keyring
    }

    /// Why `p` is weaker than `known` (fewer passes or less memory), or nil.
    /// A new salt alone is not: every password change makes one.
    public static func weaker(_ p: KDFParameters, than known: KDFParameters) -> String? {
        if p.opsLimit < known.opsLimit { return "\(p.opsLimit) passes instead of \(known.opsLimit)" }
        if p.memLimit < known.memLimit { return "\(p.memLimit >> 20) MiB instead of \(known.memLimit >> 20) MiB" }
        return nil
    }

    /// Opens the password slot of a keyring the server has already vouched for.
    static func unlock(_ keyring: VaultKeyring, password: PasswordKeys, accepted what: String) throws -> [VaultKeys] {
        try unlock(keyring, password: password,
                   wrong: .integrity("the server \(what) but its keyring does not open with it: the server is broken or hostile"))
    }

    /// Opens the password slot; `wrong` for a password that does not open it,
    /// `.integrity` for an altered slot.
    static func unlock(_ keyring: VaultKeyring, password: PasswordKeys, wrong: LockError) throws -> [VaultKeys] {
        do {
            return try keyring.unlock(password: password)
        } catch CryptoError.wrongPassword {
            throw wrong
        } catch CryptoError.authenticationFailed {
            throw LockError.integrity("the server's keyring was altered")
        }
    }

    /// Fails unless `opened` (every generation a keyring gave, newest first)
    /// extends the generations `credentials` hold: each of them, at its
    /// number, with the same master key.
    static func requireHeld(_ opened: [VaultKeys], _ credentials: DeviceCredentials) throws {
        do {
            try KeyGenerations(credentials.generations).adopt(opened)
        } catch {
            throw LockError.integrity("the server's keyring opens to other keys than this device holds: the server is broken or hostile")
        }
    }

    /// Opens the recovery slot. - Throws: `LockError.unauthorized` for a key of another vault.
    static func openRecoverySlot(_ keyring: VaultKeyring, _ recovery: RecoveryKey) throws -> [VaultKeys] {
        do {
            return try keyring.unlock(recovery: recovery)
        } catch CryptoError.wrongRecoveryKey {
            throw LockError.unauthorized("the recovery key is wrong (it is not this vault's)")
        } catch CryptoError.authenticationFailed {
            throw LockError.integrity("the server's keyring was altered")
        }
    }

    /// Rewraps MK for `new` with fresh parameters and replaces keyring and
    /// login secret, with `proof` for the server.
    @discardableResult
    static func replacePassword(keyring: VaultKeyring, generations: [VaultKeys], new: String, proof: OwnerProof, registerRecovery: RecoveryKey?,
                                remote: any Remote, strength: KDFParameters.Strength) async throws -> KDFParameters {
        let parameters = KDFParameters.generate(strength)
        let newKeys = try PasswordKeys.derive(password: new, parameters: parameters)
        let rewrapped = try keyring.rewrapped(generations: generations, password: newKeys, parameters: parameters)
        var secret = newKeys.loginSecret.withUnsafeBytes { Array($0) }
        defer { Sodium.wipe(&secret) }
        let request = KeyringReplaceRequest(keyring: rewrapped, loginSecret: secret, proof: proof,
                                            setRecoveryProof: registerRecovery.map { $0.proof.withUnsafeBytes { Array($0) } })
        do {
            try await remote.replaceKeyring(request)
        } catch RemoteError.forbidden(let m) {
            throw LockError.unauthorized("the server refused the change: \(m)")
        } catch let error as RemoteError {
            throw LockError.from(error)
        }
        return parameters
    }
}
