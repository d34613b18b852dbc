import Foundation
import Hummingbird
import LockCrypto
import LockWire

/// Every error the server reports, each with its HTTP status and a stable
/// machine code (docs/protocol.md, "Errors"). Messages never contain
/// another account's data or a secret.
public enum ServerError: Error, Sendable, Equatable {
    case badRequest(String)
    case unauthorized
    case forbidden(String)
    case notFound(String)
    case conflict(code: String, message: String)
    case missingChunks([ChunkID])
    case payloadTooLarge(limit: Int)
    case unsupportedMediaType(expected: String)
    case quotaExceeded(used: Int64, limit: Int64)
    case tooManyRequests(retryAfterSeconds: Int)
    case unavailable(String)
    case internalError(String)

    public var status: HTTPResponse.Status {
        switch self {
        case .badRequest: .badRequest
        case .unauthorized: .unauthorized
        case .forbidden: .forbidden
        case .notFound: .notFound
        case .conflict, .missingChunks: .conflict
        case .payloadTooLarge: .contentTooLarge
        case .unsupportedMediaType: .unsupportedMediaType
        case .quotaExceeded: .init(code: 507, reasonPhrase: "Insufficient Storage")
        case .tooManyRequests: .tooManyRequests
        case .unavailable: .serviceUnavailable
        case .internalError: .internalServerError
        }
    }

    /// The stable code clients switch on.
    public var code: String {
        switch self {
        case .badRequest: "bad_request"
        case .unauthorized: "unauthorized"
        case .forbidden: "forbidden"
        case .notFound: "not_found"
        case .conflict(let code, _): code
        case .missingChunks: "missing_chunks"
        case .payloadTooLarge: "too_large"
        case .unsupportedMediaType: "unsupported_media_type"
        case .quotaExceeded: "quota_exceeded"
        case .tooManyRequests: "rate_limited"
        case .unavailable: "unavailable"
        case .internalError: "internal"
        }
    }

    public var message: String {
        switch self {
        case .badRequest(let m): m
        case .unauthorized: "a valid device token is required (log in again with `lockfs login`)"
        case .forbidden(let m): m
        case .notFound(let m): m
        case .conflict(_, let m): m
        case .missingChunks(let ids): "the entry references \(ids.count) chunk(s) the server does not have; upload them first"
        case .payloadTooLarge(let limit): "the body is larger than this route accepts (\(limit) bytes)"
        case .unsupportedMediaType(let expected): "the body must be \(expected)"
        case .quotaExceeded(let used, let limit): "the account's quota is full (\(used) of \(limit) bytes used)"
        case .tooManyRequests(let s): "too many attempts; try again in \(s) s"
        case .unavailable(let m): m
        case .internalError: "internal server error (see the server's log)"
        }
    }

    /// The JSON error body.
    public var body: ErrorBody {
        if case .missingChunks(let ids) = self { return ErrorBody(error: code, message: message, missing: ids) }
        return ErrorBody(error: code, message: message)
    }
}

extension ServerError: HTTPResponseError {
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if case .tooManyRequests(let s) = self { headers[.retryAfter] = String(s) }
        if case .unauthorized = self { headers[.wwwAuthenticate] = "Bearer" }
        let data = (try? body.jsonData()) ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
