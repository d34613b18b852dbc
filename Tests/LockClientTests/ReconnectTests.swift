import Foundation
@testable import LockClient
import LockTesting
import Testing

/// A server that goes away and comes back (docs/design.md, "Reconnecting"):
/// the engine's puller and uploader wait `Backoff.reconnect` between failed
/// attempts, growing to its cap and never beyond.
///
/// Times are taken from the remote's own log of calls, so a test task that
/// the machine's load wakes late does not count against the engine.
@Suite struct ReconnectTests {
    /// The default cap (2 s); the bounds below give it 5× headroom.
    static let cap = EngineOptions().reconnect.cap

    /// Polls `condition` for at most `limit`.
    static func eventually(_ limit: Duration, _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while !condition() {
            if ContinuousClock.now > deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// After 13 s away, the server is tried again, and a change queued while
    /// it was away is appended, within 5× the cap. (With the former backoff,
    /// doubling to 30 s, the puller tried at 12.6 s and then at 25.4 s: 12 s
    /// after the server was back, beyond the bound.)
    @Test func aReturningServerIsSeenWithinTheCap() async throws {
        let (_, d) = try makeDevices(1)
        let a = d[0]
        a.remote.offlineFlag.set(true)
        a.engine.start()
        defer { Task { await a.engine.stop() } }
        try await a.engine.put("while-away.txt", "queued while the server was away")
        try await Task.sleep(for: .seconds(13))  // how long the server is away
        #expect(!a.engine.status().online)
        let back = ContinuousClock.now
        a.remote.offlineFlag.set(false)
        #expect(await Self.eventually(.seconds(120)) { a.engine.status().queuedOperations == 0 })
        let seen = a.remote.pulls.since(back).first.map { $0 - back }
        let delivered = a.remote.appends.since(back).first.map { $0 - back }
        #expect(seen != nil && seen! <= Self.cap * 5, "tried again after \(seen.map { "\($0)" } ?? "never")")
        #expect(delivered != nil && delivered! <= Self.cap * 5, "appended after \(delivered.map { "\($0)" } ?? "never")")
    }

    /// While the server stays down the puller does not hammer it: its waits
    /// double up to the cap and no wait is ever shorter than half its step,
    /// so the first 8 s bring at most 14 attempts (7–12 unloaded), not the
    /// 40 of a fixed 200 ms retry, and the waits after four doublings are at
    /// least half the cap.
    @Test func theBackoffGrowsWhileTheServerStaysDown() async throws {
        let (_, d) = try makeDevices(1)
        let a = d[0]
        a.remote.offlineFlag.set(true)
        a.engine.start()
        defer { Task { await a.engine.stop() } }
        #expect(await Self.eventually(.seconds(120)) { a.remote.pulls.all.count >= 7 })
        let attempts = a.remote.pulls.all
        let first = try #require(attempts.first)
        #expect(attempts.filter { $0 - first < .seconds(8) }.count <= 14, "\(attempts.count) attempts")
        let gaps = zip(attempts.dropFirst(), attempts).map { $0 - $1 }
        #expect(gaps.count >= 6 && gaps[4...].allSatisfy { $0 >= Self.cap / 2 - .milliseconds(5) }, "waits \(gaps)")
    }

    /// The steps themselves: each wait is in the upper half of first · 2^(n−1), capped.
    @Test func backoffStepsDoubleToTheCapWithJitter() {
        var b = Backoff(first: .milliseconds(200), cap: .seconds(2))
        for n in 1...12 {
            let step = min(Duration.seconds(2), .milliseconds(200) * (1 << (n - 1)))
            let d = b.next()
            #expect(d <= step && d >= step / 2, "failure \(n): \(d) not in [\(step / 2), \(step)]")
        }
        b.reset()
        #expect(b.next() <= .milliseconds(200))
        #expect(Backoff.reconnect == Backoff(first: .milliseconds(200), cap: .seconds(2)))
    }
}
