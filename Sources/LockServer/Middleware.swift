import Foundation
import Hummingbird
import LockCrypto
import LockWire
import Logging
import NIOCore

/// Requires `Authorization: Bearer TOKEN` of an enrolled, unrevoked device.
struct AuthMiddleware: RouterMiddleware {
    let store: any MetadataStore

    func handle(_ request: Request, context: ServerContext,
                next: (Request, ServerContext) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer "),
              let hash = Credentials.tokenHash(String(header.dropFirst(7))),
              let found = try await store.device(tokenHash: hash, now: Date()) else {
            throw ServerError.unauthorized
        }
        var context = context
        context.auth = found
        context.logger[metadataKey: "account"] = "\(found.0.id)"
        context.logger[metadataKey: "device"] = "\(found.1.id.hex.prefix(8))"
        return try await next(request, context)
    }
}

/// Maps every error to a JSON error body with a stable code, and counts
/// requests, bytes and latency per route for `/metrics`.
struct ErrorAndMetricsMiddleware: RouterMiddleware {
    let metrics: ServerMetrics

    func handle(_ request: Request, context: ServerContext,
                next: (Request, ServerContext) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let route = context.endpointPath ?? "unmatched"
        let response: Response
        do {
            response = try await next(request, context)
        } catch let error as ServerError {
            if case .internalError(let detail) = error { context.logger.error("internal error", metadata: ["detail": "\(detail)"]) }
            response = try error.response(from: request, context: context)
        } catch let error as WireError {
            response = try ServerError.badRequest("malformed body: \(error)").response(from: request, context: context)
        } catch let error as CryptoError {
            response = try ServerError.badRequest("malformed envelope: \(error)").response(from: request, context: context)
        } catch let error as any HTTPResponseError {
            response = try error.response(from: request, context: context)
        } catch {
            context.logger.error("unexpected error", metadata: ["error": "\(error)"])
            response = try ServerError.internalError("\(error)").response(from: request, context: context)
        }
        metrics.record(method: request.method.rawValue, route: route, status: response.status.code,
                       duration: ContinuousClock.now - start)
        return response
    }
}

extension Request {
    /// The body, at most `limit` bytes.
    /// - Throws: `ServerError.payloadTooLarge` past the limit.
    func bytes(limit: Int) async throws -> [UInt8] {
        do {
            let buffer = try await body.collect(upTo: limit)
            return Array(buffer: buffer)
        } catch is NIOTooManyBytesError {
            throw ServerError.payloadTooLarge(limit: limit)
        }
    }

    /// Checks the Content-Type (parameters such as charset are ignored).
    func require(contentType expected: String) throws {
        let type = headers[.contentType]?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard type == expected else { throw ServerError.unsupportedMediaType(expected: expected) }
    }
}
