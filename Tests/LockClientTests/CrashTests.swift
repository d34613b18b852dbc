import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import Testing

/// A `lockfs` process killed with SIGKILL after it acknowledged a change
/// (durable locally) but before the change reached the server: the next
/// lockfs command delivers it. Real processes, a real server, real files.
@Suite struct CrashTests {
    static let binary = VaultAccountCLITests.binary

    /// Starts `lockfs`; returns the process and the file its stdout goes to.
    static func spawn(_ args: [String]) throws -> (Process, URL) {
        let (p, out, _) = try spawnProcess(binary, args)
        return (p, out)
    }

    /// Points a home's credentials at another server address (the restarted server has a new port).
    static func repoint(_ home: String, to url: String) throws {
        let file = ClientHome(directory: URL(fileURLWithPath: home)).credentialsFile
        var c = try DeviceCredentials.load(from: file)
        c.server = url
        try c.save(to: file)
    }

    @Test func aKilledClientDeliversItsAcknowledgedChangeAfterRestart() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let dir = try makeTemporaryDirectory("crash")
        defer { try? FileManager.default.removeItem(at: dir) }
        let home = dir.appendingPathComponent("laptop").path, phone = dir.appendingPathComponent("phone").path
        let passwordFile = dir.appendingPathComponent("password").path
        try Data("crash test passphrase".utf8).write(to: URL(fileURLWithPath: passwordFile))
        let invite = try await VaultAccountTests.invite(server, "ivan")
        let made = try await VaultAccountCLITests.lockfs(["init", "--home", home, "--server", server.baseURL, "--user", "ivan",
                                                          "--invite", invite, "--password-file", passwordFile])
        #expect(made.status == 0, "\(made.stderr)")

        // 8 MiB of seeded bytes: several chunks.
        var rng = SeededGenerator(seed: 42)
        let content = rng.bytes(8 << 20)
        let source = dir.appendingPathComponent("source.bin")
        try Data(content).write(to: source)

        // The server goes away; `put` commits locally, says "queued", then waits for a server that is not there.
        server.stop()
        let (put, out) = try Self.spawn(["put", "--home", home, source.path, "/big.bin"])
        let deadline = ContinuousClock.now + .seconds(60)
        while !(String(decoding: (try? Data(contentsOf: out)) ?? Data(), as: UTF8.self).contains("queued:")) {
            #expect(put.isRunning, "lockfs put exited early: \(String(decoding: (try? Data(contentsOf: out)) ?? Data(), as: UTF8.self))")
            guard put.isRunning, ContinuousClock.now < deadline else { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        kill(put.processIdentifier, SIGKILL)
        put.waitUntilExit()
        #expect(put.terminationReason == .uncaughtSignal)

        // Back up on a new port: the next command sends what was queued.
        try await server.restart()
        try Self.repoint(home, to: server.baseURL)
        let status = try await VaultAccountCLITests.lockfs(["status", "--home", home, "--offline"])
        #expect(status.stdout.contains("queued:     1 change(s)"), "\(status.stdout) \(status.stderr)")
        let sync = try await VaultAccountCLITests.lockfs(["sync", "--home", home, "--timeout", "60"])
        #expect(sync.status == 0, "\(sync.stderr)")

        // Another device gets exactly those bytes.
        let login = try await VaultAccountCLITests.lockfs(["login", "--home", phone, "--server", server.baseURL, "--user", "ivan",
                                                           "--password-file", passwordFile])
        #expect(login.status == 0, "\(login.stderr)")
        let copy = dir.appendingPathComponent("copy.bin")
        let get = try await VaultAccountCLITests.lockfs(["get", "--home", phone, "/big.bin", copy.path])
        #expect(get.status == 0, "\(get.stderr)")
        #expect(try Data(contentsOf: copy) == Data(content))
    }

    @Test func aClientKilledMidCommitLeavesAUsableHome() async throws {
        let server = try await ServerProcess.start()
        defer { server.stop() }
        let dir = try makeTemporaryDirectory("crash-mid")
        defer { try? FileManager.default.removeItem(at: dir) }
        let home = dir.appendingPathComponent("laptop").path
        let passwordFile = dir.appendingPathComponent("password").path
        try Data("crash test passphrase".utf8).write(to: URL(fileURLWithPath: passwordFile))
        let invite = try await VaultAccountTests.invite(server, "jo")
        _ = try await VaultAccountCLITests.lockfs(["init", "--home", home, "--server", server.baseURL, "--user", "jo",
                                                   "--invite", invite, "--password-file", passwordFile])
        let small = dir.appendingPathComponent("small.txt")
        try Data("kept".utf8).write(to: small)
        let first = try await VaultAccountCLITests.lockfs(["put", "--home", home, small.path, "/small.txt"])
        #expect(first.status == 0, "\(first.stderr)")

        // Kill a big put at several moments while it chunks, seals and writes.
        var rng = SeededGenerator(seed: 9)
        let big = dir.appendingPathComponent("big.bin")
        try Data(rng.bytes(32 << 20)).write(to: big)
        for delay in [50, 150, 400] {
            let (p, _) = try Self.spawn(["put", "--home", home, big.path, "/big.bin"])
            try await Task.sleep(for: .milliseconds(delay))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        // The home still works: what was acknowledged is there, and sync completes.
        let sync = try await VaultAccountCLITests.lockfs(["sync", "--home", home, "--timeout", "60"])
        #expect(sync.status == 0, "\(sync.stderr)")
        let get = try await VaultAccountCLITests.lockfs(["get", "--home", home, "/small.txt"])
        #expect(get.stdout == "kept", "\(get.stderr)")
    }
}
