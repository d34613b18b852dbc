import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// The engine with more than one key generation, on the in-memory server.
@Suite struct GenerationEngineTests {
    /// Bug fix: a chunk the server lacks, not in the outbox but cached, was
    /// sealed again with the newest generation under the id an older one
    /// made; every reader then met a chunk whose plaintext does not hash to
    /// its id (the integrity alarm). It is sealed with the generation whose
    /// chunk-id key made the id.
    @Test func aChunkResealedFromTheCacheKeepsItsGeneration() async throws {
        let g1 = VaultKeys.generate()
        let g2 = VaultKeys(vaultID: g1.vaultID, master: .random())
        let (server, d) = try makeDevices(3, keys: g1)
        let a = d[0].engine
        // Beyond the 4 MiB largest chunk: at least two chunks whatever the vault's gear table.
        let big = seededText(5 << 20, seed: 5)
        let ino = try await a.put("F", big)
        try await a.syncNow()
        let b0 = d[1].engine
        try await b0.pullOnce()
        #expect(try await b0.text("F") == big)  // now in b's cache
        await b0.stop()
        // b after a rotation: generation 2 newest, 1 kept.
        func rotated(_ device: TestDevice, id: DeviceID, identity: DeviceIdentity?) throws -> Engine {
            let creds = DeviceCredentials(server: "memory", user: "u", device: id, deviceName: "d", vault: g1.vaultID,
                                          token: "t", keys: g2, olderKeys: [g1], identity: identity)
            return try Engine(home: ClientHome(directory: device.home), credentials: creds, remote: device.remote, options: testOptions())
        }
        let b = try rotated(d[1], id: b0.device, identity: b0.identity)
        let chunks = try #require(b.snapshot()["/F"]?.manifest?.chunks)
        #expect(chunks.count >= 2)
        // The server loses the file's chunks (a restore from an older backup, say).
        server.state.withLock { s in for c in chunks { s.chunks[c.id] = nil } }
        // b appends: the chunks before the change are reused, under their generation-1 ids.
        let h = try await b.openForWrite(try b.resolve("F"), truncate: false)
        _ = try Array("appended".utf8).withUnsafeBytes { try b.write(h, offset: big.utf8.count, bytes: $0) }
        try b.close(h)
        try await b.syncNow()
        _ = ino
        // A device with nothing cached reads the whole file from the server.
        let c = try rotated(d[2], id: d[2].engine.device, identity: d[2].engine.identity)
        try await c.pullOnce()
        #expect(try await c.text("F") == big + "appended")
    }
}
