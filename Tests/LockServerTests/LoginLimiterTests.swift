import Foundation
@testable import LockServer
import Testing

/// The attempt limiter under a spray of keys (issue 15): memory stays
/// bounded, and a key that is limited stays limited while the table is
/// within its bound.
@Suite struct LoginLimiterTests {
    @Test func aSprayOfKeysIsBoundedAndALimitedKeyStaysLimited() {
        let limiter = LoginLimiter(burst: 2, interval: .seconds(3600), softLimit: 100)
        #expect(limiter.attempt("login alice 192.0.2.1") == nil)
        #expect(limiter.attempt("login alice 192.0.2.1") == nil)
        #expect(limiter.attempt("login alice 192.0.2.1") != nil)
        // 300 other keys, each with one attempt: above the soft limit, within four times it.
        for i in 0..<300 { _ = limiter.attempt("login x\(i) 198.51.100.7") }
        #expect(limiter.attempt("login alice 192.0.2.1") != nil, "pruning forgot a limited key")
        // A spray far beyond four times the limit keeps at most that many (the newest).
        for i in 0..<2_000 { _ = limiter.attempt("login y\(i) 198.51.100.7") }
        #expect(limiter.count <= 4 * 100 + 1, "\(limiter.count) keys kept")
    }
}
