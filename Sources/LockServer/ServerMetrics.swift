import Prometheus

/// The server's Prometheus metrics, served at `GET /metrics`.
///
/// Kept on a registry of its own (not the global metrics system), so every
/// server instance — a test's included — reports exactly its own numbers.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let bytesIn: Counter
    private let bytesOut: Counter
    private let longPolls: Gauge
    private let storedBytes: Gauge

    public init() {
        bytesIn = registry.makeCounter(name: "lockfs_chunk_bytes_received_total", help: "Bytes of chunk envelopes received")
        bytesOut = registry.makeCounter(name: "lockfs_chunk_bytes_sent_total", help: "Bytes of chunk envelopes sent")
        longPolls = registry.makeGauge(name: "lockfs_long_polls_open", help: "Journal long-polls waiting now")
        storedBytes = registry.makeGauge(name: "lockfs_stored_bytes", help: "Bytes of chunk envelopes stored, all accounts (as of the last upload)")
    }

    /// Counts one request and its latency.
    func record(method: String, route: String, status: Int, duration: Duration) {
        let labels = [("method", method), ("route", route), ("status", String(status))]
        registry.makeCounter(name: "lockfs_requests_total", labels: labels, help: "HTTP requests").increment()
        registry.makeDurationHistogram(
            name: "lockfs_request_duration_seconds", labels: [("route", route)],
            buckets: [.milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(500),
                      .seconds(2), .seconds(10), .seconds(60)],
            help: "HTTP request latency"
        ).record(duration)
    }

    func received(_ n: Int) { bytesIn.increment(by: Int64(n)) }
    func sent(_ n: Int) { bytesOut.increment(by: Int64(n)) }
    func longPoll(_ delta: Int) { longPolls.increment(by: Double(delta)) }
    func stored(total: Int64) { storedBytes.set(total) }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> [UInt8] { registry.emitToBuffer() }
}
