import Foundation
import LockTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 12 through two real mounts: the server stops (SIGSTOP) while both
/// devices edit the same folders with ordinary tools, then comes back.
/// Afterwards both mounts show the same tree and every version survives.
@Suite(.enabled(if: fuseAvailable, "needs /dev/fuse and fusermount3"), .serialized)
struct ConflictMountTests {
    /// Relative path → content of every file under `root`, and "dir" for folders.
    static func tree(_ root: String) -> [String: String] {
        var out: [String: String] = [:]
        func walk(_ rel: String) {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: root + rel)) ?? [] {
                let path = rel + "/" + name
                var isDir: ObjCBool = false
                FileManager.default.fileExists(atPath: root + path, isDirectory: &isDir)
                out[String(path.dropFirst())] = isDir.boolValue ? "dir" : (readText(root + path) ?? "?")
                if isDir.boolValue { walk(path) }
            }
        }
        walk("")
        return out
    }

    /// Sets up with `setup` on device 0, stops the server, runs `edits[i]`
    /// in mount i, resumes the server and waits for both to agree.
    func play(setup: String, edits: [String], expect texts: [String]) async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let a = try await vault.mount(0), b = try await vault.mount(1)
        try await sh("cd '\(a)' && \(setup)")
        #expect(try await vault.lockfs(["sync", a, "--timeout", "60"]).status == 0)
        #expect(await eventually(within: .seconds(10)) { Self.tree(b) == Self.tree(a) })
        kill(vault.server.pid, SIGSTOP)
        for (i, edit) in edits.enumerated() {
            let r = try await sh("cd '\([a, b][i])' && \(edit)")
            #expect(r.status == 0, "device \(i): \(r.stderr)")
        }
        kill(vault.server.pid, SIGCONT)
        for m in [a, b, a] { #expect(try await vault.lockfs(["sync", m, "--timeout", "150"], timeout: .seconds(180)).status == 0) }
        let agreed = await eventually(within: .seconds(20)) { Self.tree(a) == Self.tree(b) }
        #expect(agreed, "a: \(Self.tree(a))\nb: \(Self.tree(b))")
        for (name, m) in [("a", a), ("b", b)] {
            let contents = Set(Self.tree(m).values)
            for t in texts { #expect(contents.contains(t + "\n"), "\(name) lost “\(t)”: \(Self.tree(m))") }
        }
    }

    @Test func moveOutOfAFolderDeletedElsewhereThenEdit() async throws {
        try await play(setup: "mkdir D && echo original > D/F",
                       edits: ["rm -rf D", "mv D/F ./G && echo written by b > G && mv G H"],
                       expect: ["written by b"])
    }

    @Test func bothEditThenOneMovesAwayAndDeletesTheOldFolder() async throws {
        try await play(setup: "mkdir -p D/E X && echo original > D/E/F",
                       edits: ["echo written by a > D/E/F", "echo written by b > D/E/F && mv D/E/F X/F2 && rm -rf D/E"],
                       expect: ["written by a", "written by b"])
    }

    @Test func sameNamedFoldersMadeOnTwoDevicesMerge() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        let a = try await vault.mount(0), b = try await vault.mount(1)
        try await sh("mkdir '\(a)/Photos'")
        #expect(try await vault.lockfs(["sync", a, "--timeout", "60"]).status == 0)
        #expect(await eventually(within: .seconds(10)) { FileManager.default.fileExists(atPath: b + "/Photos") })
        kill(vault.server.pid, SIGSTOP)
        try await sh("mkdir -p '\(a)/Photos/2026/trip' && echo a > '\(a)/Photos/2026/a.jpg' && echo a > '\(a)/Photos/2026/trip/1.jpg'")
        try await sh("mkdir -p '\(b)/Photos/2026/trip' && echo b > '\(b)/Photos/2026/b.jpg' && echo b > '\(b)/Photos/2026/trip/2.jpg'")
        kill(vault.server.pid, SIGCONT)
        for m in [a, b, a] { #expect(try await vault.lockfs(["sync", m, "--timeout", "150"], timeout: .seconds(180)).status == 0) }
        let want: [String: String] = ["Photos": "dir", "Photos/2026": "dir", "Photos/2026/trip": "dir", "Photos/2026/a.jpg": "a\n",
                                      "Photos/2026/b.jpg": "b\n", "Photos/2026/trip/1.jpg": "a\n", "Photos/2026/trip/2.jpg": "b\n"]
        #expect(await eventually(within: .seconds(20)) { Self.tree(a) == want && Self.tree(b) == want },
                "a: \(Self.tree(a))\nb: \(Self.tree(b))")
    }
}
