/// The rule for device names, shared by the server (which enforces it) and
/// the client (which checks before it asks).
///
/// A device name is shown to people in `lockfs devices`, beside the one they
/// are about to revoke: it must not be able to hide or reorder characters.
/// So: 1–128 bytes of UTF-8, no control, format (bidi overrides, zero-width
/// joiners), separator, private-use or unassigned characters, and no
/// leading or trailing white space.
extension Substring {
    fileprivate var trimmingTrailingSpaces: String {
        var s = self
        while s.last?.unicodeScalars.first?.properties.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }
}

public enum DeviceName {
    public static let rule = "device names are 1–128 bytes without control, format (bidi, zero-width), private-use or unassigned characters, and without leading or trailing spaces"

    /// Why `name` is not a valid device name, or nil if it is.
    public static func problem(_ name: String) -> String? {
        let hidden: Set<Unicode.GeneralCategory> = [.control, .format, .lineSeparator, .paragraphSeparator,
                                                    .privateUse, .unassigned, .surrogate]
        guard (1...128).contains(name.utf8.count),
              !name.unicodeScalars.contains(where: { hidden.contains($0.properties.generalCategory) }),
              name.unicodeScalars.first?.properties.isWhitespace == false,
              name.unicodeScalars.last?.properties.isWhitespace == false else { return rule }
        return nil
    }

    /// `name`, or `name (2)`, `name (3)`… — the first not in `taken`; a long
    /// name is shortened (at a character boundary) so that the result stays
    /// within 128 bytes.
    public static func unique(_ name: String, taken: Set<String>) -> String {
        guard taken.contains(name) else { return name }
        var n = 2
        while true {
            let suffix = " (\(n))"
            var base = Substring(name)
            while base.utf8.count + suffix.utf8.count > 128 { base = base.dropLast() }
            let candidate = base.trimmingTrailingSpaces + suffix
            if !taken.contains(candidate) { return candidate }
            n += 1
        }
    }
}
