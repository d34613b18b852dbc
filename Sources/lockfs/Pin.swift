import ArgumentParser
import Foundation
import LockClient

/// `lockfs pin PATH...`: keep files or folders offline for good.
struct Pin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Keep files or folders in a mount offline (folders: everything in them, now and later).",
        discussion: "Returns when everything is local, with a progress bar on a terminal. Ctrl-C stops waiting; the pin stays.")
    @Argument(help: "Files or folders inside a lockfs mount.") var paths: [String]

    func run() async throws {
        for p in paths { try MountControl.pin(p) }
        let bar = ProgressLine()
        defer { bar.end() }
        while true {
            var local = 0, total = 0
            for p in paths { let (l, t) = try MountControl.progress(p); local += l; total += t }
            let engine = try? MountControl.engine(paths[0])
            if let alarm = engine?.integrityAlarm { throw LockError.integrity(alarm) }
            bar.show("pinning", done: local, total: total, note: engine.flatMap { $0.online ? nil : "waiting for the server" })
            if local >= total { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        bar.end()
        print("pinned: \(paths.joined(separator: " "))")
    }
}

/// `lockfs unpin PATH...`: the space becomes evictable.
struct Unpin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Let pinned files or folders be evicted from the cache again.")
    @Argument(help: "Files or folders inside a lockfs mount.") var paths: [String]

    func run() async throws {
        for p in paths { try MountControl.unpin(p) }
        print("unpinned: \(paths.joined(separator: " "))")
    }
}
