import Foundation
@testable import LockClient
import LockCrypto
import LockWire
import Testing

/// A server restored from a backup (issue 15): every device that was ahead
/// stopped for good with the alarm, and the changes made after the backup
/// existed only on them. `repairAfterServerRestore` brings each device's
/// own changes back on top of the restored history.
@Suite struct RestoreRepairTests {
    static let device = DeviceID.random(), other = DeviceID.random()

    static func attributes(_ mode: UInt32 = 0o644) -> NodeAttributes { try! NodeAttributes(mode: mode, mtime: Timestamp(nanoseconds: 5)) }

    /// Folders this device made are created parents first; its deletes come
    /// last, deepest first; what another device changed last is left alone.
    @Test func stepsInOrder() throws {
        var old = Tree()
        let ctx = { (seq: UInt64, d: DeviceID) in ReplayContext(device: d, createdAt: Timestamp(nanoseconds: 1), seq: seq, baseSeq: seq - 1) }
        let (keep, gone, sub, dir, file, theirs) = (NodeID.random(), NodeID.random(), NodeID.random(), NodeID.random(), NodeID.random(), NodeID.random())
        // Common history (seq 1–2): folder keep/ with gone/ in it; a file of the other device.
        old.apply([.create(node: keep, parent: .root, name: try Name("keep"), revision: .random(), attributes: Self.attributes(0o755), content: .directory),
                   .create(node: gone, parent: keep, name: try Name("gone"), revision: .random(), attributes: Self.attributes(0o755), content: .directory),
                   .create(node: sub, parent: gone, name: try Name("sub"), revision: .random(), attributes: Self.attributes(0o755), content: .directory)],
                  context: ctx(1, Self.device))
        old.apply([.create(node: theirs, parent: .root, name: try Name("theirs"), revision: .random(), attributes: Self.attributes(), content: .file(.empty))],
                  context: ctx(2, Self.other))
        let restored = old
        // Lost history (seq 3–4): this device made dir/file, deleted gone/ and sub/; the other edited its file.
        let sealedFile = Manifest.empty
        old.apply([.create(node: dir, parent: keep, name: try Name("dir"), revision: .random(), attributes: Self.attributes(0o755), content: .directory),
                   .create(node: file, parent: dir, name: try Name("file"), revision: .random(), attributes: Self.attributes(), content: .file(sealedFile)),
                   .delete(node: sub, base: old.node(sub)!.revision), .delete(node: gone, base: old.node(gone)!.revision)],
                  context: ctx(3, Self.device))
        old.apply([.setAttributes(node: theirs, base: old.node(theirs)!.revision, revision: .random(), attributes: Self.attributes(0o600))],
                  context: ctx(4, Self.other))
        let steps = RestoreReplay.steps(old: old, restored: restored, device: Self.device, after: 2)
        #expect(steps.map(\.path) == ["/keep/dir", "/keep/dir/file", "/keep/gone/sub", "/keep/gone"])
        guard steps.count == 4 else { return }
        if case .create(dir, keep, _, _, _, .directory) = steps[0].operation {} else { Issue.record("\(steps[0])") }
        if case .delete(sub, _) = steps[2].operation {} else { Issue.record("\(steps[2])") }
        // Nothing after the prefix: nothing to do.
        #expect(RestoreReplay.steps(old: old, restored: old, device: Self.device, after: 2).isEmpty)
    }

    /// Two devices ahead of a server restored from a backup, a third that was
    /// not and wrote on the restored history: after each repairs, all three
    /// hold every change, and none raises the alarm.
    @Test func devicesAheadOfARestoredServerBringTheirChangesBack() async throws {
        let (server, d) = try makeDevices(3)
        var (a, b) = (d[0], d[1])
        let c = d[2].engine
        try await a.engine.put("common", "before the backup")
        try await a.engine.put("old", "to be deleted")
        try await a.engine.syncNow()
        for e in [b.engine, c] { try await e.pullOnce() }
        let backup = server.state.withLock { $0 }

        // Written after the backup, by both devices; each saw the other's.
        try await a.engine.put("a.txt", seededText(200_000, seed: 1))
        try await a.engine.put("common", "edited after the backup")
        try a.engine.unlink(parent: try a.engine.resolve(""), name: "old")
        try await a.engine.syncNow()
        _ = try b.engine.mkdir(parent: try b.engine.resolve(""), name: "b", mode: 0o755)
        try await b.engine.put("b/b.txt", "from b")
        try await b.engine.syncNow()
        try await a.engine.pullOnce()
        try await b.engine.put("b/queued.txt", "never sent")

        server.state.withLock { $0 = backup }
        try await c.put("c.txt", "after the restore")
        try await c.syncNow()
        await HostileServerTests.expectIntegrity("rolled back") { try await a.engine.pullOnce() }
        await HostileServerTests.expectIntegrity("rolled back") { try await b.engine.syncNow() }

        let plan = try await a.engine.repairAfterServerRestore(dryRun: true)
        #expect(plan.commonPrefix == 1 && plan.serverLatest == 2 && plan.lost.isEmpty)
        #expect(Set(plan.requeued) == ["/a.txt", "/common", "/old"], "\(plan)")
        for var device in [a, b] {
            _ = try await device.engine.repairAfterServerRestore(dryRun: false)
            device = try device.reopened()
            #expect(device.engine.status().integrityAlarm == nil)
            try await device.engine.syncNow()
            if device.home == a.home { a = device } else { b = device }
        }
        for e in [a.engine, b.engine, c] { try await e.syncNow() }
        let tree = try await c.tree()
        let (treeA, treeB) = (try await a.engine.tree(), try await b.engine.tree())
        #expect(treeA == tree && treeB == tree)
        #expect(Set(tree.keys) == ["/a.txt", "/b", "/b/b.txt", "/b/queued.txt", "/c.txt", "/common"], "\(tree.keys.sorted())")
        #expect(try await c.text("a.txt") == seededText(200_000, seed: 1))
        #expect(try await c.text("common") == "edited after the backup")
        #expect(try await c.text("b/queued.txt") == "never sent")
        for e in [a.engine, b.engine, c] { #expect(e.status().integrityAlarm == nil && e.status().queuedOperations == 0) }
    }

    /// A server that is not a restore of this history (it lies) leaves the
    /// home as it was.
    @Test func aJournalThatDoesNotVerifyChangesNothing() async throws {
        let (server, d) = try makeDevices(1)
        let a = d[0].engine
        try await a.put("x", "1")
        try await a.syncNow()
        server.state.withLock { s in
            let e = s.entries[0]
            s.entries[0] = (e.seq, ChainHead.genesis(of: .random()), e.entry)
        }
        await HostileServerTests.expectIntegrity("does not chain") { _ = try await a.repairAfterServerRestore(dryRun: false) }
        #expect(try await d[0].reopened().engine.text("x") == "1")
    }
}
