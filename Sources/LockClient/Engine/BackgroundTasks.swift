import Synchronization

/// The engine's short-lived background work (read-ahead, pinned fetches, the
/// move of uploaded chunks to the cache): every task is tracked, so that
/// `Engine.stop()` cancels it and waits for it to end. A task started after
/// `stop` began is cancelled at once.
final class BackgroundTasks: Sendable {
    private struct State {
        var next = 0
        var tasks: [Int: Task<Void, Never>] = [:]
        var stopped = false
    }
    private let state = Mutex(State())

    /// Runs `body` in a tracked task.
    func spawn(priority: TaskPriority? = nil, _ body: @escaping @Sendable () async -> Void) {
        state.withLock { s in
            let id = s.next
            s.next += 1
            let task = Task(priority: priority) { [self] in
                await body()
                _ = state.withLock { $0.tasks.removeValue(forKey: id) }
            }
            if s.stopped { task.cancel() }
            s.tasks[id] = task
        }
    }

    /// The number of tasks still running (for tests).
    var count: Int { state.withLock { $0.tasks.count } }

    /// Takes tasks again after `stop` (an engine started again).
    func resume() { state.withLock { $0.stopped = false } }

    /// Cancels every task and waits for each to end.
    func stop() async {
        let tasks = state.withLock { s in s.stopped = true; return Array(s.tasks.values) }
        for t in tasks { t.cancel() }
        for t in tasks { await t.value }
    }
}
