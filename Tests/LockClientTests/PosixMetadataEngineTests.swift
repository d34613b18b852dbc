import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// Issue 12, "Metadata kept as POSIX says", through the engine (no mount):
/// change times, access times, setgid folders, local-only FIFOs and sockets.
@Suite struct PosixMetadataEngineTests {
    /// A second engine on `device`'s home (as after a restart).
    func reopen(_ device: TestDevice) throws -> Engine { try device.reopened().engine }

    /// Waits until the clock has moved on by more than a millisecond.
    func tick() async throws { try await Task.sleep(for: .milliseconds(5)) }

    @Test func chmodMovesTheChangeTimeAndNotTheMtime() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine
        let ino = try await a.put("f.txt", "x")
        let before = try a.getattr(ino)
        try await tick()
        _ = try a.setAttributes(ino, mode: 0o600)
        let after = try a.getattr(ino)
        #expect(after.mtime == before.mtime)
        #expect(after.ctime > before.ctime)
        // A folder's entries move both.
        let dir = try a.mkdir(parent: 1, name: "d", mode: 0o755).ino
        let d0 = try a.getattr(dir)
        try await tick()
        _ = try a.createFile(parent: dir, name: "n", mode: 0o644)
        let d1 = try a.getattr(dir)
        #expect(d1.mtime > d0.mtime && d1.ctime > d0.ctime)
        // Every device computes the same times from the journal, and they are kept across a restart.
        try await a.syncNow()
        let b = d[1].engine
        try await b.pullOnce()
        let seen = try b.getattr(try b.resolve("f.txt")), here = try a.getattr(ino)
        #expect(seen.ctime == here.ctime && seen.mtime == here.mtime && seen.ctime > seen.mtime)
        await a.stop()
        let again = try reopen(d[0])
        #expect(try again.getattr(ino).ctime == here.ctime)
        #expect(try again.getattr(again.resolve("d")).mtime == b.getattr(b.resolve("d")).mtime)
    }

    @Test func anAccessTimeSetHereIsKeptHereOnly() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine
        let ino = try await a.put("f.txt", "x")
        // Not set: the mtime.
        #expect(try a.getattr(ino).atime == a.getattr(ino).mtime)
        let when = Timestamp(nanoseconds: 1_015_218_367_000_000_123)
        let before = try a.getattr(ino)
        _ = try a.setAttributes(ino, atime: when)
        let after = try a.getattr(ino)
        #expect(after.atime == when && after.mtime == before.mtime && after.mode == before.mode)
        // Not an operation: nothing queued, nothing synced.
        try await a.syncNow()
        #expect(a.status().queuedOperations == 0)
        let b = d[1].engine
        try await b.pullOnce()
        let there = try b.getattr(b.resolve("f.txt"))
        #expect(there.atime == there.mtime)
        // Reads do not move it; it survives a restart.
        _ = try await a.read(ino, offset: 0, size: 10)
        #expect(try a.getattr(ino).atime == when)
        await a.stop()
        var again = try reopen(d[0])
        #expect(try again.getattr(ino).atime == when)
        // Set with the mtime (cp -a), both are kept; a delete forgets it.
        _ = try again.setAttributes(ino, mtime: Timestamp(nanoseconds: 5_000_000_000), atime: Timestamp(nanoseconds: 7_000_000_000))
        #expect(try again.getattr(ino).atime == Timestamp(nanoseconds: 7_000_000_000))
        #expect(try again.getattr(ino).mtime == Timestamp(nanoseconds: 5_000_000_000))
        try again.unlink(parent: 1, name: "f.txt")
        await again.stop()
        again = try reopen(d[0])
        #expect(again.state.withLock { $0.accessTimes.isEmpty })
    }

    @Test func aFolderMadeInASetgidFolderIsSetgid() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine
        let top = try a.mkdir(parent: 1, name: "shared", mode: 0o755).ino
        _ = try a.setAttributes(top, mode: 0o3775)
        #expect(try a.getattr(top).mode == 0o3775)
        // mkdir(2) passes no S_ISGID; the folder made inherits it, not the sticky bit; a file does not.
        let sub = try a.mkdir(parent: top, name: "sub", mode: 0o755)
        #expect(sub.mode == 0o2755)
        #expect(try a.mkdir(parent: sub.ino, name: "deeper", mode: 0o700).mode == 0o2700)
        #expect(try a.createFile(parent: top, name: "f", mode: 0o644).mode == 0o644)
        #expect(try a.mkdir(parent: 1, name: "plain", mode: 0o755).mode == 0o755)
        try await a.syncNow()
        let b = d[1].engine
        try await b.pullOnce()
        #expect(try b.getattr(b.resolve("shared")).mode == 0o3775)
        #expect(try b.getattr(b.resolve("shared/sub/deeper")).mode == 0o2700)
    }

    @Test func fifosAndSocketsStayOnTheDeviceThatMadeThem() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine, b = d[1].engine
        let git = try a.mkdir(parent: 1, name: ".git", mode: 0o755).ino
        let fifo = try a.makeLocalNode(parent: git, name: "pipe", kind: .fifo, mode: 0o644)
        let sock = try a.makeLocalNode(parent: git, name: "fsmonitor", kind: .socket, mode: 0o755)
        #expect(fifo.kind == .fifo && sock.kind == .socket && fifo.mode == 0o644)
        // Shown like any entry: lookup, list, getattr, status; names are shared with synced nodes.
        #expect(try a.lookup(parent: git, name: "pipe") == fifo)
        #expect(try a.list(git).map(\.name) == ["fsmonitor", "pipe"])
        #expect(try a.getattr(sock.ino).kind == .socket)
        #expect(try a.fileState(fifo.ino).isLocalOnly)
        #expect(throws: LockError.self) { try a.createFile(parent: git, name: "pipe", mode: 0o644) }
        #expect(throws: LockError.self) { try a.makeLocalNode(parent: git, name: "pipe", kind: .socket, mode: 0o644) }
        // Never an operation: only the folder is queued, and the other device sees the folder alone.
        #expect(a.status().queuedOperations == 1)
        try await a.syncNow()
        try await b.pullOnce()
        #expect(try b.list(b.resolve(".git")).isEmpty)
        // chmod and rename stay here too; rmdir sees the folder is not empty.
        _ = try a.setAttributes(fifo.ino, mode: 0o600)
        #expect(try a.getattr(fifo.ino).mode == 0o600)
        try a.rename(parent: git, name: "pipe", newParent: 1, newName: "pipe2")
        #expect(try a.lookup(parent: 1, name: "pipe2").ino == fifo.ino)
        #expect(throws: LockError.notEmpty) { try a.rmdir(parent: 1, name: ".git") }
        #expect(a.status().queuedOperations == 0)
        // Kept across a restart, with the same inode.
        await a.stop()
        let again = try reopen(d[0])
        #expect(try again.lookup(parent: 1, name: "pipe2") == again.getattr(fifo.ino))
        #expect(try again.getattr(fifo.ino).kind == .fifo && again.getattr(fifo.ino).mode == 0o600)
        // rm -rf: the entries, then the folder.
        for entry in try again.list(git) { try again.unlink(parent: git, name: entry.name) }
        try again.rmdir(parent: 1, name: ".git")
        try again.unlink(parent: 1, name: "pipe2")
        #expect(try again.list(1).isEmpty)
        #expect(throws: LockError.notFound) { try again.getattr(fifo.ino) }
        try await again.syncNow()
        try await b.pullOnce()
        #expect(try b.list(1).isEmpty)
    }

    @Test func aRenameReplacesAndAFolderDeletedElsewhereTakesThem() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine, b = d[1].engine
        let ino = try await a.put("file", "synced")
        let fifo = try a.makeLocalNode(parent: 1, name: "fifo", kind: .fifo, mode: 0o644)
        // A FIFO renamed over a synced file deletes the file (an operation); a file renamed over a FIFO removes it.
        try a.rename(parent: 1, name: "fifo", newParent: 1, newName: "file")
        #expect(try a.lookup(parent: 1, name: "file").kind == .fifo)
        #expect(a.state.withLock { s in s.nodeByIno[ino].flatMap { s.local.node($0) }?.deleted } == true)
        _ = try await a.put("other", "x")
        try a.rename(parent: 1, name: "other", newParent: 1, newName: "file")
        #expect(try a.lookup(parent: 1, name: "file").kind == .file)
        #expect(throws: LockError.notFound) { try a.getattr(fifo.ino) }
        // No replace, no exchange.
        _ = try a.makeLocalNode(parent: 1, name: "f2", kind: .fifo, mode: 0o644)
        #expect(throws: LockError.exists) { try a.rename(parent: 1, name: "f2", newParent: 1, newName: "file", mode: .noReplace) }
        #expect(throws: LockError.self) { try a.rename(parent: 1, name: "file", newParent: 1, newName: "f2", mode: .exchange) }
        // Another device, which never saw it, deletes its (to it empty) folder: it goes too.
        let dir = try a.mkdir(parent: 1, name: "d", mode: 0o755).ino
        try a.rename(parent: 1, name: "f2", newParent: dir, newName: "f2")
        try await a.syncNow()
        try await b.pullOnce()
        try b.rmdir(parent: 1, name: "d")
        try await b.syncNow()
        try await a.pullOnce()
        #expect(throws: LockError.notFound) { try a.lookup(parent: 1, name: "d") }
        #expect(a.state.withLock { $0.localNodes.isEmpty })
    }
}
