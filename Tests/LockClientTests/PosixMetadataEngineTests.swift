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
    func reopen(_ device: TestDevice) throws -> Engine {
        let a = device.engine
        let creds = DeviceCredentials(server: "memory", user: "u", device: a.device, deviceName: "d0", vault: a.keys.vaultID,
                                      token: "t", keys: a.keys)
        return try Engine(home: ClientHome(directory: device.home), credentials: creds, remote: device.remote, options: testOptions())
    }

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
}
