import BenchSupport

#if canImport(Glibc)
import Glibc
#endif

/// Latency figures of one series of timed round trips.
struct LatencySummary {
    /// Round trips timed.
    let count: Int
    let p50Microseconds: Double
    let p90Microseconds: Double
    let p99Microseconds: Double
    let maxMicroseconds: Double
    let meanMicroseconds: Double
    /// `count` divided by the wall time of the whole timed loop (timing overhead included).
    let requestsPerSecond: Double

    /// Summarizes per-request durations (ns) and the loop's wall time (ns).
    init(durations: [UInt64], wallNanoseconds: UInt64) {
        precondition(!durations.isEmpty, "no durations to summarize")
        let samples = SortedSamples(durations.lazy.map { Double($0) / 1000 })
        count = samples.values.count
        p50Microseconds = samples.percentile(0.50)
        p90Microseconds = samples.percentile(0.90)
        p99Microseconds = samples.percentile(0.99)
        maxMicroseconds = samples.maximum
        meanMicroseconds = samples.mean
        requestsPerSecond = Double(count) / (Double(wallNanoseconds) / 1e9)
    }
}

/// Runs `body` `warmup` times untimed, then `count` times timed one by one.
func timeRoundTrips(
    warmup: Int,
    count: Int,
    _ body: (Int) throws(BenchError) -> Void
) throws(BenchError) -> LatencySummary {
    for i in 0..<warmup { try body(i) }
    var durations = [UInt64](repeating: 0, count: count)
    let start = monotonicNanoseconds()
    for i in 0..<count {
        let t0 = monotonicNanoseconds()
        try body(warmup + i)
        durations[i] = monotonicNanoseconds() &- t0
    }
    let wall = monotonicNanoseconds() &- start
    return LatencySummary(durations: durations, wallNanoseconds: wall)
}

/// VmRSS and VmHWM of one process, in KiB, from /proc/<pid>/status.
struct MemorySample {
    let rssKiB: Int
    let hwmKiB: Int

    /// Reads the two fields; throws if the process is gone or the fields are missing.
    static func read(pid: pid_t) throws(BenchError) -> MemorySample {
        let path = "/proc/\(pid)/status"
        let text = try readTextFile(path)
        var rss: Int?
        var hwm: Int?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("VmRSS:") { rss = kibValue(line) }
            if line.hasPrefix("VmHWM:") { hwm = kibValue(line) }
        }
        guard let rss, let hwm else { throw .keydFailed("\(path) has no VmRSS/VmHWM lines") }
        return MemorySample(rssKiB: rss, hwmKiB: hwm)
    }

    private static func kibValue(_ line: Substring) -> Int? {
        line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
    }
}

/// Reads a small text file whole (procfs files report size 0, so read until EOF).
func readTextFile(_ path: String, limit: Int = 1 << 20) throws(BenchError) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .system("open", path, errno: errno) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while bytes.count < limit {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw .system("read", path, errno: errno)
        }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Writes a whole file with mode 0600.
func writeTextFile(_ path: String, _ text: String) throws(BenchError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw .system("open", path, errno: errno) }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 {
            if errno == EINTR { continue }
            throw .system("write", path, errno: errno)
        }
        offset += n
    }
}
