import Foundation
import Synchronization

/// Wakes long-polls when a vault's journal grows.
///
/// Each account has a generation number that every append bumps. A reader
/// takes the generation *before* it queries the store; if the store has
/// nothing new it waits for a generation past that one, so an append that
/// lands between the query and the wait is never missed. Waiting costs one
/// suspended continuation, not a thread or a connection to the store.
///
/// A store shared by several processes feeds appends made elsewhere in here
/// too (`JournalEventSource`); when it may have missed some, `notifyAll()`
/// bumps every account's generation at once, so every reader re-queries.
public final class JournalNotifier: Sendable {
    private struct Waiter {
        let account: AccountID
        let continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var generations: [AccountID: UInt64] = [:]
        /// Added to every account's generation: bumped by `notifyAll()`.
        var epoch: UInt64 = 0
        var waiters: [UInt64: Waiter] = [:]
        var nextWaiter: UInt64 = 0
        var closed = false

        func generation(of account: AccountID) -> UInt64 { (generations[account] ?? 0) &+ epoch }
    }

    private let state = Mutex(State())

    public init() {}

    /// The account's current generation.
    public func generation(of account: AccountID) -> UInt64 {
        state.withLock { $0.generation(of: account) }
    }

    /// Number of long-polls waiting now (a metric).
    public var waiting: Int { state.withLock { $0.waiters.count } }

    /// Records an append to `account` and wakes its waiters.
    public func notify(_ account: AccountID) {
        let woken: [CheckedContinuation<Void, Never>] = state.withLock { s in
            s.generations[account, default: 0] += 1
            let ids = s.waiters.filter { $0.value.account == account }.map(\.key)
            return ids.compactMap { s.waiters.removeValue(forKey: $0)?.continuation }
        }
        for c in woken { c.resume() }
    }

    /// Records that any account may have new entries (events were possibly
    /// missed, e.g. while a shared store's event connection was down) and
    /// wakes every waiter once; each re-queries the store.
    public func notifyAll() {
        let woken: [CheckedContinuation<Void, Never>] = state.withLock { s in
            s.epoch += 1
            defer { s.waiters.removeAll() }
            return s.waiters.values.map(\.continuation)
        }
        for c in woken { c.resume() }
    }

    /// Wakes every waiter now and makes later waits return at once (server shutdown).
    public func shutdown() {
        let woken: [CheckedContinuation<Void, Never>] = state.withLock { s in
            s.closed = true
            defer { s.waiters.removeAll() }
            return s.waiters.values.map(\.continuation)
        }
        for c in woken { c.resume() }
    }

    /// Returns when `account`'s generation passes `after`, after `timeout`,
    /// or when the task is cancelled, whichever comes first.
    public func wait(for account: AccountID, after: UInt64, timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.suspend(account: account, after: after) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func suspend(account: AccountID, after: UInt64) async {
        let id = state.withLock { s -> UInt64 in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.closed || s.generation(of: account) > after || Task.isCancelled { return true }
                    s.waiters[id] = Waiter(account: account, continuation: c)
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            let c = state.withLock { $0.waiters.removeValue(forKey: id)?.continuation }
            c?.resume()
        }
    }
}

/// Limits login attempts per (account name, client address): a token bucket
/// of `burst` attempts refilled at one per `interval`. Memory is bounded:
/// full buckets are forgotten.
public final class LoginLimiter: Sendable {
    private struct Bucket { var tokens: Double; var updated: ContinuousClock.Instant }
    private struct State {
        var buckets: [String: Bucket] = [:]
        var lastPrune: ContinuousClock.Instant?
    }
    private let state = Mutex(State())
    private let burst: Double
    private let interval: Duration
    /// Keys kept before full buckets are pruned (at most once a second), and
    /// four times that before the least recently used are dropped: an
    /// attacker spraying names or addresses costs bounded memory and, per
    /// attempt, no scan of the whole table (issue 15).
    let softLimit: Int
    private let clock = ContinuousClock()

    public init(burst: Int = 10, interval: Duration = .seconds(6), softLimit: Int = 100_000) {
        self.burst = Double(burst)
        self.interval = interval
        self.softLimit = softLimit
    }

    /// How many keys are tracked (for tests).
    var count: Int { state.withLock { $0.buckets.count } }

    /// Takes one attempt for `key`; returns nil when allowed, or the seconds to wait.
    public func attempt(_ key: String) -> Int? {
        let now = clock.now
        let perSecond = 1 / Self.seconds(interval)
        return state.withLock { s in
            if s.buckets.count > 4 * softLimit {
                // Past the hard bound: the most recently used are kept (once per
                // 3 × softLimit new keys, so a sort's cost is spread over them).
                let keep = s.buckets.sorted { $0.value.updated > $1.value.updated }.prefix(softLimit)
                s.buckets = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
            } else if s.buckets.count > softLimit, s.lastPrune.map({ now - $0 >= .seconds(1) }) ?? true {
                // Buckets that have refilled hold nothing worth keeping (a scan at most once a second).
                s.lastPrune = now
                s.buckets = s.buckets.filter { $0.value.tokens + perSecond * Self.seconds(now - $0.value.updated) < burst }
            }
            var bucket = s.buckets[key] ?? Bucket(tokens: burst, updated: now)
            bucket.tokens = min(burst, bucket.tokens + perSecond * Self.seconds(now - bucket.updated))
            bucket.updated = now
            guard bucket.tokens >= 1 else {
                s.buckets[key] = bucket
                return max(1, Int(((1 - bucket.tokens) / perSecond).rounded(.up)))
            }
            bucket.tokens -= 1
            s.buckets[key] = bucket
            return nil
        }
    }

    private static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}

/// Counts the long-polls each account holds open, up to a limit.
final class LongPollSlots: Sendable {
    let limit: Int
    private let held = Mutex<[AccountID: Int]>([:])

    init(limit: Int) { self.limit = limit }

    /// Takes a slot for `account`; false when it holds `limit` already.
    func take(_ account: AccountID) -> Bool {
        held.withLock { h in
            guard h[account, default: 0] < limit else { return false }
            h[account, default: 0] += 1
            return true
        }
    }

    func give(_ account: AccountID) {
        held.withLock { h in
            h[account, default: 1] -= 1
            if h[account] == 0 { h[account] = nil }
        }
    }
}
