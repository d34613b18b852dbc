import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import NIOCore
import Logging
import NIOSSL
import ServiceLifecycle

/// Where and how an instance listens.
public struct ListenSettings: Sendable {
    public var host: String
    public var port: Int
    /// PEM certificate chain and private key; plain HTTP without them.
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// Connections idle longer than this are closed (slow or vanished clients).
    public var idleTimeout: Duration = .seconds(90)

    public init(host: String = "127.0.0.1", port: Int = 7440, tlsCertificate: String? = nil, tlsKey: String? = nil) {
        self.host = host
        self.port = port
        self.tlsCertificate = tlsCertificate
        self.tlsKey = tlsKey
    }
}

extension ServerAPI {
    /// A Hummingbird application serving this API, with TLS when configured.
    ///
    /// `onRunning` receives the bound port (useful with port 0).
    public func application(listen: ListenSettings, logger: Logger,
                            onRunning: @escaping @Sendable (Int) async -> Void = { _ in })
        throws -> some ApplicationProtocol
    {
        let idle = TimeAmount.nanoseconds(Int64(listen.idleTimeout.components.seconds) * 1_000_000_000)
        let http1 = HTTPServerBuilder.http1(configuration: .init(idleTimeout: idle))
        let server: HTTPServerBuilder
        if let cert = listen.tlsCertificate, let key = listen.tlsKey {
            let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
            let tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            server = try .tls(http1, tlsConfiguration: tls)
        } else {
            server = http1
        }
        // A shared store's cross-instance wake-ups run beside the server.
        var services: [any Service] = []
        if let events = store as? any JournalEventSource {
            services.append(JournalEventsService(source: events, notifier: notifier))
        }
        return Application(
            router: router(), server: server,
            configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "lockfs-server",
                                 backlog: 4096),
            services: services,
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? listen.port) },
            logger: logger)
    }
}


/// Runs a store's `JournalEventSource` as a service until graceful shutdown.
struct JournalEventsService: Service {
    let source: any JournalEventSource
    let notifier: JournalNotifier

    func run() async throws {
        await cancelWhenGracefulShutdown { await source.runJournalEvents(into: notifier) }
    }
}
