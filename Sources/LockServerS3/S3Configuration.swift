import Foundation

/// A mistake in `--blobs s3://…` or in the S3 credentials: the message says
/// what is wrong and how to write it.
public struct S3ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An access key pair (and, for temporary credentials, a session token).
///
/// Never printed: `description` shows the key id only.
public struct S3Credentials: Sendable, Equatable, CustomStringConvertible {
    public let accessKeyID: String
    public let secretAccessKey: String
    /// Sent as (and signed in) `x-amz-security-token` when present.
    public let sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String { "S3Credentials(\(accessKeyID), secret hidden)" }

    /// From AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and (optional) AWS_SESSION_TOKEN.
    /// - Throws: `S3ConfigError` naming what is missing.
    public static func fromEnvironment(_ environment: [String: String]) throws(S3ConfigError) -> S3Credentials {
        let id = environment["AWS_ACCESS_KEY_ID"].flatMap { $0.isEmpty ? nil : $0 }
        let secret = environment["AWS_SECRET_ACCESS_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        guard let id, let secret else {
            throw S3ConfigError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                + "(and AWS_SESSION_TOKEN for temporary ones), or pass --s3-credentials FILE")
        }
        let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }

    /// From a file in the AWS shared-credentials form — the `[default]`
    /// section (or lines before any section) with `aws_access_key_id`,
    /// `aws_secret_access_key` and optional `aws_session_token` — or as
    /// `AWS_ACCESS_KEY_ID=…` lines; `#` and `;` start comments.
    /// - Throws: `S3ConfigError` when the file cannot be read or lacks a key.
    public static func fromFile(_ path: String) throws(S3ConfigError) -> S3Credentials {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw S3ConfigError("cannot read the S3 credentials file \(path): \((error as NSError).localizedDescription)")
        }
        var section: String? = nil
        var found: [String: String] = [:]
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                continue
            }
            guard section == nil || section == "default", let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.first == value.last, value.first == "\"" || value.first == "'" {
                value = String(value.dropFirst().dropLast())
            }
            found[key] = value
        }
        guard let id = found["aws_access_key_id"], !id.isEmpty,
              let secret = found["aws_secret_access_key"], !secret.isEmpty else {
            throw S3ConfigError("the S3 credentials file \(path) needs aws_access_key_id and aws_secret_access_key "
                                + "(in its [default] section, or as KEY = VALUE lines)")
        }
        let token = found["aws_session_token"].flatMap { $0.isEmpty ? nil : $0 }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }
}

/// Where blobs go: `s3://BUCKET[/PREFIX]?endpoint=URL&region=R&style=path|virtual`.
///
/// - `endpoint`: the store's base URL, `http(s)://HOST[:PORT]` (default
///   `https://s3.REGION.amazonaws.com`);
/// - `region`: the signing region (default `us-east-1`; MinIO and Garage
///   accept their configured one, Ceph RGW its zonegroup);
/// - `style`: `path` (`ENDPOINT/BUCKET/KEY`, the default with an endpoint)
///   or `virtual` (`BUCKET.HOST/KEY`, the default for AWS).
///
/// Objects are named `PREFIX` + `VAULTHEX/CHUNKHEX`.
public struct S3Location: Sendable, Equatable {
    public let bucket: String
    /// "" or a prefix ending in "/".
    public let prefix: String
    public let scheme: String
    public let host: String
    public let port: Int?
    public let region: String
    public let virtualHosted: Bool

    static let usage = "write it as s3://BUCKET?endpoint=http://HOST:PORT&region=REGION (endpoint and region optional for AWS)"

