import ArgumentParser
import BenchSupport
import KeydClient
import KeydProtocol

// keyd-bench: keyd's status round trip beside a bare Unix-socket echo, keyd's RSS and binary size.
//
// Figures are reported, never asserted: the exit status is non-zero only when the run itself failed.
#if canImport(Glibc)
import Glibc
#endif

/// The command line.
struct BenchOptions: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyd-bench",
        abstract: "keyd's status round trip beside a bare Unix-socket echo, keyd's RSS and binary size."
    )

    @OptionGroup var keyd: KeydBinaryOption
    @Option(help: "Timed status round trips.") var requests = 100_000
    @Option(help: "Untimed round trips before them.") var warmup = 2_000

    func validate() throws {
        guard (1...100_000_000).contains(requests) else {
            throw ValidationError("--requests \(requests) outside 1...100000000")
        }
        guard (0...100_000_000).contains(warmup) else {
            throw ValidationError("--warmup \(warmup) outside 0...100000000")
        }
    }
}

// MARK: - Formatting

/// 12345 KiB as "12345 KiB (12.06 MiB)".
func kib(_ value: Int) -> String { "\(value) KiB (\(fixed(Double(value) / 1024, 2)) MiB)" }

// MARK: - Machine facts

/// Processors online, kernel, CPU model and load average.
func machineDescription() -> [String] {
    var names = utsname()
    uname(&names)
    func field<T>(_ value: T) -> String {
        withUnsafeBytes(of: value) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
    }
    let cpu =
        (try? readTextFile("/proc/cpuinfo"))?
        .split(separator: "\n").first { $0.hasPrefix("model name") }
        .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingLeadingSpaces() } ?? "unknown"
    return [
        "nproc \(sysconf(Int32(_SC_NPROCESSORS_ONLN))), \(field(names.sysname)) \(field(names.release)) \(field(names.machine))",
        "cpu \(cpu)",
        "loadavg at start \(loadAverage())",
    ]
}

extension String {
    /// Drops leading spaces and tabs.
    func trimmingLeadingSpaces() -> String { String(drop { $0 == " " || $0 == "\t" }) }
}

/// user+system CPU time of `pid` in microseconds, from /proc/<pid>/stat (clock-tick resolution).
func cpuMicroseconds(pid: pid_t) -> Int? {
    guard let text = try? readTextFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
    // Fields after "pid (comm)": state is field 3, utime 14, stime 15.
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return nil }
    let ticks = sysconf(Int32(_SC_CLK_TCK))
    return (user + system) * 1_000_000 / ticks
}

/// How the keyd binary was built, as far as the file shows.
func buildDescription(_ path: String, scratch: String) -> String {
    let release = path.contains("/release/") ? "release (path)" : "unknown config (path has no /release/)"
    guard let ldd = captureOutput("ldd", [path], scratchFile: scratch + "/ldd.txt") else {
        return "\(release); ldd unavailable"
    }
    if ldd.contains("libswiftCore") {
        return "\(release); dynamic Swift stdlib (ldd lists libswiftCore) - not a --static-swift-stdlib build"
    }
    if ldd.contains("not a dynamic executable") { return "\(release); fully static" }
    return "\(release); no libswiftCore in ldd (a --static-swift-stdlib build if it is Swift)"
}

/// Size of a stripped copy of `path` (made in `scratch`, then removed), or nil without strip(1).
func strippedSize(_ path: String, scratch: String) -> Int? {
    let copy = scratch + "/keyd.stripped"
    defer { unlink(copy) }
    guard captureOutput("strip", ["-o", copy, path], scratchFile: scratch + "/strip.txt") != nil else { return nil }
    var info = stat()
    guard stat(copy, &info) == 0 else { return nil }
    return Int(info.st_size)
}

// MARK: - The run

/// Everything measured while keyd ran.
struct KeydFigures {
    var idle: MemorySample
    var afterWarmup: MemorySample
    var afterRequests: MemorySample
    var afterRaw: MemorySample
    var client: LatencySummary
    var raw: LatencySummary
    var statusFrameLength: Int
    var keydCPUPerRequestMicroseconds: Double?
    var requestsServed: UInt64
    var connections: UInt32
    var logLines: Int
}

