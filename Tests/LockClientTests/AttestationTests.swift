import Foundation
@testable import LockClient
import LockCrypto
import LockWire
import Synchronization
import Testing

/// Attestations (issue 15): a device that applied other devices' changes
/// attests the head it reached, a running device attests now and then, and
/// `status` names devices the journal has not heard from.
@Suite struct AttestationTests {
    @Test func whenToAttest() {
        let policy = AttestationPolicy(after: .seconds(600), heartbeat: .seconds(86_400))
        let t0 = ContinuousClock.now
        let cases: [(String, ContinuousClock.Instant?, ContinuousClock.Instant, Bool, ContinuousClock.Instant, Bool)] = [
            ("nothing to attest, just sealed", nil, t0, true, t0 + .seconds(60), false),
            ("others' change, not yet long enough", t0, t0, true, t0 + .seconds(599), false),
            ("others' change, long enough", t0, t0, true, t0 + .seconds(600), true),
            ("others' change, but changes queued", t0, t0, false, t0 + .seconds(900), false),
            ("a day without sealing", nil, t0, true, t0 + .seconds(86_400), true),
            ("a day without sealing, busy", nil, t0, false, t0 + .seconds(86_400), false),
        ]
        for (name, wanted, sealed, idle, now, due) in cases {
            #expect(policy.isDue(now: now, wantedSince: wanted, lastSealed: sealed, idle: idle) == due, "\(name)")
        }
    }

