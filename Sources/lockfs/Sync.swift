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

    func run() async throws {
        let open = try OpenEngine(home)
        try await open.waitUntilSynced(timeout: timeout.map { .milliseconds(Int($0 * 1000)) })
        try await open.engine.pullOnce()
        await open.engine.stop()
        let s = open.engine.status()
        print("in sync: journal at \(s.cursor), nothing queued")
    }
}
