import Foundation
import LockServer
import NIOSSL
import PostgresNIO

/// Where and how to reach PostgreSQL: parsed from a
/// `postgres://USER@HOST[:PORT]/DB[?sslmode=…&host=/socket/dir]` URL.
///
/// The password never comes from the URL (a command line is visible to
/// every user of the machine): it is given separately, from PGPASSWORD or a
/// passfile (`PostgresPassfile`).
public struct PostgresSettings: Sendable, Equatable, CustomStringConvertible {
    /// How the connection is made.
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        /// A unix socket: `directory/.s.PGSQL.PORT`, as libpq names it.
        case socket(directory: String, port: Int)
    }

    /// libpq's `sslmode`, reduced to what the connection can do.
    public enum TLSMode: String, Sendable, Equatable, CaseIterable {
        case disable, prefer, require
        /// TLS with the certificate checked against `sslrootcert` (or the system's roots), not the host name.
        case verifyCA = "verify-ca"
        /// TLS with the certificate and the host name checked.
        case verifyFull = "verify-full"
    }

    public var endpoint: Endpoint
    public var user: String
    public var database: String
    public var tls: TLSMode
    /// PEM file of trusted roots for verify-ca / verify-full (`sslrootcert`).
    public var rootCertificate: String?
    public var password: String?
    /// The most connections the pool opens (besides the one LISTEN connection).
    public var maxConnections: Int = 10
    /// How long a request waits for a pooled connection before it gets a
    /// retryable `ServerError.unavailable` (PostgreSQL down or the pool busy).
    public var acquireTimeout: Duration = .seconds(5)
    /// How long opening one connection may take.
    public var connectTimeout: Duration = .seconds(5)
    /// How long one store operation may take once it has a connection. Past
    /// it the request gets a retryable `ServerError.unavailable` and the
    /// operation is left to finish or fail on its own: a query in flight when
    /// PostgreSQL went away was seen to never complete (tests, pg_ctl stop).
    public var operationTimeout: Duration = .seconds(30)

    public init(endpoint: Endpoint, user: String, database: String, tls: TLSMode = .prefer, password: String? = nil) {
        self.endpoint = endpoint
        self.user = user
        self.database = database
        self.tls = tls
        self.password = password
    }

    /// The default socket directory of Debian's PostgreSQL packages.
    public static let defaultSocketDirectory = "/var/run/postgresql"

    /// Parses a `postgres://` or `postgresql://` URL.
    ///
    /// - Throws: `PostgresSettingsError` with a message that says what to write instead.
    public init(url text: String) throws {
        func fail(_ why: String) -> PostgresSettingsError {
            PostgresSettingsError("--metadata \(Self.redacted(text)): \(why); expected postgres://USER@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require|verify-ca|verify-full][&host=/socket/dir]")
        }
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased() else {
            throw fail("not a URL")
        }
        guard scheme == "postgres" || scheme == "postgresql" else { throw fail("the scheme must be postgres://") }
        if components.password != nil {
            throw fail("a password in the URL would be visible to every user of this machine; put it in PGPASSWORD or a passfile (--pg-passfile, PGPASSFILE or ~/.pgpass) instead")
        }
        guard let user = components.percentEncodedUser.flatMap({ $0.removingPercentEncoding }), !user.isEmpty else {
            throw fail("the URL needs a user name (USER@HOST)")
        }
        let path = components.percentEncodedPath
        let database = String(path.drop { $0 == "/" }).removingPercentEncoding ?? ""
        guard !database.isEmpty, !database.contains("/") else { throw fail("the URL needs a database name (/DATABASE)") }
        var port = components.port ?? 5432

        var tls = TLSMode.prefer
        var socketDirectory: String? = nil
        var rootCertificate: String? = nil
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = TLSMode(rawValue: value) else {
                    throw fail("sslmode must be one of \(TLSMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                tls = mode
            case "host":
                guard value.hasPrefix("/") else { throw fail("host= must be the absolute path of a socket directory") }
                socketDirectory = value
            case "sslrootcert":
                rootCertificate = value
            case "port":
                guard let p = Int(value) else { throw fail("port= must be a number") }
                port = p
            default:
                throw fail("unknown parameter \(item.name) (known: sslmode, host, port, sslrootcert)")
            }
        }
        guard (1...65535).contains(port) else { throw fail("the port must be 1–65535") }
        let host = components.host.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding }
        let endpoint: Endpoint
        if let socketDirectory {
            endpoint = .socket(directory: socketDirectory, port: port)
        } else if let host {
            // An IPv6 literal comes back bracketed; the connection wants it bare.
            endpoint = .tcp(host: host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host, port: port)
        } else {
            endpoint = .socket(directory: Self.defaultSocketDirectory, port: port)
        }
        self.init(endpoint: endpoint, user: user, database: database, tls: tls)
        self.rootCertificate = rootCertificate
        if rootCertificate != nil && !(tls == .verifyCA || tls == .verifyFull) {
            throw fail("sslrootcert needs sslmode=verify-ca or verify-full")
        }
    }

    /// The passfile's host field for this endpoint (libpq's rule: a socket
    /// directory is matched by its path, the default one also by "localhost").
    var passfileHost: String {
        switch endpoint {
        case .tcp(let host, _): host
        case .socket(let directory, _): directory
        }
    }

    var port: Int {
        switch endpoint {
        case .tcp(_, let port), .socket(_, let port): port
        }
    }

    /// For logs and messages: never the password.
    public var description: String {
        switch endpoint {
        case .tcp(let host, let port):
            let h = host.contains(":") ? "[\(host)]" : host
            return "postgres://\(user)@\(h):\(port)/\(database)?sslmode=\(tls.rawValue)"
        case .socket(let directory, let port):
            return "postgres://\(user)@:\(port)/\(database)?host=\(directory)"
        }
    }

    /// The URL with any password replaced, for error messages.
    static func redacted(_ text: String) -> String {
        guard var c = URLComponents(string: text), c.password != nil else { return text }
        c.password = "REDACTED"
        return c.string ?? "(the URL)"
    }

    // MARK: PostgresNIO configurations

    func clientConfiguration() throws -> PostgresClient.Configuration {
        var config: PostgresClient.Configuration
        switch endpoint {
        case .tcp(let host, let port):
            let tls: PostgresClient.Configuration.TLS = switch self.tls {
            case .disable: .disable
            case .prefer: .prefer(try tlsConfiguration())
            case .require, .verifyCA, .verifyFull: .require(try tlsConfiguration())
            }
            config = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
        case .socket(let directory, let port):
            config = .init(unixSocketPath: "\(directory)/.s.PGSQL.\(port)", username: user, password: password, database: database)
        }
        config.options.additionalStartupParameters = [("application_name", "lockfs-server")]
        config.options.maximumConnections = maxConnections
        config.options.connectTimeout = connectTimeout
        config.options.connectionIdleTimeout = .seconds(60)
        config.options.keepAliveBehavior = .init(frequency: .seconds(30))
        return config
    }

    /// A single connection's configuration; `name` shows in pg_stat_activity.application_name.
    func connectionConfiguration(name: String = "lockfs-server") throws -> PostgresConnection.Configuration {
        var config: PostgresConnection.Configuration
        switch endpoint {
        case .tcp(let host, let port):
            let tls: PostgresConnection.Configuration.TLS = switch self.tls {
            case .disable: .disable
            case .prefer: .prefer(try NIOSSLContext(configuration: tlsConfiguration()))
            case .require, .verifyCA, .verifyFull: .require(try NIOSSLContext(configuration: tlsConfiguration()))
            }
            config = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
        case .socket(let directory, let port):
            config = .init(unixSocketPath: "\(directory)/.s.PGSQL.\(port)", username: user, password: password, database: database)
        }
        config.options.additionalStartupParameters = [("application_name", name)]
        config.options.connectTimeout = TimeAmount.nanoseconds(
            connectTimeout.components.seconds * 1_000_000_000 + connectTimeout.components.attoseconds / 1_000_000_000)
        return config
    }

    /// libpq's meaning: prefer and require encrypt without checking the
    /// certificate; verify-ca checks it; verify-full checks the host name too.
    private func tlsConfiguration() throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        switch self.tls {
        case .disable, .prefer, .require: tls.certificateVerification = .none
        case .verifyCA: tls.certificateVerification = .noHostnameVerification
        case .verifyFull: tls.certificateVerification = .fullVerification
        }
        if let rootCertificate {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(rootCertificate))
        }
        return tls
    }
}

