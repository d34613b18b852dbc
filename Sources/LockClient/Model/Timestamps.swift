import LockWire

#if canImport(Glibc)
import Glibc
#endif

extension Timestamp {
    /// A `timespec` (seconds and nanoseconds since the epoch) as a Timestamp.
    public init(_ t: timespec) {
        self.init(nanoseconds: Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec))
    }

    /// The wall clock now (CLOCK_REALTIME: what file times are in).
    public static var now: Timestamp {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return Timestamp(t)
    }
}
