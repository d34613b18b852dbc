import Foundation
import LockCrypto

/// AWS Signature Version 4 (header form), as S3-compatible stores expect it.
///
/// Written by hand over libsodium's SHA-256 and HMAC-SHA256 (LockCrypto's
/// `SHA256`) rather than through libcurl's `CURLOPT_AWS_SIGV4`: the store
/// runs on AsyncHTTPClient (docs/design.md, "S3-compatible blob store",
/// says why). It is proved byte for byte against AWS's published vectors
/// (Tests/Vectors/sigv4.json), which botocore recomputes in
/// Tests/Vectors/crosscheck.py.
///
/// The signer is pure: no clock, no I/O. The caller supplies the timestamp
/// (`amzDate`) and every header to sign, including `host` and `x-amz-date`.
public struct SigV4Signer: Sendable {
    public let credentials: S3Credentials
    /// The region of the credential scope, e.g. "us-east-1".
    public let region: String
    /// The service of the credential scope: "s3" for object stores.
    public let service: String

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// A request as it will be sent, before signing.
    public struct Request: Sendable {
        /// "GET", "PUT", …
        public var method: String
        /// The absolute path, not percent-encoded (the signer encodes it;
        /// the URL sent must carry the same encoding, `SigV4Signer.encodePath`).
        public var path: String
        /// Query parameters as (name, value), not percent-encoded, any order.
        public var query: [(String, String)]
        /// Every header to sign, names in any case, in the order sent; a name may repeat.
        public var headers: [(String, String)]
        /// Lowercase hex SHA-256 of the body (for S3 the same value goes in
        /// the `x-amz-content-sha256` header, which is then among `headers`).
        public var payloadSHA256: String

        public init(method: String, path: String, query: [(String, String)] = [], headers: [(String, String)], payloadSHA256: String) {
            self.method = method
            self.path = path
            self.query = query
            self.headers = headers
            self.payloadSHA256 = payloadSHA256
        }
    }

    /// The three published stages of a signature (each is a golden vector).
    public struct Signature: Sendable, Equatable {
        public let canonicalRequest: String
        public let stringToSign: String
        /// The value of the `Authorization` header.
        public let authorization: String
    }

    /// Hex SHA-256 of the empty body.
    public static let emptyPayloadSHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// Signs `request` made at `amzDate` ("YYYYMMDDTHHMMSSZ", the value of its x-amz-date header).
    public func sign(_ request: Request, amzDate: String) -> Signature {
        // Canonical headers: names lower-cased; a repeated name's values
        // joined by "," in the order sent; each value trimmed, inner runs of
        // spaces collapsed to one; sorted by name (bytewise).
        var values: [String: [String]] = [:]
        for (name, value) in request.headers {
            values[name.lowercased(), default: []].append(Self.trimAll(value))
        }
        let names = values.keys.sorted(by: Self.bytewiseLess)
        let signedHeaders = names.joined(separator: ";")

        // Canonical query: each name and value URI-encoded (also "/"), sorted
        // by encoded name, then by encoded value; a bare name gets "=".
        let query = request.query
            .map { (Self.uriEncode($0.0, keepSlash: false), Self.uriEncode($0.1, keepSlash: false)) }
            .sorted { $0.0 != $1.0 ? Self.bytewiseLess($0.0, $1.0) : Self.bytewiseLess($0.1, $1.1) }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")

        // The canonical request, one part a line:
        let canonicalRequest = [
            request.method,                         // the HTTP method
            Self.encodePath(request.path),          // the path, URI-encoded once, "/" kept (S3 never normalizes)
            query,                                  // the canonical query ("" when none)
            names.map { "\($0):\(values[$0]!.joined(separator: ","))" }.joined(separator: "\n")
                + "\n",                             // each signed header "name:value", then the list's own end of line
            signedHeaders,                          // which headers are signed: "host;x-amz-date;…"
            request.payloadSHA256,                  // binds the body: hex SHA-256 of the bytes sent
        ].joined(separator: "\n")

        // The credential scope limits the derived key to one day, region and service.
        let date = String(amzDate.prefix(8))
        let scope = "\(date)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256",                                    // the algorithm
            amzDate,                                               // when (the server rejects skew over 15 min)
            scope,                                                 // the scope the key below is derived for
            Hex.encode(SHA256.hash(Array(canonicalRequest.utf8))), // the request, hashed
        ].joined(separator: "\n")

        // The signing key: HMAC chain from "AWS4" + secret over date, region, service, "aws4_request".
        var key = SHA256.hmac(key: Array(("AWS4" + credentials.secretAccessKey).utf8), Array(date.utf8))
        for part in [region, service, "aws4_request"] { key = SHA256.hmac(key: key, Array(part.utf8)) }
        let signature = Hex.encode(SHA256.hmac(key: key, Array(stringToSign.utf8)))

        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), "
            + "SignedHeaders=\(signedHeaders), Signature=\(signature)"
        return Signature(canonicalRequest: canonicalRequest, stringToSign: stringToSign, authorization: authorization)
    }

    /// "YYYYMMDDTHHMMSSZ" in UTC, the form of x-amz-date.
    public static func amzDate(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    /// The path as signed and sent: every byte of its UTF-8 URI-encoded except
    /// the unreserved characters and "/".
    public static func encodePath(_ path: String) -> String { uriEncode(path, keepSlash: true) }

    /// AWS's UriEncode: bytes other than A–Z a–z 0–9 - . _ ~ become %XX
    /// (upper-case hex); "/" too unless `keepSlash`. A space is %20, never "+".
    public static func uriEncode(_ text: String, keepSlash: Bool) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for b in text.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(b)
            case UInt8(ascii: "/") where keepSlash:
                out.append(b)
            default:
                out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 0xF)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Trims spaces and tabs at both ends and collapses inner runs to one space.
    static func trimAll(_ value: String) -> String {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
    }

    /// Order by UTF-8 bytes (code points), as the specification sorts.
    static func bytewiseLess(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }
}
