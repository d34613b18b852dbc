import Foundation
import LockWire

/// Which server URLs a client may talk to.
///
/// `https://` always; `http://` only to this machine (loopback) unless the
/// user says `--insecure-http`: over plain HTTP the login secret, the
/// recovery proof and every device token cross the network in clear, and
/// a stolen token is worth having (docs/security.md, "What a stolen token
/// can do"). The check happens before any connection is made.
public enum ServerURL {
    /// - Throws: `LockError.invalid` for a URL that is not http(s), and for
    ///   plain HTTP to another host without `insecureHTTP`, saying why and how to use TLS.
    public static func check(_ server: String, insecureHTTP: Bool) throws {
        guard let url = URL(string: server), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let host = url.host, !host.isEmpty else {
            throw LockError.invalid("the server URL must be https:// (or http:// to this machine), e.g. https://sync.example.org:7440")
        }
        guard scheme == "http", !insecureHTTP, !isLoopback(host) else { return }
        throw LockError.invalid("""
            \(server) is plain HTTP to another machine: the password's login secret and the device token would cross \
            the network in clear, and anyone who sees a token can use it. Serve TLS (lockfs-server serve --tls-cert F \
            --tls-key F, or a reverse proxy with a certificate) and use https://; give --ca-file for a private CA. \
            On a network you fully trust, --insecure-http allows it.
            """)
    }

    /// Whether `host` names this machine (`Loopback.contains`).
    public static func isLoopback(_ host: String) -> Bool { Loopback.contains(host: host) }
}
