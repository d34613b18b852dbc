import LockWire

/// How `Engine.catchUp` ended.
public enum CatchUp: Sendable, Equatable {
    /// The journal is applied up to the entry that was the server's latest
    /// when it first answered.
    case current(applied: Int)
    /// The server did not answer (unreachable, failing, or it refused this
    /// device): nothing new was applied, the view is the index as it was.
    case offline(LockError)
    /// `limit` passed first: `applied` of the `total` entries that were
    /// missing are applied (`total` is nil when the server had not answered
    /// yet); the background puller fetches the rest.
    case partial(applied: Int, total: Int?)
    /// The server broke the rules (the integrity alarm is raised).
    case alarm(String)
}

extension Engine {
    /// Pulls and applies the journal up to the server's latest entry (as of
    /// its first answer), for at most `limit`: what a mount does before it
    /// reports itself ready, so that a new device shows the whole tree at once.
    ///
    /// Call it before `start()`: the background puller must not apply pages
    /// at the same time. A first request that fails ends it at once
    /// (`.offline`), so pass a `probe` remote that does not retry for long;
    /// later failures are retried with `options.reconnect` until `limit`.
    ///
    /// - Parameters:
    ///   - limit: the longest the catch-up may take (a request in flight is
    ///     abandoned then).
    ///   - probe: the remote to pull through (default: the engine's own).
    ///   - progress: called after each applied page with (entries applied,
    ///     entries that were missing).
    public func catchUp(within limit: Duration, through probe: (any Remote)? = nil,
                        progress: @Sendable (_ applied: Int, _ total: Int) -> Void = { _, _ in }) async -> CatchUp {
        let remote = probe ?? self.remote
        let deadline = ContinuousClock.now + limit
        let start = state.withLock { $0.cursor }
        var target: UInt64?
        var backoff = options.reconnect
        while true {
            if let alarm = state.withLock({ $0.alarm }) { return .alarm(alarm) }
            let cursor = state.withLock { $0.cursor }
            if let target, cursor >= target { return .current(applied: Int(cursor - start)) }
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero {
                return .partial(applied: Int(cursor - start), total: target.map { Int($0 - start) })
            }
            do {
                let page = try await Self.within(remaining) {
                    try await remote.entries(after: JournalSeq(cursor), limit: APIv1.maxEntriesPerPage, wait: .zero)
                }
                guard let page else { continue }  // the deadline passed: answered above
                try await applyFetchedPage(page, requestedAfter: cursor)
                let goal = target ?? max(page.latest.rawValue, cursor)
                target = goal
                let now = state.withLock { $0.cursor }
                progress(Int(now - start), Int(goal - start))
                if page.items.isEmpty { return .current(applied: Int(now - start)) }
                backoff.reset()
            } catch LockError.integrity(let why) {
                raiseAlarm(why)
                return .alarm(why)
            } catch {
                let mapped = (error as? LockError) ?? (error as? RemoteError).map(LockError.from) ?? .offline
                noteFailure("\(mapped)")
                if target == nil { return .offline(mapped) }
                let wait = min(backoff.next(), deadline - ContinuousClock.now)
                if wait > .zero { try? await Task.sleep(for: wait) }
            }
        }
    }

    /// `body`'s result, or nil once `limit` has passed (`body` is then cancelled).
    static func within<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T? {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask { try await Task.sleep(for: limit); return nil }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
    }
}
