import Foundation
import LockCrypto
import LockWire

#if canImport(Glibc)
import Glibc
#endif

/// Where one client keeps its state: `--home DIR`, `LOCKFS_HOME`, or the XDG
/// directories.
///
/// With a home directory everything lives under it:
///
///     DIR/device.json     this device's credentials (0600; docs/security.md, "Device credentials")
///     DIR/index.sqlite    the local index (WAL)
///     DIR/cache/          decrypted chunks (LRU)
///     DIR/outbox/         sealed chunks waiting for upload
///     DIR/staging/        files open for writing
///
/// Without one, credentials go to `$XDG_CONFIG_HOME/lockfs` (default
/// `~/.config/lockfs`) and the rest to `$XDG_DATA_HOME/lockfs` (default
/// `~/.local/share/lockfs`); the cache to `$XDG_CACHE_HOME/lockfs`.
public struct ClientHome: Sendable, Equatable {
    public let configDirectory: URL
    public let dataDirectory: URL
    public let cacheDirectory: URL

    public init(configDirectory: URL, dataDirectory: URL, cacheDirectory: URL) {
        self.configDirectory = configDirectory
        self.dataDirectory = dataDirectory
        self.cacheDirectory = cacheDirectory
    }

    /// Everything under one directory.
    public init(directory: URL) {
        self.init(configDirectory: directory, dataDirectory: directory, cacheDirectory: directory.appendingPathComponent("cache"))
    }

    /// `explicit` (from `--home`), else `LOCKFS_HOME`, else the XDG directories.
    public static func resolve(explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> ClientHome {
        if let dir = explicit ?? environment["LOCKFS_HOME"], !dir.isEmpty {
            return ClientHome(directory: URL(fileURLWithPath: dir).standardizedFileURL)
        }
        let home = URL(fileURLWithPath: environment["HOME"] ?? NSHomeDirectory())
        func xdg(_ key: String, _ fallback: String) -> URL {
            if let v = environment[key], v.hasPrefix("/") { return URL(fileURLWithPath: v).appendingPathComponent("lockfs") }
            return home.appendingPathComponent(fallback).appendingPathComponent("lockfs")
        }
        return ClientHome(configDirectory: xdg("XDG_CONFIG_HOME", ".config"),
                          dataDirectory: xdg("XDG_DATA_HOME", ".local/share"),
                          cacheDirectory: xdg("XDG_CACHE_HOME", ".cache"))
    }

    public var credentialsFile: URL { configDirectory.appendingPathComponent("device.json") }
    public var indexFile: URL { dataDirectory.appendingPathComponent("index.sqlite") }
    public var outboxDirectory: URL { dataDirectory.appendingPathComponent("outbox") }
    public var stagingDirectory: URL { dataDirectory.appendingPathComponent("staging") }
    /// The result of the last `lockfs verify`.
    public var lastVerifyFile: URL { dataDirectory.appendingPathComponent("verify.json") }
    /// Journal entries `lockfs repair` quarantined, kept as evidence.
    public var quarantineDirectory: URL { dataDirectory.appendingPathComponent("quarantine") }
    public var chunkCacheDirectory: URL { cacheDirectory.appendingPathComponent("chunks") }

    /// Creates the directories, or tightens existing ones, to 0700: they
    /// hold MK, the decrypted tree and decrypted chunks (`PrivateFiles`).
    /// - Throws: `LockError.invalid` for a directory another user owns.
    public func createDirectories() throws {
        for dir in [configDirectory, dataDirectory, cacheDirectory, outboxDirectory, stagingDirectory, chunkCacheDirectory] {
            try PrivateFiles.directory(dir)
        }
    }
}

/// Directories and files that hold keys or plaintext: owned by the user who
/// runs lockfs, and readable by nobody else (docs/security.md, "On the
/// client"). A `--home` made by hand, or by an older lockfs, with a looser
/// mode is tightened; one owned by another user is refused, since its owner
/// could read or replace what lockfs keeps there.
public enum PrivateFiles {
    /// Creates `url` (and missing parents) 0700, or tightens it to 0700.
    public static func directory(_ url: URL) throws {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try tighten(url.path, to: 0o700)
    }