/// Starts nothing, stops nothing: measures the running keyd.
func measureKeyd(_ keyd: KeydProcess, options: BenchOptions) throws(BenchError) -> KeydFigures {
    let idle = try MemorySample.read(pid: keyd.pid)

    // 3. status through KeydClient, as trustd and keydctl call it.
    let connection: KeydConnection
    do {
        connection = try KeydConnection(path: keyd.adminSocket)
    } catch {
        throw .keydFailed("connecting to \(keyd.adminSocket): \(error)")
    }
    defer { connection.close() }
    func status(_ i: Int) throws(BenchError) {
        do {
            _ = try connection.status()
        } catch {
            throw .keydFailed("status call \(i) failed: \(error)")
        }
    }
    for i in 0..<options.warmup { try status(i) }
    let afterWarmup = try MemorySample.read(pid: keyd.pid)
    let cpuBefore = cpuMicroseconds(pid: keyd.pid)
    let client = try timeRoundTrips(warmup: 0, count: options.requests) { (i: Int) throws(BenchError) in
        try status(options.warmup + i)
    }
    let cpuAfter = cpuMicroseconds(pid: keyd.pid)
    let afterRequests = try MemorySample.read(pid: keyd.pid)

    // The same requests on pre-encoded frames, to separate keyd's cost from KeydClient's.
    let rawClient = try RawStatusClient(path: keyd.adminSocket)
    let raw = try timeRoundTrips(warmup: options.warmup, count: options.requests) { (_: Int) throws(BenchError) in
        try rawClient.status()
    }
    let afterRaw = try MemorySample.read(pid: keyd.pid)

    let final: StatusAnswer
    do {
        final = try connection.status()
    } catch {
        throw .keydFailed("final status failed: \(error)")
    }
    let logLines = ((try? readTextFile(keyd.logPath)) ?? "").split(separator: "\n").count
    var cpuPerRequest: Double?
    if let cpuBefore, let cpuAfter { cpuPerRequest = Double(cpuAfter - cpuBefore) / Double(options.requests) }
    return KeydFigures(
        idle: idle,
        afterWarmup: afterWarmup,
        afterRequests: afterRequests,
        afterRaw: afterRaw,
        client: client,
        raw: raw,
        statusFrameLength: rawClient.lastAnswerFrameLength,
        keydCPUPerRequestMicroseconds: cpuPerRequest,
        requestsServed: final.requestsServed,
        connections: final.connections,
        logLines: logLines
    )
}

/// Prints the table and the BENCH line.
func report(
    options: BenchOptions,
    keyd k: KeydFigures,
    echo: LatencySummary,
    binaryBytes: Int,
    strippedBytes: Int?,
    build: String,
    stopped: String
) {
    let ratio = k.client.p50Microseconds / echo.p50Microseconds
    let rawRatio = k.raw.p50Microseconds / echo.p50Microseconds
    let header =
        pad("round trip", 34) + lpad("p50 µs", 9) + lpad("p90 µs", 9) + lpad("p99 µs", 9)
        + lpad("max µs", 10) + lpad("mean µs", 9) + lpad("req/s", 10)
    func row(_ name: String, _ s: LatencySummary) -> String {
        pad(name, 34) + lpad(fixed(s.p50Microseconds), 9) + lpad(fixed(s.p90Microseconds), 9)
            + lpad(fixed(s.p99Microseconds), 9) + lpad(fixed(s.maxMicroseconds), 10)
            + lpad(fixed(s.meanMicroseconds), 9)
            + lpad(fixed(s.requestsPerSecond, 0), 10)
    }
    print("")
    print("Round trips (\(options.requests) timed after \(options.warmup) warm-up, one at a time, CLOCK_MONOTONIC)")
    print(header)
    print(String(repeating: "-", count: 90))
    print(row("keyd status (KeydConnection)", k.client))
    print(row("keyd status (raw frames)", k.raw))
    print(row("echo \(EchoBaseline.requestSize)B -> \(k.statusFrameLength)B (pthread, same run)", echo))
    print("")
    print("status answer frame: \(k.statusFrameLength) bytes (measured on the wire); echo replies with that many")
    if let cpu = k.keydCPUPerRequestMicroseconds {
        print("keyd CPU (user+sys) per status request: \(fixed(cpu, 2)) µs (clock-tick resolution)")
    }
    print(
        "keyd counted \(k.requestsServed) requests served, \(k.connections) open connection(s); keyd log: \(k.logLines) lines"
    )
    print("keyd p50 (raw frames) / echo p50: \(fixed(rawRatio, 2))x")
    print("")
    print("Goals")
    print(
        "  keyd status p50 \(fixed(k.client.p50Microseconds)) µs <= 25 µs: \(verdict(k.client.p50Microseconds <= 25))"
    )
    print("  keyd p50 / echo p50 \(fixed(ratio, 3))x <= 2x: \(verdict(ratio <= 2))")
    print(
        "  keyd \(fixed(k.client.requestsPerSecond, 0)) req/s >= 40000: \(verdict(k.client.requestsPerSecond >= 40_000))"
    )
    if echo.requestsPerSecond < 40_000 {
        print(
            "    (the bare echo itself reached only \(fixed(echo.requestsPerSecond, 0)) req/s in this run, so this machine as loaded cannot judge the goal)"
        )
    }
    let growth = k.afterRequests.rssKiB - k.afterWarmup.rssKiB
    print("  keyd VmHWM \(kib(k.afterRequests.hwmKiB)) <= 12 MiB: \(verdict(k.afterRequests.hwmKiB <= 12 * 1024))")
    print(
        "  keyd VmRSS growth over the \(options.requests) timed requests \(growth) KiB <= 512 KiB (flat): \(verdict(growth <= 512))"
    )
    print("")
    print("keyd memory (/proc/<pid>/status)          VmRSS        VmHWM")
    func mem(_ name: String, _ m: MemorySample) -> String {
        pad(name, 38) + lpad("\(m.rssKiB) KiB", 12) + lpad("\(m.hwmKiB) KiB", 13)
    }
    print(mem("  idle, after start", k.idle))
    print(mem("  after \(options.warmup) warm-up", k.afterWarmup))
    print(mem("  after \(options.requests) timed (KeydConnection)", k.afterRequests))
    print(mem("  after \(options.requests) more (raw frames)", k.afterRaw))
    print(
        "  delta idle -> after timed: VmRSS \(k.afterRequests.rssKiB - k.idle.rssKiB) KiB, VmHWM \(k.afterRequests.hwmKiB - k.idle.hwmKiB) KiB"
    )
    print("")
    print("keyd binary: \(binaryBytes) bytes (\(fixed(Double(binaryBytes) / 1_048_576, 2)) MiB), \(build)")
    if let strippedBytes {
        print("  stripped copy (strip -o): \(strippedBytes) bytes (\(fixed(Double(strippedBytes) / 1_048_576, 2)) MiB)")
    }
    print("keyd stopped: \(stopped); loadavg at end \(loadAverage())")
    print("")
    print(
        "BENCH keyd_status_p50_us=\(fixed(k.client.p50Microseconds, 2)) echo_p50_us=\(fixed(echo.p50Microseconds, 2))"
            + " ratio=\(fixed(ratio, 3)) keyd_rps=\(fixed(k.client.requestsPerSecond, 0))"
            + " rss_idle_kib=\(k.idle.rssKiB) rss_after_kib=\(k.afterRequests.rssKiB) binary_bytes=\(binaryBytes)"
    )
}