    @Test func silentDevices() {
        let now = Date(timeIntervalSince1970: 2_000_000_000)
        let (recent, old, mine) = (DeviceID.random(), DeviceID.random(), DeviceID.random())
        let tails = [recent: DeviceTail(stamp: Int64((now.timeIntervalSince1970 - 3600) * 1e9), envelopeHash: nil, linked: true),
                     old: DeviceTail(stamp: Int64((now.timeIntervalSince1970 - 5 * 86_400) * 1e9), envelopeHash: nil, linked: true),
                     mine: DeviceTail(stamp: 0, envelopeHash: nil, linked: true)]
        let roster = [
            DeviceInfo(id: recent.hex, name: "laptop", createdAt: 0, lastSeenAt: nil, current: false),
            DeviceInfo(id: old.hex, name: "phone", createdAt: 0, lastSeenAt: nil, current: false),
            DeviceInfo(id: DeviceID.random().hex, name: "never wrote", createdAt: now.timeIntervalSince1970 - 10 * 86_400, lastSeenAt: nil, current: false),
            DeviceInfo(id: DeviceID.random().hex, name: "just enrolled", createdAt: now.timeIntervalSince1970 - 60, lastSeenAt: nil, current: false),
            DeviceInfo(id: mine.hex, name: "this one", createdAt: 0, lastSeenAt: nil, current: true),
        ]
        #expect(AttestationPolicy.silentDevices(roster: roster, tails: tails, now: now, limit: .seconds(3 * 86_400))
                == ["never wrote (10 days)", "phone (5 days)"])
        // Absurd times from the server (its device list is not trusted) do not trap.
        let absurd = [-1e300, 1e300, -.infinity, .nan, -Double.greatestFiniteMagnitude].map {
            DeviceInfo(id: DeviceID.random().hex, name: "odd", createdAt: $0, lastSeenAt: nil, current: false)
        }
        #expect(AttestationPolicy.silentDevices(roster: absurd, tails: [:], now: now, limit: .seconds(60)).count <= absurd.count)
        #expect(headFingerprint(ChainHead.genesis(of: VaultID(storage: .zero))).count == 19)
    }

    static func options(after: Duration = .seconds(600), heartbeat: Duration = .seconds(86_400)) -> EngineOptions {
        var o = testOptions()
        o.attestations = AttestationPolicy(after: after, heartbeat: heartbeat)
        return o
    }

    /// A reader attests the head it reached; the writer applies the
    /// attestation and does not attest it back.
    @Test func aReaderAttestsWhatItVerifiedAndNobodyEchoes() async throws {
        let (server, d) = try LyingServerTests.devices(2, options: Self.options(after: .zero))
        let (a, b) = (d[0].engine, d[1].engine)
        try await a.put("doc", "1")
        try await a.syncNow()
        try await b.syncNow()
        #expect(server.journal.count == 1)
        try await b.pushOnce()
        #expect(server.journal.count == 2)
        let attestation = try server.journal[1].open(keys: b.keys)
        #expect(attestation.isAttestation && attestation.device == b.device)
        #expect(server.journal[1].baseSeq == JournalSeq(1) && server.journal[1].baseHead == server.head(at: 1))
        for _ in 0..<2 {
            try await a.syncNow()
            try await b.syncNow()
        }
        #expect(server.journal.count == 2)
        #expect(a.status().head == b.status().head && a.status().cursor == 2)
    }

    /// A running device that wrote nothing for a heartbeat attests once.
    @Test func anIdleDeviceAttestsEveryHeartbeat() async throws {
        let (server, d) = try LyingServerTests.devices(1, options: Self.options(heartbeat: .milliseconds(100)))
        let a = d[0].engine
        try await a.pushOnce()
        #expect(server.journal.isEmpty)
        try await Task.sleep(for: .milliseconds(150))
        try await a.pushOnce()
        try await a.pushOnce()
        #expect(server.journal.count == 1)
    }

    /// Two devices kept on two histories: the attestation of one, shown to
    /// the other, names a head it never verified.
    @Test func anAttestationFromAnotherHistoryIsCaught() async throws {
        let (server, d) = try LyingServerTests.devices(2, options: Self.options(heartbeat: .milliseconds(50)))
        let (a, b) = (d[0].engine, d[1].engine)
        try await a.put("common", "both")
        try await a.syncNow()
        try await b.syncNow()
        // From here b lives on history Y, a copy the server keeps for it.
        let historyY = Mutex(server.journal)
        d[1].remote.lie {
            $0.append = { entry, _ in
                historyY.withLock { $0.append(entry) }
                let y = historyY.withLock { $0 }
                return (JournalSeq(UInt64(y.count)), try server.page(of: y, after: JournalSeq(UInt64(y.count - 1))).items[0].head)
            }
            $0.entries = { after, _ in try server.page(of: historyY.withLock { $0 }, after: after) }
        }
        try await a.put("only on X", "a")
        try await a.syncNow()
        try await b.put("only on Y", "b")
        try await b.syncNow()
        // Each side alone sees nothing wrong.
        #expect(a.status().integrityAlarm == nil && b.status().integrityAlarm == nil)
        try await a.pullOnce()
        // b attests its history (a heartbeat); the server lets that one entry cross to a.
        try await Task.sleep(for: .milliseconds(80))
        try await b.pushOnce()
        let attest = try #require(historyY.withLock { $0.last })
        #expect(try attest.open(keys: b.keys).isAttestation)
        server.store(attest)
        await LyingServerTests.expectAlarm(a, "never saw") { try await a.pullOnce() }
    }

    /// A device that joins and is shown an old prefix of the journal: the
    /// devices the server lists have written nothing it can see for too long.
    @Test func aFreshDeviceShownAnOldPrefixNamesTheSilentDevices() async throws {
        var options = testOptions()
        options.silenceWarning = .seconds(1)
        let (server, d) = try LyingServerTests.devices(2, options: options)
        let (a, c) = (d[0].engine, d[1].engine)
        try await a.put("one", "1")
        try await a.syncNow()
        let roster = [DeviceInfo(id: a.device.hex, name: "laptop", createdAt: 0, lastSeenAt: nil, current: false),
                      DeviceInfo(id: c.device.hex, name: "new", createdAt: 0, lastSeenAt: nil, current: true)]
        d[1].remote.lie {
            $0.devices = { roster }
            $0.entries = { after, _ in try server.page(of: Array(server.journal.prefix(1)), after: after) }
        }
        try await Task.sleep(for: .milliseconds(1300))
        try await a.put("two", "2")
        try await a.syncNow()
        try await c.pullOnce()
        await c.refreshRoster()
        #expect(c.status().silentDevices.count == 1 && c.status().silentDevices[0].hasPrefix("laptop ("))
        // Shown the rest (as the server must, once the laptop writes or attests): no longer silent.
        d[1].remote.lie { $0.entries = nil }
        try await c.pullOnce()
        #expect(c.status().silentDevices.isEmpty)
        #expect(try await c.text("two") == "2")
    }
}
