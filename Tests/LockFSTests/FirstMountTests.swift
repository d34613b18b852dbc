import Foundation
import LockClient
import LockTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `lockfs mount` on a device returns once the journal is applied up to the
/// server's latest entry, or says why not (docs/design.md, "The first pull of
/// a mount"): offline at once, or after --initial-sync-timeout.
@Suite(.enabled(if: fuseAvailable, "needs /dev/fuse and fusermount3"), .serialized)
struct FirstMountTests {
    /// Device 0 (the home `MountedVault` made with `lockfs init`) writes
    /// `count` small files, each in its own journal entry, straight through
    /// an engine in this process, and uploads them all.
    static func fill(_ vault: MountedVault, files count: Int) async throws {
        let home = ClientHome(directory: URL(fileURLWithPath: vault.home(0)))
        let credentials = try DeviceCredentials.load(from: home.credentialsFile)
        var options = EngineOptions()
        options.operationsPerEntry = 1
        let remote = HTTPRemote(baseURL: vault.server.baseURL, token: credentials.token, transport: CurlTransport())
        let engine = try Engine(home: home, credentials: credentials, remote: remote, options: options)
        let root = try engine.resolve("")
        for i in 0..<count {
            let ino = try engine.createFile(parent: root, name: "f-\(i).txt", mode: 0o644).ino
            let handle = try await engine.openForWrite(ino, truncate: true)
            _ = try Array("content \(i)".utf8).withUnsafeBytes { try engine.write(handle, offset: 0, bytes: $0) }
            try engine.close(handle)
        }
        try await engine.pushOnce()
        #expect(engine.status().queuedOperations == count)  // uploaded; confirmed once pulled back
        try await engine.pullOnce()
        #expect(engine.status().queuedOperations == 0 && engine.status().cursor == UInt64(count))
    }

    /// `lockfs mount` of device `i` (logged in first if needed), its result kept whatever it is.
    static func mount(_ vault: MountedVault, _ i: Int, extra: [String] = []) async throws -> ProcessResult {
        if !FileManager.default.fileExists(atPath: vault.home(i) + "/device.json") {
            let r = try await vault.lockfs(["login", "--home", vault.home(i), "--server", vault.server.baseURL, "--user", "max",
                                            "--password-file", vault.passwordFile, "--device-name", "d\(i)"])
            guard r.status == 0 else { throw TestFailure("login failed: \(r.stderr)") }
        }
        try FileManager.default.createDirectory(atPath: vault.point(i), withIntermediateDirectories: true)
        let r = try await vault.lockfs(["mount", "--home", vault.home(i), vault.point(i)] + extra)
        if r.status == 0 { vault.adopt(i) }
        return r
    }

    /// A new device: `lockfs login`, `lockfs mount`, and the listing right
    /// after shows every file of a vault of 400 journal entries. (Before, the
    /// mount went live while its first pull was still running: the listing
    /// showed none or some of them.)
    @Test func aNewDeviceShowsTheWholeTreeWhenMountReturns() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        try await Self.fill(vault, files: 400)
        let r = try await Self.mount(vault, 1)
        let listed = try FileManager.default.contentsOfDirectory(atPath: vault.point(1))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(listed.count == 400, "listed \(listed.count) of 400 files right after mount returned")
        #expect(!r.stderr.contains("offline") && !r.stderr.contains("took longer"), "\(r.stderr)")
        #expect(readText(vault.point(1) + "/f-399.txt") == "content 399")
    }

    /// With the server down, mount returns at once with the tree this device
    /// had, and one line on stderr says it is offline.
    @Test func offlineTheMountReturnsAtOnceWithWhatTheDeviceHadAndSaysSo() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        try await Self.fill(vault, files: 20)
        #expect(try await Self.mount(vault, 1).status == 0)
        try await vault.unmount(1)
        vault.server.stop()
        let start = ContinuousClock.now
        let r = try await Self.mount(vault, 1)
        let took = ContinuousClock.now - start
        #expect(r.status == 0, "\(r.stderr)")
        #expect(took < .seconds(20), "mount took \(took) with the server down (the bound is 60 s)")
        let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("lockfs:") }
        #expect(lines.count == 1 && lines[0].contains("offline"), "\(r.stderr)")
        let listed = try FileManager.default.contentsOfDirectory(atPath: vault.point(1))
        #expect(listed.count == 20)
    }

    /// A server that accepts connections but does not answer (stopped with
    /// SIGSTOP) holds the mount back only for --initial-sync-timeout, which
    /// says so; once the server answers, the tree arrives in the background.
    @Test func aServerThatDoesNotAnswerHoldsTheMountOnlyUntilTheBound() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        try await Self.fill(vault, files: 5)
        let login = try await vault.lockfs(["login", "--home", vault.home(1), "--server", vault.server.baseURL, "--user", "max",
                                            "--password-file", vault.passwordFile, "--device-name", "d1"])
        #expect(login.status == 0, "\(login.stderr)")
        kill(vault.server.pid, SIGSTOP)
        defer { kill(vault.server.pid, SIGCONT) }
        let start = ContinuousClock.now
        let r = try await Self.mount(vault, 1, extra: ["--initial-sync-timeout", "2"])
        let took = ContinuousClock.now - start
        #expect(r.status == 0, "\(r.stderr)")
        #expect(took >= .seconds(2) && took < .seconds(30), "mount took \(took)")
        #expect(r.stderr.contains("did not answer within 2 s"), "\(r.stderr)")
        kill(vault.server.pid, SIGCONT)
        #expect(await eventually(within: .seconds(60)) {
            ((try? FileManager.default.contentsOfDirectory(atPath: vault.point(1))) ?? []).count == 5
        })
    }
}
