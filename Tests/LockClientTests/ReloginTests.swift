import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// A new login in a home that still holds changes of the device logged in
/// before (a revoked device: `lockfs logout`, then `lockfs login`): the old
/// device's queue is delivered under the new login and drains cleanly.
@Suite struct ReloginTests {
    /// One home on one in-memory server, opened as any device.
    struct Home {
        let keys = VaultKeys.generate()
        let server: InMemoryVaultServer
        let remote: InMemoryRemote
        let dir: URL

        init() throws {
            server = InMemoryVaultServer(vault: keys.vaultID)
            remote = InMemoryRemote(server: server)
            dir = try makeTemporaryDirectory("relogin")
        }

        /// The home's engine as `device` (what a login writes into device.json).
        func open(as device: DeviceID) throws -> Engine {
            let credentials = DeviceCredentials(server: "memory", user: "u", device: device, deviceName: "d", vault: keys.vaultID,
                                                token: "t-\(device.hex)", keys: keys, identity: .generate())
            return try Engine(home: ClientHome(directory: dir), credentials: credentials, remote: remote, options: testOptions())
        }

        /// The device that sealed each entry on the server, in order.
        func entryDevices() throws -> [DeviceID] {
            try server.state.withLock { s in try s.entries.map { try $0.entry.open(keys: keys).device } }
        }

        /// Another device of the vault, caught up.
        func reader() async throws -> Engine {
            let (_, d) = try makeDevices(1, server: server, keys: keys)
            try await d[0].engine.pullOnce()
            return d[0].engine
        }
    }

    /// The old device sealed an entry (in flight, its append failed) and
    /// queued another change; the new login sends the sealed entry as it is
    /// and seals the queued change as itself. Before, the puller matched its
    /// own entries by the engine's current device id: the old entry, once
    /// appended, raised "the server acknowledged this device's entry at 1 but
    /// now serves another one there" and the queue never drained.
    @Test func aBatchSealedBeforeANewLoginIsDeliveredAndConfirmed() async throws {
        let home = try Home()
        let old = DeviceID.random(), new = DeviceID.random()
        do {
            let engine = try home.open(as: old)
            try await engine.put("sealed.txt", "sealed by the old device")
            home.remote.offlineFlag.set(true)
            await #expect(throws: LockError.offline) { try await engine.pushOnce() }
            #expect(engine.state.withLock { $0.inflight.count } == 1)
            try await engine.put("queued.txt", "queued by the old device, never sealed")
            #expect(engine.status().queuedOperations == 2)
        }
        home.remote.offlineFlag.set(false)
        let engine = try home.open(as: new)
        try await engine.syncNow()
        let s = engine.status()
        #expect(s.integrityAlarm == nil)
        #expect(s.queuedOperations == 0)
        #expect(engine.state.withLock { $0.inflight.isEmpty })
        #expect(try home.entryDevices() == [old, new])
        let reader = try await home.reader()
        #expect(try await reader.text("sealed.txt") == "sealed by the old device")
        #expect(try await reader.text("queued.txt") == "queued by the old device, never sealed")
        // And it stays drained across a restart of the engine.
        #expect(try home.open(as: new).status().queuedOperations == 0)
    }

    /// The server had appended (and acknowledged) the old device's entry, but
    /// the old device never pulled it back before its new login: the new
    /// login's first pull confirms it, with no alarm.
    @Test func anEntryAppendedBeforeANewLoginIsConfirmedByTheNextPull() async throws {
        let home = try Home()
        let old = DeviceID.random()
        do {
            let engine = try home.open(as: old)
            try await engine.put("appended.txt", "appended for the old device")
            try await engine.pushOnce()
            #expect(engine.state.withLock { $0.inflight.first?.appendedSeq } == 1)
        }
        let engine = try home.open(as: .random())
        try await engine.pullOnce()
        #expect(engine.status().integrityAlarm == nil)
        #expect(engine.status().queuedOperations == 0)
        try await engine.pushOnce()
        #expect(try home.entryDevices() == [old])
        #expect(try await engine.text("appended.txt") == "appended for the old device")
    }
}
