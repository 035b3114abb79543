import BenchSupport
import KeydPlatform

#if canImport(Glibc)
import Glibc
#endif

/// What one audit group commit costs at least, measured before keyd starts: the file system's append
/// plus fsync in the scratch directory (where keyd's state directory will be), and the TPM NV counter
/// increment keyd does after every group, on the same swtpm.
enum CommitFloor {
    /// An owner NV index keyd does not use (its audit and trust counters are 0x01a57e00 and 0x01a57e01).
    static let scratchCounterIndex: UInt32 = 0x0100_BE70

    /// Microseconds of `count` appends of one 450-byte line (about one release record) each followed by
    /// fsync, to a new file in `directory`.
    static func fsyncLatencies(directory: String, count: Int) throws -> SortedSamples {
        let path = directory + "/fsync-probe.log"
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BenchFailure("open \(path): errno \(errno)") }
        defer {
            close(fd)
            unlink(path)
        }
        let line = [UInt8](repeating: UInt8(ascii: "x"), count: 449) + [UInt8(ascii: "\n")]
        var samples: [Double] = []
        for _ in 0..<count {
            let started = monotonicNanoseconds()
            let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written == line.count, fsync(fd) == 0 else { throw BenchFailure("append+fsync: errno \(errno)") }
            samples.append(elapsedMicroseconds(since: started))
        }
        return SortedSamples(samples)
    }

    /// Microseconds of `count` NV counter increments through libtss2 (as keyd's `incrementCounter`: the
    /// index looked up, then incremented). The TPM is released before returning (swtpm serves one client).
    static func counterLatencies(tcti: String, count: Int) throws -> SortedSamples {
        let device = try TPMDevice(tcti: tcti)
        if try device.readCounter(index: scratchCounterIndex) == nil {
            _ = try device.defineCounter(index: scratchCounterIndex)
        }
        var samples: [Double] = []
        for _ in 0..<count {
            let started = monotonicNanoseconds()
            try device.incrementCounter(index: scratchCounterIndex)
            samples.append(elapsedMicroseconds(since: started))
        }
        return SortedSamples(samples)
    }
}
