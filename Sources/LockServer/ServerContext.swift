import Hummingbird
import NIOCore

/// Per-request context: the caller's address and, on authenticated routes,
/// the account and device its token belongs to.
public struct ServerContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The peer's IP address (for login rate limits).
    public let remoteAddress: String
    /// Set by `AuthMiddleware`; every handler on an authenticated route reads it through `caller`.
    public var auth: (account: Account, device: DeviceRecord)?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// The authenticated caller.
    /// - Throws: `ServerError.unauthorized` on a route without authentication.
    public func caller() throws -> (account: Account, device: DeviceRecord) {
        guard let auth else { throw ServerError.unauthorized }
        return auth
    }

    /// Bodies are read explicitly with per-route limits (`Request.bytes(limit:)`).
    public var maxUploadSize: Int { 64 << 10 }
}
