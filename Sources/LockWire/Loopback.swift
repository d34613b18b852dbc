/// Host names that stay on this machine, where plain HTTP is acceptable.
public enum Loopback {
    /// Whether `host` is localhost (or a name under .localhost), an address
    /// in 127.0.0.0/8, or ::1 (brackets allowed).
    public static func contains(host: String) -> Bool {
        var h = host.lowercased()
        if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        if h == "localhost" || h.hasSuffix(".localhost") || h == "::1" || h == "0:0:0:0:0:0:0:1" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }
}
