#if canImport(Glibc)
import Glibc
#endif

/// Nanoseconds of CLOCK_MONOTONIC since an arbitrary origin: the one clock every bench times with.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}

/// Seconds from `start` to `end`, both ``monotonicNanoseconds()`` readings.
public func elapsedSeconds(from start: UInt64, to end: UInt64) -> Double { Double(end &- start) / 1e9 }

/// Milliseconds since `start`, a ``monotonicNanoseconds()`` reading.
public func elapsedMilliseconds(since start: UInt64) -> Double { Double(monotonicNanoseconds() &- start) / 1e6 }

/// Microseconds since `start`, a ``monotonicNanoseconds()`` reading.
public func elapsedMicroseconds(since start: UInt64) -> Double { Double(monotonicNanoseconds() &- start) / 1e3 }
