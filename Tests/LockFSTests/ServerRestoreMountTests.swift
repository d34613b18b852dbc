import Foundation
import LockTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// An operator restores the server from a backup (docs/operations.md): two
/// mounted devices that wrote after the backup stop with the integrity alarm;
/// `lockfs repair --server-restored` on each puts their changes back.
@Suite(.enabled(if: fuseAvailable, "needs /dev/fuse and fusermount3"), .serialized)
struct ServerRestoreMountTests {
    static func sha(_ path: String) async throws -> String {
        try await sh("sha256sum '\(path)' | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func twoDevicesAheadOfARestoredServerPutTheirChangesBack() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let a = try await vault.mount(0), b = try await vault.mount(1)
        try await sh("echo before > '\(a)/common.txt' && mkdir '\(a)/old' && echo x > '\(a)/old/x'")
        #expect(try await vault.lockfs(["sync", a, "--timeout", "60"]).status == 0)
        #expect(await eventually(within: .seconds(10)) { readText(b + "/common.txt") == "before\n" })

        // The operator's backup: the server stopped, its data copied.
        vault.server.stop()
        let backup = try makeTemporaryDirectory("backup").appendingPathComponent("data")
        try FileManager.default.copyItem(at: vault.server.dataDirectory, to: backup)
        try await vault.server.restart(samePort: true)

        // After the backup, both devices write and see each other's changes.
        try await sh("cd '\(a)' && echo from-a > a.txt && head -c 3000000 /dev/urandom > big && echo edited > common.txt && rm -r old")
        try await sh("mkdir '\(b)/dir' && echo from-b > '\(b)/dir/b.txt'")
        for m in [a, b] { #expect(try await vault.lockfs(["sync", m, "--timeout", "90"], timeout: .seconds(120)).status == 0) }
        #expect(await eventually(within: .seconds(30)) { readText(a + "/dir/b.txt") == "from-b\n" && readText(b + "/a.txt") == "from-a\n" })
        let bigSum = try await Self.sha(a + "/big")

        // The server's disk is lost; the operator restores the backup.
        vault.server.stop()
        try FileManager.default.removeItem(at: vault.server.dataDirectory)
        try FileManager.default.copyItem(at: backup, to: vault.server.dataDirectory)
        try await vault.server.restart(samePort: true)

        // Both devices stop with the alarm at their next poll; their files stay.
        for m in [a, b] {
            var status = try await vault.lockfs(["status", m])
            for _ in 0..<120 where status.status != 76 {
                try await Task.sleep(for: .milliseconds(500))
                status = try await vault.lockfs(["status", m])
            }
            #expect(status.status == 76 && status.stdout.contains("After a server restore"), "\(status.stdout) \(status.stderr)")
        }
        #expect(readText(b + "/a.txt") == "from-a\n")
        try await vault.unmount(0)
        try await vault.unmount(1)

        // Without --server-restored repair explains and changes nothing; with it, it puts the changes back.
        let refused = try await vault.lockfs(["repair", "--home", vault.home(0)])
        #expect(refused.status == 64 && refused.stderr.contains("--server-restored"), "\(refused.stderr)")
        for i in [0, 1] {
            let r = try await vault.lockfs(["repair", "--home", vault.home(i), "--server-restored", "--yes"])
            #expect(r.status == 0 && r.stdout.contains("repaired"), "\(r.stdout) \(r.stderr)")
        }
        let a2 = try await vault.mount(0), b2 = try await vault.mount(1)
        for m in [a2, b2] { #expect(try await vault.lockfs(["sync", m, "--timeout", "90"], timeout: .seconds(120)).status == 0) }
        for m in [a2, b2] {
            #expect(await eventually(within: .seconds(30)) {
                readText(m + "/a.txt") == "from-a\n" && readText(m + "/dir/b.txt") == "from-b\n"
                    && readText(m + "/common.txt") == "edited\n" && !FileManager.default.fileExists(atPath: m + "/old")
            }, "\(m): \((try? FileManager.default.contentsOfDirectory(atPath: m)) ?? [])")
            #expect(try await Self.sha(m + "/big") == bigSum)
            let status = try await vault.lockfs(["status", m])
            #expect(status.status == 0, "\(status.stdout)")
        }
    }
}
