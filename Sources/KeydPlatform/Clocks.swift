import Glibc

/// CLOCK_MONOTONIC: for deadlines and durations; never jumps, starts at an arbitrary point.
public enum MonotonicClock {
    /// Nanoseconds since an arbitrary fixed point (boot, on Linux).
    public static func nowNanoseconds() -> UInt64 {
        var time = timespec()
        let result = clock_gettime(CLOCK_MONOTONIC, &time)
        precondition(result == 0, "clock_gettime(CLOCK_MONOTONIC) failed")
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

/// CLOCK_REALTIME: for timestamps people read; may jump when the clock is set.
public enum WallClock {
    /// Seconds since the Unix epoch.
    public static func nowSeconds() -> Int64 {
        var time = timespec()
        let result = clock_gettime(CLOCK_REALTIME, &time)
        precondition(result == 0, "clock_gettime(CLOCK_REALTIME) failed")
        return Int64(time.tv_sec)
    }
}
