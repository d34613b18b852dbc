import ArgumentParser
import Foundation
import LockClient

#if canImport(Glibc)
import Glibc
#endif

/// `lockfs repair`: the way on after the integrity alarm, where there is one
/// (docs/operations.md, "After a server restore").
struct Repair: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Go on after the integrity alarm, once you know why it was raised.",
        discussion: """
            After a server restore (the operator put back a backup: the journal lost what \
            was written since), devices that were ahead stop with the integrity alarm. With \
            --server-restored, this device's changes made since the backup are queued again \
            on top of the restored history (conflict rules as usual) and the alarm is cleared. \
            The server's journal is verified from its first entry first; nothing local is \
            deleted. Run it on every device that stopped, with no mount of the home running. \
            With --quarantine, a journal entry that the server stored but that does not open \
            under the vault's keys is set aside: skipped from then on, its bytes kept as \
            evidence. On a terminal it shows what it will do and asks; otherwise pass --yes.
            """)
    @OptionGroup var home: HomeOptions
    @Flag(help: "The server was restored from a backup: put this device's newer changes back on it.")
    var serverRestored = false
    @Flag(help: "Set aside the journal entry that fails authentication (the alarm names it).")
    var quarantine = false
    @Flag(help: "Only say what would be done.") var dryRun = false
    @Flag(name: .customLong("yes"), help: "Do not ask before changing anything.") var yes = false
    @Flag(help: "Print the report as JSON.") var json = false

    func run() async throws {
        let open = try OpenEngine(home)
        guard let alarm = open.engine.status().integrityAlarm else {
            print("nothing to repair: this device has no integrity alarm")
            return
        }
        if !json { print("integrity alarm: \(alarm)") }
        if let suspect = try open.engine.suspectEntry() {
            return try quarantine(suspect, engine: open.engine)
        }
        guard serverRestored else {
            throw CLIError.usage("""
                lockfs repair cannot tell a lying server from a restored one. If the server's operator \
                restored it from a backup, run `lockfs repair --server-restored` (docs/operations.md, \
                "After a server restore"); otherwise do not use this server until you know why
                """)
        }
        let plan = try await open.engine.repairAfterServerRestore(dryRun: true)
        if !json || dryRun { try Self.show(plan, json: json) }
        if dryRun { return }
        try confirm(plan)
        let done = try await open.engine.repairAfterServerRestore(dryRun: false)
        if json {
            try Self.show(done, json: true)
        } else {
            print("repaired: the alarm is cleared and \(done.requeued.count) change(s) are queued; mount the vault or run `lockfs sync` to upload them")
        }
    }

    static func show(_ plan: Engine.RestoreRepair, json: Bool) throws {
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(plan), as: UTF8.self))
            return
        }
        print("the server's journal ends at entry \(plan.serverLatest); this device had verified \(plan.deviceWasAt);")
        print("both share the history up to entry \(plan.commonPrefix).")
        print("this device's changes since then, to queue again: \(plan.requeued.count)")
        for p in plan.requeued.prefix(20) { print("  \(p)") }
        if plan.requeued.count > 20 { print("  … and \(plan.requeued.count - 20) more") }
        if !plan.lost.isEmpty {
            print("content that neither the server nor this device still has (left as the server has it): \(plan.lost.count)")
            for p in plan.lost.prefix(20) { print("  \(p)") }
        }
    }

    /// Sets aside an entry that fails authentication.
    func quarantine(_ suspect: Engine.SuspectEntry, engine: Engine) throws {
        let who = suspect.signer.map { "signed as device \($0.prefix(8))" } ?? "unsigned"
        print("journal entry \(suspect.seq) (\(suspect.bytes) bytes, \(who)) is in the server's journal but does not open under")
        print("the vault's keys: it was altered, or made by a device that holds the vault key but not a working lockfs.")
        guard quarantine else {
            throw CLIError.usage("""
                to set it aside (skip it from now on, keep its bytes as evidence) run `lockfs repair --quarantine`; \
                every device that stopped on it needs the same
                """)
        }
        if dryRun { print("would quarantine entry \(suspect.seq)"); return }
        try confirm("Skip this entry from now on and clear the alarm? [y/N] ")
        let evidence = try engine.quarantineSuspect()
        print("quarantined: entry \(suspect.seq) is skipped from now on; its bytes are kept in \(evidence.path)")
    }

    /// Asks on a terminal; elsewhere --yes is needed.
    func confirm(_ plan: Engine.RestoreRepair) throws {
        try confirm("Queue these changes on the restored history and clear the alarm? [y/N] ")
    }

    func confirm(_ question: String) throws {
        if yes { return }
        guard isatty(STDIN_FILENO) == 1 else {
            throw CLIError.usage("lockfs repair changes this device's view of the vault: run it on a terminal, or pass --yes")
        }
        FileHandle.standardError.write(Data(question.utf8))
        guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
            throw CLIError.usage("cancelled; nothing was changed")
        }
    }
}
