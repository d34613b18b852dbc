import ArgumentParser
import Foundation
import Hummingbird
import LockServer
import LockWire
import Logging

/// `lockfs-server serve`: run the server until SIGTERM or SIGINT.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the server (SQLite or PostgreSQL metadata + local blobs) until SIGTERM.")

    @OptionGroup var data: DataOptions

    @Option(help: ArgumentHelp("Address and port to listen on; port 0 picks a free one.", valueName: "HOST:PORT"))
    var listen = "127.0.0.1:7440"

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("PEM certificate chain; enables TLS with --tls-key.", valueName: "FILE"))
    var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("PEM private key for --tls-cert.", valueName: "FILE"))
    var tlsKey: String?

    @Flag(name: .customLong("insecure-http"), help: ArgumentHelp(
        "Serve plain HTTP on an address other than loopback (behind a TLS-terminating proxy on the same host, or a network you fully trust)."))
    var insecureHTTP = false

    @Flag(name: .customLong("open-registration"), help: "Let anyone register without an invite (demos only).")
    var openRegistration = false

    @Option(help: ArgumentHelp("Default storage quota per account (e.g. 50G); none by default.", valueName: "SIZE"))
    var quota: String?

    @Option(name: .customLong("login-refill"), help: ArgumentHelp(
        "Seconds per login attempt regained by an account name and address after a burst of 10 (default 6).", valueName: "SECONDS"))
    var loginRefill: Double = 6

    @Option(name: .customLong("long-polls-per-account"), help: ArgumentHelp(
        "Journal long-polls one account may hold open at once; more are answered 429 (default 32).", valueName: "N"))
    var longPollsPerAccount = APIv1.maxLongPollsPerAccount

    @Option(name: .customLong("metrics-token-file"), help: ArgumentHelp(
        "A file whose first line is the bearer token GET /metrics needs; without it only this machine gets /metrics, and not through a proxy.",
        valueName: "FILE"))
    var metricsTokenFile: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func validate() throws {
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard longPollsPerAccount >= 1 else { throw ValidationError("--long-polls-per-account must be 1 or more") }
        guard let (host, _) = parseListen() else { throw ValidationError("--listen must be HOST:PORT, e.g. 127.0.0.1:7440") }
        if tlsCert == nil && !insecureHTTP && !Loopback.contains(host: host) {
            throw ValidationError("""
                refusing to serve plain HTTP on \(host): device tokens and login secrets would cross the network in clear. \
                Give --tls-cert FILE --tls-key FILE (docs/operations.md, "TLS"), or listen on 127.0.0.1 behind a \
                TLS-terminating proxy; --insecure-http allows it on a network you fully trust.
                """)
        }
        if let quota, parseSize(quota) == nil { throw ValidationError("--quota must be a size such as 500M or 20G") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        guard loginRefill > 0, loginRefill <= 86_400 else { throw ValidationError("--login-refill must be between 0 and 86400 seconds") }
    }

    func parseListen() -> (String, Int)? {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
              (0...65535).contains(port) else { return nil }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: "lockfs-server")
        logger.logLevel = Logger.Level(rawValue: logLevel)!
        let (store, blobs) = try await data.openStores(logger: logger)
        try await data.checkBlobStore(blobs)
        var settings = ServerSettings()
        settings.openRegistration = openRegistration
        settings.defaultQuota = quota.flatMap(parseSize)
        settings.loginInterval = .milliseconds(Int64(loginRefill * 1000))
        settings.longPollsPerAccount = longPollsPerAccount
        if let metricsTokenFile {
            guard let text = try? String(contentsOfFile: metricsTokenFile, encoding: .utf8),
                  let token = text.split(separator: "\n").first.map({ $0.trimmingCharacters(in: .whitespaces) }), token.count >= 16 else {
                throw ValidationError("--metrics-token-file \(metricsTokenFile): its first line must be a token of 16 characters or more")
            }
            settings.metricsToken = token
        }
        let (host, port) = parseListen()!
        let api = ServerAPI(store: store, blobs: blobs, settings: settings)
        let tls = tlsCert != nil
        let app = try api.application(
            listen: ListenSettings(host: host, port: port, tlsCertificate: tlsCert, tlsKey: tlsKey),
            logger: logger,
            onRunning: { bound in
                // Scripts and tests read this line to learn the port.
                let line = "lockfs-server listening on \(tls ? "https" : "http")://\(host):\(bound) (data: \(data.directory.path))\n"
                FileHandle.standardOutput.write(Data(line.utf8))
            })
        if openRegistration { logger.warning("open registration: anyone who can reach this server can create an account") }
        try await app.runService()
        logger.info("stopped")
    }
}
