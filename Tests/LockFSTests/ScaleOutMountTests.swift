import Foundation
import LockTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real mounts whose devices talk to different `lockfs-server` instances of
/// one deployment (one PostgreSQL database, one S3 bucket on moto).
@Suite(.enabled(if: fuseAvailable, "needs /dev/fuse and fusermount3"), .serialized)
struct ScaleOutMountTests {
    @Test func mountsOnTwoInstancesSyncWithinTwoSecondsAndKeepConcurrentEdits() async throws {
        let cluster = try await ScaleOutCluster.start(instances: 2, name: "mounts")
        let vault = try await MountedVault(servers: cluster.instances)
        defer { vault.stop() }
        let a = try await vault.mount(0), b = try await vault.mount(1)
        // Device 0 was made on instance 1, device 1 logged in through instance 2.
        for (i, server) in cluster.instances.enumerated() {
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: vault.home(i) + "/device.json"))) as? [String: Any]
            #expect(json?["server"] as? String == server.baseURL)
        }

        // A change through instance 1 shows on the mount of instance 2 within 2 s, and back.
        try Data("first".utf8).write(to: URL(fileURLWithPath: a + "/shared.txt"))
        #expect(await eventually(within: .seconds(2)) { readText(b + "/shared.txt") == "first" })
        try await sh("cd '\(a)' && printf second > .shared.txt.swp && sync .shared.txt.swp && mv .shared.txt.swp shared.txt")
        #expect(await eventually(within: .seconds(2)) { readText(b + "/shared.txt") == "second" })
        try await sh("cd '\(b)' && mkdir -p deep/er && echo from-b > deep/er/file && head -c 3000000 /dev/urandom > deep/big")
        #expect(await eventually(within: .seconds(2)) { readText(a + "/deep/er/file") == "from-b\n" })
        // The file may show first as created (empty) when its create left in an entry before
        // its content (the uploader does not wait for a slow writer's close): wait for the content.
        #expect(await eventually(within: .seconds(10)) {
            (try? FileManager.default.attributesOfItem(atPath: a + "/deep/big")[.size] as? Int) == 3_000_000
        })
        let sums = try await sh("md5sum < '\(a)/deep/big'; md5sum < '\(b)/deep/big'")
        let lines = sums.stdout.split(separator: "\n")
        #expect(lines.count == 2 && lines[0] == lines[1], "\(sums.stdout) \(sums.stderr)")

        // A concurrent edit: both instances pause (SIGSTOP), each device edits the
        // same file, the instances go on; both versions are kept, one as a conflict copy.
        try Data("base".utf8).write(to: URL(fileURLWithPath: a + "/doc.txt"))
        #expect(await eventually { readText(b + "/doc.txt") == "base" })
        for s in cluster.instances { kill(s.pid, SIGSTOP) }
        try Data("edit on a".utf8).write(to: URL(fileURLWithPath: a + "/doc.txt"))
        try Data("edit on b".utf8).write(to: URL(fileURLWithPath: b + "/doc.txt"))
        for s in cluster.instances { kill(s.pid, SIGCONT) }
        func texts(_ m: String) -> Set<String> {
            Set(((try? FileManager.default.contentsOfDirectory(atPath: m)) ?? []).filter { $0.hasPrefix("doc") }.compactMap { readText(m + "/" + $0) })
        }
        #expect(await eventually(within: .seconds(15)) { texts(a) == ["edit on a", "edit on b"] && texts(b) == texts(a) },
                "a: \(texts(a)), b: \(texts(b))")
        let names = try FileManager.default.contentsOfDirectory(atPath: a).filter { $0.hasPrefix("doc") }
        #expect(names.count == 2 && names.contains { $0.contains("(conflict from ") }, "\(names)")
        // Nothing else was lost on the way.
        #expect(readText(b + "/shared.txt") == "second" && readText(b + "/deep/er/file") == "from-b\n")
        await cluster.stop()
    }
}
