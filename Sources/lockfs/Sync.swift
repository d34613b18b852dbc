import ArgumentParser
import Foundation
import LockClient

/// `lockfs sync --wait`: returns when every local change is on the server.
struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upload every queued local change and pull the server's latest.",
        discussion: """
            With --wait (the default) the command returns once every change made on this \
            device is in the server's journal. Without a server it keeps retrying, with \
            backoff, until --timeout.
            """)
    @OptionGroup var home: HomeOptions
    @Flag(help: "Wait until every local change is on the server (the default).") var wait = false
    @Option(help: ArgumentHelp("Give up after this many seconds (exit 75).", valueName: "SECONDS")) var timeout: Double?
    @Argument(help: "A lockfs mount point: wait for that mount's uploads (without it, this home's engine runs here).")
    var mountpoint: String?

    /// Waits until the mount's engine has nothing queued.
    func waitForMount(_ path: String) async throws {
        let deadline = timeout.map { ContinuousClock.now + .milliseconds(Int($0 * 1000)) }
        let bar = ProgressLine()
        defer { bar.end() }
        var first: Int?
        while true {
            let s = try MountControl.engine(path)
            if let alarm = s.integrityAlarm { throw LockError.integrity(alarm) }
            if s.queuedOperations == 0 { break }
            if first == nil { first = s.queuedOperations }
            bar.show("uploading", done: max(0, first! - s.queuedOperations), total: first!, bytes: false,
                     note: s.online ? "\(s.queuedOperations) change(s) left" : "waiting for the server")
            if let deadline, ContinuousClock.now > deadline { throw CLIError.timedOut(s.queuedOperations) }
            try await Task.sleep(for: .milliseconds(100))
        }
        bar.end()
        print("in sync: \(path)")
    }

    func run() async throws {
        if let mountpoint { return try await waitForMount(mountpoint) }
        let open = try OpenEngine(home)
        try await open.waitUntilSynced(timeout: timeout.map { .milliseconds(Int($0 * 1000)) })
        try await open.engine.pullOnce()
        await open.engine.stop()
        let s = open.engine.status()
        print("in sync: journal at \(s.cursor), nothing queued")
    }
}
