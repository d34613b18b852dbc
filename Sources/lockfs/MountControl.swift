import CXattr
import Foundation
import LockClient
import LockFS

#if canImport(Glibc)
import Glibc
#endif

/// Talks to a running mount through its virtual extended attributes
/// (LockFileSystem: user.lockfs.pin, .progress, .engine, .status).
enum MountControl {
    /// A virtual attribute's value. - Throws: `CLIError.notInMount` when `path` is not in a lockfs mount.
    static func get(_ path: String, _ name: String) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        let n = getxattr(path, name, &buffer, buffer.count)
        guard n >= 0 else {
            if errno == ENOENT { throw LockError.notFound }
            throw CLIError.notInMount(path)
        }
        return Array(buffer.prefix(n))
    }

    static func pin(_ path: String) throws {
        guard setxattr(path, LockFileSystem.pinAttribute, "1", 1, 0) == 0 else {
            if errno == ENOENT { throw LockError.notFound }
            throw CLIError.notInMount(path)
        }
    }

    static func unpin(_ path: String) throws {
        guard removexattr(path, LockFileSystem.pinAttribute) == 0 || errno == ENODATA else {
            if errno == ENOENT { throw LockError.notFound }
            throw CLIError.notInMount(path)
        }
    }

    /// (local, total) bytes of content under `path`.
    static func progress(_ path: String) throws -> (Int, Int) {
        let parts = String(decoding: try get(path, LockFileSystem.progressAttribute), as: UTF8.self).split(separator: " ")
        return (Int(parts.first ?? "") ?? 0, Int(parts.last ?? "") ?? 0)
    }

    static func engine(_ path: String) throws -> EngineStatus {
        try JSONDecoder().decode(EngineStatus.self, from: Data(try get(path, LockFileSystem.engineAttribute)))
    }

    static func status(_ path: String) throws -> String {
        String(decoding: try get(path, LockFileSystem.statusAttribute), as: UTF8.self)
    }
}

/// A one-line progress bar on stderr when it is a terminal; silent otherwise.
struct ProgressLine {
    let enabled = isatty(STDERR_FILENO) == 1
    let start = ContinuousClock.now

    /// - Parameter bytes: whether `done` and `total` are bytes (else a count of changes).
    func show(_ label: String, done: Int, total: Int, bytes: Bool = true, note: String? = nil) {
        guard enabled else { return }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = seconds > 0.5 ? Double(done) / seconds : 0
        let width = 30
        let filled = total > 0 ? min(width, width * done / total) : width
        var line = "\(label) [" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
        guard bytes else {
            line += "\(done) of \(total)"
            if let note { line += " — \(note)" }
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            return
        }
        line += "\(formatBytes(done)) of \(formatBytes(total))"
        if rate > 0 {
            line += ", \(formatBytes(Int(rate)))/s"
            if total > done { line += ", ETA \(Int(Double(total - done) / rate)) s" }
        }
        if let note { line += " — \(note)" }
        FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
    }

    func end() { if enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } }
}
