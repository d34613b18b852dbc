import Foundation
import Synchronization

/// Progress of a long copy on stdout: on a terminal one bar redrawn in
/// place (items n/N, bytes, rate, ETA); otherwise plain lines, one per 5 %
/// or every 10 s, so logs stay short and scripts can follow.
final class ProgressDisplay: Sendable {
    private struct State {
        var items = 0
        var bytes: Int64 = 0
        /// Bytes moved by this run (not skipped ones): the rate's numerator.
        var movedBytes: Int64 = 0
        var lastStep = -1
        var lastLine = ContinuousClock.now
    }

    let title: String
    let totalItems: Int
    let totalBytes: Int64
    private let started = ContinuousClock.now
    private let state = Mutex(State())
    private let isTerminal = isatty(1) != 0
    private let ticker = Mutex<Task<Void, Never>?>(nil)

    init(_ title: String, items: Int, bytes: Int64) {
        self.title = title
        totalItems = items
        totalBytes = bytes
        if isTerminal {
            let task = Task { [weak self] in
                while !Task.isCancelled {
                    self?.draw()
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
            ticker.withLock { $0 = task }
        }
    }

    /// Counts items done; `moved` says whether their bytes went over the wire in this run.
    func add(items: Int = 1, bytes: Int64, moved: Bool) {
        let line: String? = state.withLock { s in
            s.items += items
            s.bytes += bytes
            if moved { s.movedBytes += bytes }
            guard !isTerminal else { return nil }
            let step = totalItems == 0 ? 20 : s.items * 20 / totalItems
            let now = ContinuousClock.now
            guard step > s.lastStep || now - s.lastLine >= .seconds(10) else { return nil }
            s.lastStep = step
            s.lastLine = now
            return render(s)
        }
        if let line { say(line) }
    }

    /// Ends the bar (a last draw and a newline on a terminal).
    func finish() {
        ticker.withLock { $0?.cancel() }
        if isTerminal {
            draw()
            say("")
        } else {
            let line = state.withLock { s in s.lastStep == 20 ? nil : render(s) }
            if let line { say(line) }
        }
    }

    private func draw() {
        let text = state.withLock { render($0) }
        FileHandle.standardOutput.write(Data(("\r" + text + "\u{1B}[K").utf8))
    }

    private func render(_ s: State) -> String {
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = seconds > 0.5 ? Double(s.movedBytes) / seconds : 0
        let remaining = Double(totalBytes - s.bytes)
        let eta = rate > 0 && remaining > 0 ? formatDuration(remaining / rate) : (remaining <= 0 ? "0s" : "?")
        var bar = ""
        if isTerminal {
            let width = 24, filled = totalItems == 0 ? width : min(width, s.items * width / totalItems)
            bar = " [" + String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled) + "]"
        }
        return "\(title)\(bar) \(s.items)/\(totalItems), \(formatBytes(s.bytes))/\(formatBytes(totalBytes)), "
            + "\(formatBytes(Int64(rate)))/s, ETA \(eta)"
    }
}

/// "42s", "3m07s", "2h05m".
func formatDuration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    if s < 60 { return "\(s)s" }
    if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
}