    /// Creates an empty file 0600 if there is none, or tightens it to 0600.
    public static func file(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw LockError.io(errno: errno, "create \(path)") }
        close(fd)
        try tighten(path, to: 0o600)
    }

    /// Tightens `path` to `mode` if it exists (no error if it does not).
    public static func tightenIfPresent(_ path: String, to mode: mode_t) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        try tighten(path, to: mode)
    }

    private static func tighten(_ path: String, to mode: mode_t) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw LockError.io(errno: errno, "stat \(path)") }
        guard st.st_uid == geteuid() else {
            throw LockError.invalid("\(path) belongs to another user (uid \(st.st_uid)); lockfs keeps keys and plaintext there, so it must be yours: use another --home")
        }
        if st.st_mode & 0o7777 != mode && chmod(path, mode) != 0 {
            throw LockError.io(errno: errno, "chmod \(path)")
        }
    }
}

/// What this device needs to reach its vault without asking for the password
/// again: the server, the device token and the vault master key.
///
/// Stored as JSON in `device.json`, mode 0600, written atomically
/// (docs/security.md, "Device credentials"). Anyone who can read this file
/// can read the vault: it is as sensitive as an SSH private key.
/// `lockfs logout` revokes the token and deletes the file.
public struct DeviceCredentials: Sendable {
    public var server: String
    public var user: String
    public var device: DeviceID
    public var deviceName: String
    public var vault: VaultID
    public var token: String
    /// Every key generation this device holds, newest first (key generations:
    /// a rotation adds one; docs/design.md, "Key generations and the roster").
    public var generations: [VaultKeys]
    /// The newest generation: what new chunks and entries are sealed with.
    public var keys: VaultKeys { generations[0] }
    /// A private CA for the server's TLS certificate, if any.
    public var caFile: String?
    /// The user allowed plain HTTP to another machine (`--insecure-http`).
    public var insecureHTTP: Bool
    /// This device's signing and X25519 keys; nil in a device.json written by
    /// lockfs 0.1 (`withIdentity()` adds them).
    public var identity: DeviceIdentity?
    /// The password's KDF parameters this device last saw (at enrolment, or
    /// its own password change); a keyring with weaker ones is refused.
    public var kdf: KDFParameters?

    public init(server: String, user: String, device: DeviceID, deviceName: String, vault: VaultID,
                token: String, keys: VaultKeys, olderKeys: [VaultKeys] = [], caFile: String? = nil, insecureHTTP: Bool = false,
                identity: DeviceIdentity? = nil, kdf: KDFParameters? = nil) {
        self.server = server
        self.user = user
        self.device = device
        self.deviceName = deviceName
        self.vault = vault
        self.token = token
        generations = [keys] + olderKeys
        self.caFile = caFile
        self.insecureHTTP = insecureHTTP
        self.identity = identity
        self.kdf = kdf
    }

    /// These credentials with a device identity: the one they have, or a new
    /// one (a device enrolled by lockfs 0.1; the server registers its key at
    /// its first signed entry). `added` says whether it is new, and so
    /// whether the file must be saved again.
    public func withIdentity() -> (credentials: DeviceCredentials, added: Bool) {
        if identity != nil { return (self, false) }
        var c = self
        c.identity = .generate()
        return (c, true)
    }

    /// The file's JSON shape. `masterKey` is base64 of MK; version 1.
    /// `olderMasterKeys` (base64, newest first) holds the generations before
    /// the newest when the vault's keys were rotated; `masterKey` is then the
    /// newest.
    /// `signingSeed` and `boxSecret` (base64, 32 bytes each) were added by
    /// lockfs 0.2 as optional keys, so that lockfs 0.1 still reads the file
    /// and meets the server's "upgrade lockfs" when it writes.
    struct File: Codable {
        var version: Int
        var server: String
        var user: String
        var device: String
        var deviceName: String
        var vault: String
        var token: String
        var masterKey: String
        var caFile: String?
        var insecureHTTP: Bool?
        var signingSeed: String?
        var boxSecret: String?
        var kdf: String?
        var olderMasterKeys: [String]?
    }