    /// - Throws: `S3ConfigError` saying what is wrong with `text`.
    public init(parsing text: String) throws(S3ConfigError) {
        guard text.hasPrefix("s3://"), let url = URLComponents(string: text) else {
            throw S3ConfigError("--blobs \(text) is not an s3:// URL; \(Self.usage)")
        }
        guard let bucket = url.host, !bucket.isEmpty else { throw S3ConfigError("--blobs \(text) names no bucket; \(Self.usage)") }
        guard Self.isValidBucket(bucket) else {
            throw S3ConfigError("“\(bucket)” is not a valid bucket name (3–63 characters: a–z, 0–9, “.” and “-”, starting and ending with a letter or digit)")
        }
        guard url.user == nil, url.password == nil else {
            throw S3ConfigError("--blobs must not contain credentials; use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or --s3-credentials FILE")
        }
        guard url.port == nil else { throw S3ConfigError("--blobs \(text): put the port in endpoint=, not after the bucket; \(Self.usage)") }
        var prefix = url.path
        while prefix.hasPrefix("/") { prefix.removeFirst() }
        if !prefix.isEmpty && !prefix.hasSuffix("/") { prefix += "/" }

        var endpoint: String? = nil, region = "us-east-1", style: String? = nil
        for item in url.queryItems ?? [] {
            guard let value = item.value, !value.isEmpty else { throw S3ConfigError("--blobs \(text): \(item.name)= has no value") }
            switch item.name {
            case "endpoint": endpoint = value
            case "region": region = value
            case "style": style = value
            default: throw S3ConfigError("--blobs \(text): unknown parameter “\(item.name)” (known: endpoint, region, style)")
            }
        }
        guard region.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw S3ConfigError("--blobs \(text): region “\(region)” is not a region name")
        }
        if let style, style != "path" && style != "virtual" {
            throw S3ConfigError("--blobs \(text): style must be path or virtual, not “\(style)”")
        }
        let base = endpoint ?? "https://s3.\(region).amazonaws.com"
        guard let e = URLComponents(string: base), let scheme = e.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = e.host, !host.isEmpty, e.path.isEmpty || e.path == "/", e.query == nil, e.user == nil else {
            throw S3ConfigError("--blobs \(text): endpoint must be http(s)://HOST[:PORT] with no path, e.g. endpoint=http://127.0.0.1:9000")
        }
        self.bucket = bucket
        self.prefix = prefix
        self.scheme = scheme
        self.host = host.lowercased()
        self.port = e.port
        self.region = region
        self.virtualHosted = (style ?? (endpoint == nil ? "virtual" : "path")) == "virtual"
    }

    static func isValidBucket(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (3...63).contains(bytes.count) else { return false }
        let alnum: (UInt8) -> Bool = { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) }
        return alnum(bytes.first!) && alnum(bytes.last!) && bytes.allSatisfy { alnum($0) || $0 == 0x2E || $0 == 0x2D }
    }

    /// The Host header: the host, with the port when it is not the scheme's default.
    var hostHeader: String {
        let h = virtualHosted ? "\(bucket).\(host)" : host
        guard let port, port != (scheme == "https" ? 443 : 80) else { return h }
        return "\(h):\(port)"
    }

    /// The unencoded path of an object (`key` "" is the bucket itself).
    func path(forKey key: String) -> String {
        virtualHosted ? "/\(key)" : "/\(bucket)/\(key)"
    }

    /// The URL to send: scheme, Host, the encoded path and the encoded query
    /// in canonical (sorted) order — the same bytes the signature covers.
    func url(path: String, query: [(String, String)]) -> String {
        var url = "\(scheme)://\(hostHeader)\(SigV4Signer.encodePath(path))"
        if !query.isEmpty {
            url += "?" + query.map { (SigV4Signer.uriEncode($0.0, keepSlash: false), SigV4Signer.uriEncode($0.1, keepSlash: false)) }
                .sorted { $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        }
        return url
    }

    /// For messages: `s3://BUCKET/PREFIX at ENDPOINT`.
    public var description: String {
        "s3://\(bucket)/\(prefix) at \(scheme)://\(host)\(port.map { ":\($0)" } ?? "")"
    }
}
