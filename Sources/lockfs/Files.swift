import ArgumentParser
import Foundation
import LockClient
import LockWire

#if canImport(Glibc)
import Glibc
#endif

/// `lockfs ls [PATH]`: a folder of the vault, without a mount.
struct Ls: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List a folder of the vault (without a mount).")
    @OptionGroup var home: HomeOptions
    @Argument(help: "A path in the vault, from its root.") var path: String = "/"
    @Flag(name: .shortAndLong, help: "Sizes, modes and times.") var long = false

    func run() async throws {
        let open = try OpenEngine(home)
        do { try await open.engine.pullOnce() } catch LockError.offline { printWarning("offline: showing the last known state") }
        let ino = try open.engine.resolve(path)
        for (name, a) in try open.engine.list(ino) {
            let suffix = a.kind == .directory ? "/" : a.kind == .symlink ? "@" : ""
            if long {
                let date = Date(timeIntervalSince1970: Double(a.mtime.nanoseconds) / 1e9)
                print(String(format: "%04o %12d ", a.mode, a.size) + ISO8601DateFormatter().string(from: date) + " " + name + suffix)
            } else {
                print(name + suffix)
            }
        }
    }
}

/// `lockfs put SRC PATH`: copies a local file into the vault.
struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a local file into the vault (without a mount).",
        discussion: """
            The copy is durable on this machine (chunked, encrypted, queued) when \
            "queued" is printed; the command then waits until it is on the server \
            unless --no-wait is given. A queued change survives a crash and is sent \
            by the next lockfs command or mount.
            """)
    @OptionGroup var home: HomeOptions
    @Argument(help: "The local file.") var source: String
    @Argument(help: "The path in the vault (its folder must exist).") var path: String
    @Flag(help: "Return once the copy is queued locally.") var noWait = false

    func run() async throws {
        let fd = open(source, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LockError.io(errno: errno, "open \(source)") }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        let opened = try OpenEngine(home)
        let engine = opened.engine
        do { try await engine.pullOnce() } catch LockError.offline { printWarning("offline: the copy will be uploaded later") }
        let parts = path.split(separator: "/").map(String.init)
        guard let name = parts.last else { throw CLIError.usage("give a file path in the vault, e.g. /docs/report.pdf") }
        let parent = try engine.resolve(parts.dropLast().joined(separator: "/"))
        let ino: UInt64
        if let existing = try? engine.lookup(parent: parent, name: name) {
            guard existing.kind == .file else { throw LockError.isDirectory }
            ino = existing.ino
        } else {
            ino = try engine.createFile(parent: parent, name: name, mode: UInt32(st.st_mode) & 0o777)
                .ino
        }
        let handle = try await engine.openForWrite(ino, truncate: true)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { let e = errno; try? engine.close(handle); throw LockError.io(errno: e, "read \(source)") }
            if n == 0 { break }
            _ = try buffer.withUnsafeBytes { try engine.write(handle, offset: offset, bytes: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            offset += n
        }
        try engine.close(handle)
        try engine.syncToDisk()
        print("queued: \(path) (\(formatBytes(offset)))")
        fflush(nil)
        if !noWait {
            try await opened.waitUntilSynced(timeout: nil)
            await engine.stop()
            print("on the server: \(path)")
        }
    }
}

/// `lockfs get PATH [DEST]`: copies a vault file out (to stdout without DEST).
struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Copy a file out of the vault (without a mount).")
    @OptionGroup var home: HomeOptions
    @Argument(help: "The path in the vault.") var path: String
    @Argument(help: "The local file to write (default: standard output).") var destination: String?

    func run() async throws {
        let open = try OpenEngine(home)
        do { try await open.engine.pullOnce() } catch LockError.offline { printWarning("offline: reading the last known state") }
        let ino = try open.engine.resolve(path)
        let attributes = try open.engine.getattr(ino)
        let size = attributes.size
        // The vault's permission bits (as cp keeps them; the umask applies, and
        // set-id bits are dropped: they came from another machine).
        let mode = mode_t(attributes.mode & 0o777)
        let out: Int32 = destination.map { Glibc.open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode) } ?? STDOUT_FILENO
        guard out >= 0 else { throw LockError.io(errno: errno, "create \(destination ?? "-")") }
        defer { if destination != nil { close(out) } }
        var offset = 0
        while offset < size {
            let bytes = try await open.engine.read(ino, offset: offset, size: 4 << 20)
            if bytes.isEmpty { break }
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { write(out, $0.baseAddress! + done, bytes.count - done) }
                guard n > 0 else { throw LockError.io(errno: errno, "write \(destination ?? "stdout")") }
                done += n
            }
            offset += bytes.count
        }
    }
}