    /// Writes the file atomically with mode 0600 (a temporary file, fsync, rename).
    public func save(to url: URL) throws {
        var mk = keys.master.withUnsafeBytes { Array($0) }
        defer { Sodium.wipe(&mk) }
        let file = File(version: 1, server: server, user: user, device: device.hex, deviceName: deviceName,
                        vault: vault.hex, token: token, masterKey: Data(mk).base64EncodedString(), caFile: caFile,
                        insecureHTTP: insecureHTTP ? true : nil,
                        signingSeed: identity.map { $0.signingSeed.withUnsafeBytes { Data($0).base64EncodedString() } },
                        boxSecret: identity.map { $0.boxSecret.withUnsafeBytes { Data($0).base64EncodedString() } },
                        kdf: kdf.map { Hex.encode($0.encoded) },
                        olderMasterKeys: generations.count > 1
                            ? generations.dropFirst().map { $0.master.withUnsafeBytes { Data($0).base64EncodedString() } } : nil)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(file)
        try PrivateFiles.directory(url.deletingLastPathComponent())
        try writeFileAtomically(data, to: url, mode: 0o600)
    }

    /// Reads the credentials.
    /// - Throws: `LockError.notLoggedIn` when there is no file; `.invalid` when it is damaged.
    public static func load(from url: URL) throws -> DeviceCredentials {
        guard let data = FileManager.default.contents(atPath: url.path) else { throw LockError.notLoggedIn }
        guard let file = try? JSONDecoder().decode(File.self, from: data), file.version == 1,
              let device = DeviceID(hex: file.device), let vault = VaultID(hex: file.vault),
              var mk = Data(base64Encoded: file.masterKey).map({ Array($0) }), mk.count == 32 else {
            throw LockError.invalid("\(url.path) is damaged; run `lockfs login` again")
        }
        defer { Sodium.wipe(&mk) }
        let master = try mk.withUnsafeBytes { try SecretKey<KeyPurposes.Master>(copying: $0) }
        var identity: DeviceIdentity? = nil
        if let s = file.signingSeed, let b = file.boxSecret {
            guard var seed = Data(base64Encoded: s).map(Array.init), seed.count == 32,
                  var box = Data(base64Encoded: b).map(Array.init), box.count == 32 else {
                throw LockError.invalid("\(url.path) is damaged (its device keys); run `lockfs login` again")
            }
            defer { Sodium.wipe(&seed); Sodium.wipe(&box) }
            identity = DeviceIdentity(signingSeed: try seed.withUnsafeBytes { try SecretKey(copying: $0) },
                                      boxSecret: try box.withUnsafeBytes { try SecretKey(copying: $0) })
        }
        var older: [VaultKeys] = []
        for text in file.olderMasterKeys ?? [] {
            guard var bytes = Data(base64Encoded: text).map(Array.init), bytes.count == 32 else {
                throw LockError.invalid("\(url.path) is damaged (its older key generations); run `lockfs login` again")
            }
            defer { Sodium.wipe(&bytes) }
            older.append(VaultKeys(vaultID: vault, master: try bytes.withUnsafeBytes { try SecretKey(copying: $0) }))
        }
        return DeviceCredentials(server: file.server, user: file.user, device: device, deviceName: file.deviceName,
                                 vault: vault, token: file.token, keys: VaultKeys(vaultID: vault, master: master),
                                 olderKeys: older, caFile: file.caFile,
                                 // A file of lockfs 0.1 (no device keys) was allowed plain HTTP with a
                                 // warning: it stays allowed, so that its device can still log out.
                                 insecureHTTP: file.insecureHTTP ?? (file.signingSeed == nil), identity: identity,
                                 kdf: file.kdf.flatMap(Hex.decode).flatMap { try? KDFParameters(encoded: $0) })
    }
}

/// Writes `data` to `url` through a temporary file in the same directory:
/// write, fsync, rename, fsync the directory. Readers see the old or the new
/// file, never a mix, even after a crash.
public func writeFileAtomically(_ data: Data, to url: URL, mode: mode_t = 0o644) throws {
    let e = replaceFile(url.path, with: data, mode: mode, sync: true, syncFolder: true)
    guard e == 0 else { throw LockError.io(errno: e, "write \(url.path)") }
}
