/// How long to wait between attempts at something that keeps failing:
/// doubling from `first` up to `cap`, each wait drawn at random from the upper
/// half of its step ("equal jitter"), so clients that lost the server together
/// do not come back in step.
///
/// The cap is what bounds how late a returning server is noticed: a client
/// never waits longer than `cap` between two attempts. With `reconnect` (2 s)
/// a server that comes back is seen within about 2 s, and one that stays down
/// gets one attempt every 1–2 s per loop of each client (docs/design.md,
/// "Reconnecting"). `RetryingRemote` (within a call) and the engine's puller
/// and uploader (between calls) use this one type.
public struct Backoff: Sendable, Equatable {
    /// The first wait (before jitter).
    public var first: Duration
    /// The longest wait.
    public var cap: Duration
    /// Failures in a row so far (reset by `reset()`).
    public private(set) var failures = 0

    /// Reconnecting to the server: 200 ms, doubling, at most 2 s.
    public static let reconnect = Backoff(first: .milliseconds(200), cap: .seconds(2))

    public init(first: Duration, cap: Duration) {
        self.first = first
        self.cap = max(first, cap)
    }

    /// The wait after `n` failures in a row (n ≥ 1): `first · 2^(n−1)`, at
    /// most `cap`, jittered down by up to half.
    public func delay(afterFailures n: Int) -> Duration {
        let step = min(cap, first * (1 << min(max(n - 1, 0), 30)))
        let ms = max(1, step.components.seconds * 1000 + step.components.attoseconds / 1_000_000_000_000_000)
        return .milliseconds(Int64.random(in: (ms / 2)...ms))
    }

    /// Counts a failure and returns how long to wait before the next attempt.
    public mutating func next() -> Duration {
        failures += 1
        return delay(afterFailures: failures)
    }

    /// After a success: the next failure waits `first` again.
    public mutating func reset() { failures = 0 }
}