/// A PostgreSQL URL or passfile that cannot be used; the message says why.
public struct PostgresSettingsError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// libpq's password file: lines of `host:port:database:user:password`,
/// `*` matching anything, `\:` and `\\` escaping, `#` comments. The first
/// matching line wins. Like libpq, a file readable by group or others is
/// refused (here with an error rather than a warning).
public enum PostgresPassfile {
    /// The password for `settings`, from `path`; nil if no line matches.
    public static func password(for settings: PostgresSettings, in path: String) throws -> String? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else {
            throw PostgresSettingsError("cannot read the passfile \(path)")
        }
        if let mode = attributes[.posixPermissions] as? NSNumber, mode.intValue & 0o077 != 0 {
            throw PostgresSettingsError("the passfile \(path) is readable by others; run: chmod 600 \(path)")
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw PostgresSettingsError("cannot read the passfile \(path)")
        }
        return password(for: settings, passfile: text)
    }

    /// The password for `settings` in passfile `text`; nil if no line matches.
    public static func password(for settings: PostgresSettings, passfile text: String) -> String? {
        var hosts = [settings.passfileHost]
        if case .socket(let directory, _) = settings.endpoint, directory == PostgresSettings.defaultSocketDirectory {
            hosts.append("localhost")
        }
        let wanted: [[String]] = [hosts, [String(settings.port)], [settings.database], [settings.user]]
        for line in text.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("#") { continue }
            let fields = split(String(line))
            guard fields.count == 5 else { continue }
            let matches = zip(fields.prefix(4), wanted).allSatisfy { field, values in field == "*" || values.contains(field) }
            if matches { return fields[4] }
        }
        return nil
    }

    /// Splits at unescaped colons, undoing `\:` and `\\`.
    private static func split(_ line: String) -> [String] {
        var fields: [String] = [], current = "", escaped = false
        for c in line {
            if escaped { current.append(c); escaped = false }
            else if c == "\\" { escaped = true }
            else if c == ":" && fields.count < 4 { fields.append(current); current = "" }
            else { current.append(c) }
        }
        fields.append(current)
        return fields
    }

    /// The password as libpq would find it: PGPASSWORD, else the passfile
    /// (`explicitPath`, else PGPASSFILE, else ~/.pgpass when it exists).
    public static func resolve(for settings: PostgresSettings, explicitPath: String?,
                               environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String? {
        if let pw = environment["PGPASSWORD"], !pw.isEmpty { return pw }
        if let explicitPath { return try password(for: settings, in: explicitPath) }
        if let path = environment["PGPASSFILE"], !path.isEmpty { return try password(for: settings, in: path) }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        let path = home + "/.pgpass"
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try password(for: settings, in: path)
    }
}
