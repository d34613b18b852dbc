import ArgumentParser
import Foundation
import LockClient
import LockWire

/// `--home DIR`: which client this command is about. Every command takes it.
struct HomeOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Where this client keeps its credentials, index and cache (default: $LOCKFS_HOME, else the XDG directories).",
        valueName: "DIR"))
    var home: String?

    /// --home, else LOCKFS_HOME, else XDG.
    var clientHome: ClientHome { ClientHome.resolve(explicit: home) }

    /// This device's credentials, their server URL checked (`ServerURL`).
    /// - Throws: `LockError.notLoggedIn`, `.invalid`.
    func credentials() throws -> DeviceCredentials {
        let loaded = try DeviceCredentials.load(from: clientHome.credentialsFile)
        try ServerURL.check(loaded.server, insecureHTTP: loaded.insecureHTTP)
        if let url = URL(string: loaded.server), url.scheme?.lowercased() == "http", !ServerURL.isLoopback(url.host ?? "") {
            printWarning("\(loaded.server) is plain HTTP: the device token crosses the network in clear; move the server to https:// and log in again")
        }
        // A device enrolled by lockfs 0.1 gets its keys here, once: it signs
        // its entries from now on (docs/security.md, "Device keys"). Under a
        // lock, read again: two commands starting at once must not each make
        // keys (the server would bind one, and refuse the other's entries).
        guard loaded.identity == nil else { return loaded }
        return try withCredentialsLock {
            let again = try DeviceCredentials.load(from: clientHome.credentialsFile)
            let (credentials, added) = again.withIdentity()
            if added { try credentials.save(to: clientHome.credentialsFile) }
            return credentials
        }
    }

    /// Runs `body` holding an exclusive lock on the credentials (a lock file beside device.json).
    func withCredentialsLock<T>(_ body: () throws -> T) throws -> T {
        try Self.withCredentialsLock(clientHome.credentialsFile, body)
    }

    /// Runs `body` holding an exclusive lock on the credentials file `file`.
    static func withCredentialsLock<T>(_ file: URL, _ body: () throws -> T) throws -> T {
        let path = file.path + ".lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LockError.io(errno: errno, "open \(path)") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw LockError.io(errno: errno, "lock \(path)") }
        }
        return try body()
    }

    /// Refuses to enrol a second device into a home that has one.
    func requireNoCredentials() throws {
        let file = clientHome.credentialsFile
        if FileManager.default.fileExists(atPath: file.path) { throw CLIError.credentialsExist(file.path) }
    }
}

/// `--server URL` and `--ca-file F`, for the commands that do not yet have credentials.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The server's URL, e.g. https://sync.example.org:7440.", valueName: "URL"))
    var server: String

    @Option(name: .customLong("ca-file"), help: ArgumentHelp("A private CA certificate (PEM) for the server's TLS certificate.", valueName: "F"))
    var caFile: String?

    @Flag(name: .customLong("insecure-http"), help: "Allow http:// to another machine (tokens and the login secret then cross the network in clear).")
    var insecureHTTP = false

    mutating func validate() throws {
        do {
            try ServerURL.check(server, insecureHTTP: insecureHTTP)
        } catch LockError.invalid(let why) {
            throw ValidationError(why)
        }
        if server.hasSuffix("/") { server.removeLast() }
        if let caFile {
            guard FileManager.default.isReadableFile(atPath: caFile) else { throw ValidationError("cannot read --ca-file \(caFile)") }
            self.caFile = URL(fileURLWithPath: caFile).standardizedFileURL.path
        }
    }

    /// Warns when tokens and login secrets would cross a network in clear.
    func warnIfPlainHTTP() {
        guard let url = URL(string: server), url.scheme?.lowercased() == "http", !ServerURL.isLoopback(url.host ?? "") else { return }
        printWarning("\(server) is plain HTTP (--insecure-http): contents stay encrypted, but the login secret and the device token cross the network in clear; use https://")
    }
}

/// The account and this device, for the commands that enrol one (`init`, `login`).
struct EnrolOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The account name on the server.", valueName: "NAME"))
    var user: String
    @Option(name: .customLong("password-file"), help: ArgumentHelp("Read the password from the first line of F (for scripts).", valueName: "F"))
    var passwordFile: String?
    @Option(name: .customLong("device-name"), help: ArgumentHelp("This device's name in `lockfs devices` (default: the host name).", valueName: "N"))
    var deviceName: String?

    /// --device-name or the host name, checked as the server checks it.
    func validDeviceName() throws -> String {
        let name = deviceName ?? hostName()
        try validateDeviceName(name)
        return name
    }
}

/// How a command reaches the server: `HTTPRemote` over `CurlTransport`,
/// wrapped in `RetryingRemote`.
struct Connection {
    let http: HTTPRemote
    let policy: RetryPolicy

    init(server: String, caFile: String?, token: String? = nil, policy: RetryPolicy = .init()) {
        let transport = CurlTransport(settings: TransportSettings(caFile: caFile))
        http = HTTPRemote(baseURL: server, token: token, transport: transport)
        self.policy = policy
    }

    /// The device's own connection, from its credentials.
    init(_ credentials: DeviceCredentials, policy: RetryPolicy = .init()) {
        self.init(server: credentials.server, caFile: credentials.caFile, token: credentials.token, policy: policy)
    }

    var remote: any Remote { RetryingRemote(wrapping: http, policy: policy) }

    func authenticated(_ token: String) -> any Remote { RetryingRemote(wrapping: http.authenticated(token), policy: policy) }
}

/// This machine's host name: the default device name.
func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count - 1) == 0 else { return "lockfs device" }
    let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return name.isEmpty ? "lockfs device" : name
}

/// Checks a device name as the server does.
func validateDeviceName(_ name: String) throws {
    if let problem = DeviceName.problem(name) { throw CLIError.usage("--device-name: \(problem)") }
}
