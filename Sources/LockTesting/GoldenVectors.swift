import Foundation

/// Golden test vectors: values computed once, committed under Tests/Vectors,
/// and checked forever.
///
/// A file is a JSON object `{"about": "...", "vectors": {"name": "value"}}`.
/// A missing file or name is a failure, never a silent write. With the
/// environment variable `LOCKFS_WRITE_VECTORS=1`, names missing from the file
/// are added (existing ones are never changed): that is how a new vector is
/// generated, once, and then committed.
public struct GoldenVectors {
    /// Where vector files live: Tests/Vectors at the package root.
    public static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Tests/Vectors")

    /// A mismatch between a computed value and the committed vector.
    public struct Mismatch: CustomStringConvertible, Sendable {
        public let name: String
        public let expected: String?
        public let actual: String
        public var description: String {
            "vector “\(name)”: committed \(expected ?? "<missing>"), computed \(actual). "
                + "A changed vector is a format change: bump the format version and update docs/design.md; "
                + "never edit the vector to make the test pass."
        }
    }

    /// Compares `computed` with `NAME.json`; returns every mismatch.
    ///
    /// - Parameter about: a sentence stored in a newly written file.
    public static func verify(_ computed: [String: String], file name: String, about: String) throws -> [Mismatch] {
        let url = directory.appendingPathComponent("\(name).json")
        let write = ProcessInfo.processInfo.environment["LOCKFS_WRITE_VECTORS"] == "1"
        var stored: [String: String] = [:]
        var storedAbout = about
        if let data = try? Data(contentsOf: url) {
            let object = try JSONDecoder().decode(File.self, from: data)
            stored = object.vectors
            storedAbout = object.about
        }
        var mismatches: [Mismatch] = []
        var added = false
        for (key, value) in computed.sorted(by: { $0.key < $1.key }) {
            if let expected = stored[key] {
                if expected != value { mismatches.append(Mismatch(name: key, expected: expected, actual: value)) }
            } else if write {
                stored[key] = value
                added = true
            } else {
                mismatches.append(Mismatch(name: key, expected: nil, actual: value))
            }
        }
        if added {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try (encoder.encode(File(about: storedAbout, vectors: stored)) + Data("\n".utf8)).write(to: url)
        }
        return mismatches
    }

    /// The committed vectors of `NAME.json` (to read old data forever).
    public static func load(file name: String) throws -> [String: String] {
        let data = try Data(contentsOf: directory.appendingPathComponent("\(name).json"))
        return try JSONDecoder().decode(File.self, from: data).vectors
    }

    private struct File: Codable {
        var about: String
        var vectors: [String: String]
    }
}

/// A small, fast, seeded generator (SplitMix64) for reproducible test data.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` pseudo-random bytes.
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= count {
                raw.storeBytes(of: next().littleEndian, toByteOffset: i, as: UInt64.self)
                i += 8
            }
            if i < count {
                var last = next()
                while i < count {
                    raw[i] = UInt8(truncatingIfNeeded: last)
                    last >>= 8
                    i += 1
                }
            }
        }
        return out
    }
}