/// Writes `text` to stderr in one call.
func printError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
}

/// keyd's pid for the SIGINT/SIGTERM handler, so an interrupted run does not leave keyd behind.
nonisolated(unsafe) var keydPidForSignals: pid_t = 0

/// Runs the whole benchmark; returns the exit status.
func main() -> Int32 {
    let options = BenchOptions.parseOrExit()
    let keydPath = options.keyd.path
    var info = stat()
    guard stat(keydPath, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
        printError("keyd-bench: no keyd binary at \(keydPath)\n")
        return 66
    }
    let binaryBytes = Int(info.st_size)
    markInheritedDescriptorsCloseOnExec()

    print("keyd-bench")
    for line in machineDescription() { print("  " + line) }
    print("  keyd \(keydPath)")

    let scratch: ScratchDirectory
    do {
        scratch = try ScratchDirectory.create()
    } catch {
        printError("keyd-bench: \(error)\n")
        return 1
    }
    defer { scratch.remove() }
    let build = buildDescription(keydPath, scratch: scratch.path)
    print("  build \(build)")

    let keyd: KeydProcess
    do {
        keyd = try KeydProcess.start(binary: keydPath, directory: scratch.path)
    } catch {
        printError("keyd-bench: \(error)\n")
        return 1
    }
    keydPidForSignals = keyd.pid
    for sig in [SIGINT, SIGTERM] {
        signal(sig) { received in
            if keydPidForSignals > 0 { kill(keydPidForSignals, SIGTERM) }
            _exit(128 + received)
        }
    }

    let figures: KeydFigures
    do {
        try keyd.waitUntilReady()
        print("  keyd pid \(keyd.pid), sockets in \(scratch.path)")
        figures = try measureKeyd(keyd, options: options)
    } catch {
        let ended = keyd.reapIfExited()
        let stopped = keyd.stop()
        printError("keyd-bench: \(error)\nkeyd: \(ended ?? stopped)\nkeyd log tail:\n\(keyd.logTail())\n")
        return 1
    }
    let stopped = keyd.stop()
    keydPidForSignals = 0

    let echo: LatencySummary
    do {
        echo = try EchoBaseline.run(
            path: scratch.path + "/echo.sock",
            replySize: figures.statusFrameLength,
            warmup: options.warmup,
            count: options.requests
        )
    } catch {
        printError("keyd-bench: \(error)\n")
        return 1
    }
    let stripped = strippedSize(keydPath, scratch: scratch.path)
    report(
        options: options,
        keyd: figures,
        echo: echo,
        binaryBytes: binaryBytes,
        strippedBytes: stripped,
        build: build,
        stopped: stopped
    )
    return 0
}

exit(main())
