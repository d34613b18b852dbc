import ArgumentParser
import Foundation
import LockClient

/// `lockfs verify`: is what the server stores still there, and still right?
struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the server's copy of the vault: the journal, and all or a sample of the file content.",
        discussion: """
            Verifies the whole journal from its first entry against what this device verified, \
            then fetches all chunks the vault's files use (or a random --sample of them), opens \
            each and checks it against its keyed id. Exit 0 when all is well, 76 when something \
            is missing or corrupt. A corrupt chunk or a journal that differs also raises the \
            integrity alarm (the server lied); missing chunks are for the server's operator to \
            restore from a backup. Nothing is cached or changed. Run it with no mount of the \
            home running (it needs the home to itself). The last result is kept in the home \
            (verify.json; `lockfs status` shows it) and, with --metrics-file, written for \
            Prometheus's node exporter (textfile collector).
            """)
    @OptionGroup var home: HomeOptions
    @Option(help: ArgumentHelp("Check this percentage of the chunks, chosen at random (default: all).", valueName: "PERCENT"))
    var sample: Double = 100
    @Flag(help: "Print the report as JSON.") var json = false
    @Option(help: ArgumentHelp("Also write the result as Prometheus text to this file.", valueName: "FILE"))
    var metricsFile: String?

    func validate() throws {
        guard sample > 0, sample <= 100 else { throw ValidationError("--sample is a percentage above 0, at most 100") }
    }

    func run() async throws {
        let open = try OpenEngine(home)
        let bar = ProgressLine()
        let report: Engine.AuditReport
        do {
            report = try await open.engine.audit(samplePercent: sample) { done, total in
                bar.show("verifying", done: done, total: total, bytes: false)
            }
        } catch {
            bar.end()
            throw error
        }
        bar.end()
        try Self.keep(report, in: home.clientHome, metricsFile: metricsFile)
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            enc.dateEncodingStrategy = .iso8601
            print(String(decoding: try enc.encode(report), as: UTF8.self))
        } else {
            print("journal: \(report.journalEntries) entries verified from the first")
            print("content: \(report.chunksChecked) of \(report.chunksTotal) chunk(s) checked")
            for m in report.missing.prefix(50) { print("MISSING  \(m)") }
            for c in report.corrupt.prefix(50) { print("CORRUPT  \(c)") }
            if report.missing.count + report.corrupt.count > 100 { print("… (--json lists them all)") }
            print(report.ok ? "ok" : "\(report.missing.count) missing, \(report.corrupt.count) corrupt")
        }
        if !report.ok { throw ExitCode(ExitCodes.integrity) }
    }

    /// The last result, for `lockfs status` and monitoring.
    static func keep(_ report: Engine.AuditReport, in home: ClientHome, metricsFile: String?) throws {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .iso8601
        try enc.encode(report).write(to: home.lastVerifyFile, options: .atomic)
        guard let metricsFile else { return }
        let text = """
            # HELP lockfs_verify_last_run_timestamp_seconds When lockfs verify last finished.
            # TYPE lockfs_verify_last_run_timestamp_seconds gauge
            lockfs_verify_last_run_timestamp_seconds \(Int(report.finishedAt.timeIntervalSince1970))
            # HELP lockfs_verify_chunks_checked Chunks the last verify fetched and checked.
            # TYPE lockfs_verify_chunks_checked gauge
            lockfs_verify_chunks_checked \(report.chunksChecked)
            # HELP lockfs_verify_chunks_missing Chunks the server did not have at the last verify.
            # TYPE lockfs_verify_chunks_missing gauge
            lockfs_verify_chunks_missing \(report.missing.count)
            # HELP lockfs_verify_chunks_corrupt Chunks the server served with the wrong bytes at the last verify.
            # TYPE lockfs_verify_chunks_corrupt gauge
            lockfs_verify_chunks_corrupt \(report.corrupt.count)

            """
        try Data(text.utf8).write(to: URL(fileURLWithPath: metricsFile), options: .atomic)
    }
}
