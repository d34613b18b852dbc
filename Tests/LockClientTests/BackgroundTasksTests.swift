import Foundation
@testable import LockClient
import Synchronization
import Testing

/// Every background task the engine starts is tracked and ended by `stop()` (issue 14).
@Suite struct BackgroundTasksTests {
    @Test func stopCancelsEveryTaskAndWaitsForIt() async throws {
        let tasks = BackgroundTasks()
        let ended = Mutex<[Bool]>([])
        for _ in 0..<3 {
            tasks.spawn {
                do { try await Task.sleep(for: .seconds(3600)) } catch {}
                ended.withLock { $0.append(Task.isCancelled) }
            }
        }
        #expect(tasks.count == 3)
        await tasks.stop()
        #expect(ended.withLock { $0 } == [true, true, true])
        #expect(tasks.count == 0)
        // One started after stop began is cancelled at once; after resume, not.
        tasks.spawn { ended.withLock { $0.append(Task.isCancelled) } }
        await tasks.stop()
        tasks.resume()
        tasks.spawn { ended.withLock { $0.append(Task.isCancelled) } }
        while tasks.count > 0 { try await Task.sleep(for: .milliseconds(1)) }  // it ran and ended on its own
        await tasks.stop()
        #expect(ended.withLock { $0 } == [true, true, true, true, false])
    }

    /// The engine's read-ahead runs in tracked tasks: none outlives `stop()`.
    @Test func theEnginesReadAheadEndsWithStop() async throws {
        let (_, d) = try makeDevices(2)
        let a = d[0].engine, b = d[1].engine
        try await a.put("big", seededText(4 << 20, seed: 9))
        try await a.syncNow()
        try await b.pullOnce()
        _ = try await b.read(try b.resolve("big"), offset: 0, size: 4096)
        b.start()
        await b.stop()
        #expect(b.background.count == 0)
    }
}
