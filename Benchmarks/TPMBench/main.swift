// tpm-bench: evidence latency through keyd's socket beside tpm2_quote on the same software TPM,
// the time keyd takes to unseal the KEK at start, and the admin's status latency while a thousand
// trustd connections flood evidence.issue, beside the same latency on the idle keyd. Starts its own
// swtpm and keyd.
//
//   tpm-bench [--keyd PATH] [--requests N] [--quotes N] [--restarts N] [--flood-connections N]
//             [--flood-in-flight N] [--flood-seconds S]
import ArgumentParser
import AsterismTestSupport
import BenchSupport
import Foundation
import KeydClient
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Command-line settings.
struct Settings: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tpm-bench",
        abstract:
            "Evidence latency through keyd beside tpm2_quote on one swtpm; KEK unseal at keyd start; admin status under an evidence.issue flood."
    )

    @OptionGroup var keyd: KeydBinaryOption
    @Option(help: "Timed evidence requests through keyd.") var requests = 2000
    @Option(help: "Timed tpm2_quote runs (the baseline).") var quotes = 200
    @Option(help: "keyd restarts, each timing the KEK unseal.") var restarts = 5
    @Option(help: "trustd connections flooding evidence.issue while the admin's status is timed.")
    var floodConnections = 1000
    @Option(help: "evidence.issue requests each flooding connection keeps pipelined.") var floodInFlight = 4
    @Option(help: "Seconds the admin's status is timed, idle and then under the flood.") var floodSeconds = 8.0

    func validate() throws {
        for (name, value) in [
            ("--requests", requests), ("--quotes", quotes), ("--restarts", restarts),
            ("--flood-connections", floodConnections), ("--flood-in-flight", floodInFlight),
        ]
        where !(1...1_000_000).contains(value) {
            throw ValidationError("\(name) \(value) outside 1...1000000")
        }
        guard floodSeconds > 0 && floodSeconds <= 3600 else {
            throw ValidationError("--flood-seconds \(floodSeconds) outside (0, 3600]")
        }
    }
}

func start(_ path: String, _ arguments: [String], environment: [String: String] = [:], output: String) throws -> Process
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    _ = FileManager.default.createFile(atPath: output, contents: nil)
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
    handle.seekToEndOfFile()
    process.standardOutput = handle
    process.standardError = handle
    try process.run()
    return process
}

func waitFor(_ body: () -> Bool, what: String) {
    for _ in 0..<1000 {
        if body() { return }
        usleep(10_000)
    }
    fatalError("tpm-bench: \(what) did not come up")
}

let settings = Settings.parseOrExit()
let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tpm-bench-\(getpid())").path
try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: directory) }
// swtpm on a free port pair, used once it accepts connections (a fixed pause raced a busy machine).
let swtpm = try SoftwareTPM()
defer {
    swtpm.stop()
    try? FileManager.default.removeItem(atPath: swtpm.stateDirectory)
}
let tcti = swtpm.tcti
// The evidence latency is timed one request after another on one connection: rates far above swtpm's.
let config = """
    tpm-tcti = \(tcti)
    trustd-uids = \(geteuid())
    admin-uids = \(geteuid())
    evidence-per-second = 100000
    evidence-burst = 100000
    evidence-per-second-per-connection = 100000
    evidence-burst-per-connection = 100000

    """
try config.write(toFile: directory + "/keyd.conf", atomically: true, encoding: .utf8)

/// Starts keyd with `name`.conf, its state in `name`-state and its sockets `name`.sock and `name`-admin.sock
/// (the first keyd: keyd.conf, state, keyd.sock, admin.sock), and waits until its admin socket answers.
@MainActor func startKeyd(_ name: String = "keyd") throws -> Process {
    let first = name == "keyd"
    let admin = directory + (first ? "/admin.sock" : "/\(name)-admin.sock")
    let keyd = try start(
        settings.keyd.path,
        [
            "--state-dir", directory + (first ? "/state" : "/\(name)-state"), "--socket", directory + "/\(name).sock",
            "--admin-socket", admin, "--config", directory + "/\(name).conf",
        ],
        output: directory + "/\(name).log"
    )
    waitFor({ (try? KeydConnection(path: admin, timeoutMilliseconds: 500)) != nil }, what: "keyd")
    return keyd
}

func stop(_ process: Process) {
    process.terminate()
    process.waitUntilExit()
}

print("tpm-bench: swtpm \(tcti), keyd \(settings.keyd.path)")
var keyd = try startKeyd()
let trustd = try KeydConnection(path: directory + "/keyd.sock")
let nonce = (0..<32).map { _ in UInt8.random(in: 0...255) }
let digest = (0..<32).map { _ in UInt8.random(in: 0...255) }
for _ in 0..<50 { _ = try trustd.evidence(.native, nonce: nonce, userDataDigest: digest, asAdmin: false) }
var samples: [Double] = []
var documentBytes = 0
let began = monotonicNanoseconds()
for _ in 0..<settings.requests {
    let t0 = monotonicNanoseconds()
    documentBytes = try trustd.evidence(.native, nonce: nonce, userDataDigest: digest, asAdmin: false).document.count
    samples.append(elapsedMicroseconds(since: t0))
}
let elapsed = elapsedMicroseconds(since: began)
let latencies = SortedSamples(samples)
print(
    String(
        format:
            "evidence.issue through keyd (native, 24 PCRs, %d-byte document): p50 %.2f ms, p99 %.2f ms, %.0f/s over %d requests",
        documentBytes,
        latencies.percentile(0.5) / 1000,
        latencies.percentile(0.99) / 1000,
        Double(settings.requests) / elapsed * 1e6,
        settings.requests
    )
)

// KEK unseal at start: import once (sealed), then restart keyd several times.
let admin = try KeydConnection(path: directory + "/admin.sock")
let master = [UInt8](repeating: 0x42, count: 32)
let salt = [UInt8](repeating: 0x24, count: 32)
try master.withUnsafeBytes { m in try salt.withUnsafeBytes { s in try admin.importKEK(masterSecret: m, salt: s) } }
admin.close()
trustd.close()
stop(keyd)
var unseal: [Double] = []
var startup: [Double] = []
for _ in 0..<settings.restarts {
    let t0 = monotonicNanoseconds()
    keyd = try startKeyd()
    startup.append(elapsedMicroseconds(since: t0))
    let report = String(decoding: try KeydConnection(path: directory + "/admin.sock").tpmStatus().report, as: UTF8.self)
    let object = try JSONSerialization.jsonObject(with: Data(report.utf8)) as? [String: Any]
    guard object?["sealedKEK"] as? String == "unsealed", let micros = object?["unsealMicroseconds"] as? Int else {
        fatalError("tpm-bench: keyd did not unseal the KEK: \(report)")
    }
    unseal.append(Double(micros))
    stop(keyd)
}
let unseals = SortedSamples(unseal)
let startups = SortedSamples(startup)
print(
    String(
        format:
            "KEK unseal at keyd start: p50 %.2f ms (min %.2f, max %.2f) over %d restarts; keyd start to ready p50 %.1f ms",
        unseals.median / 1000,
        unseals.minimum / 1000,
        unseals.maximum / 1000,
        settings.restarts,
        startups.median / 1000
    )
)

// Baseline: tpm2_quote with keyd's persistent AK on the same TPM (a process per quote, as an operator runs it).
var quoteSamples: [Double] = []
let selection = "sha256:" + (0..<24).map(String.init).joined(separator: ",")
for index in 0..<settings.quotes {
    let t0 = monotonicNanoseconds()
    let quote = try start(
        "/usr/bin/tpm2_quote",
        [
            "-c", "0x81010a57", "-l", selection, "-q", String(format: "%064x", index), "-m", directory + "/q.msg", "-s",
            directory + "/q.sig",
            "-o", directory + "/q.pcrs", "-g", "sha256",
        ],
        environment: ["TPM2TOOLS_TCTI": tcti],
        output: directory + "/tools.log"
    )
    quote.waitUntilExit()
    guard quote.terminationStatus == 0 else { fatalError("tpm2_quote failed; see \(directory)/tools.log") }
    quoteSamples.append(elapsedMicroseconds(since: t0))
}
let quoteLatencies = SortedSamples(quoteSamples)
let keydP50 = latencies.median
let toolsP50 = quoteLatencies.median
print(
    String(
        format: "tpm2_quote (one process per quote, same TPM and AK): p50 %.2f ms, p99 %.2f ms over %d quotes",
        toolsP50 / 1000,
        quoteLatencies.percentile(0.99) / 1000,
        settings.quotes
    )
)
print(
    String(
        format: "keyd / tpm2_quote p50: %.2f (goal: keyd p50 <= 2 ms: %@)",
        keydP50 / toolsP50,
        verdict(keydP50 <= 2000)
    )
)

// The admin's status while a compromised trustd floods evidence.issue, under keyd's default rate limits
// (only the connection budgets are raised, so that every flooding connection is accepted).
let floodConfig = """
    tpm-tcti = \(tcti)
    trustd-uids = \(geteuid())
    admin-uids = \(geteuid())
    max-connections-per-uid = \(max(settings.floodConnections, 256))
    max-connections = \(max(settings.floodConnections, 1024))
    hello-timeout-ms = 60000

    """
try floodConfig.write(toFile: directory + "/flood.conf", atomically: true, encoding: .utf8)
var limit = rlimit()
getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
limit.rlim_cur = max(limit.rlim_cur, min(limit.rlim_max, rlim_t(settings.floodConnections + 256)))
setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
keyd = try startKeyd("flood")
let floodAdmin = try KeydConnection(path: directory + "/flood-admin.sock")

/// Admin status round trips, one every 10 ms until `deadline`, in microseconds.
@MainActor func adminStatusLatencies(until deadline: UInt64) throws -> [Double] {
    var samples: [Double] = []
    while monotonicNanoseconds() < deadline {
        let t0 = monotonicNanoseconds()
        _ = try floodAdmin.status()
        let micros = elapsedMicroseconds(since: t0)
        samples.append(micros)
        if micros < 10_000 { usleep(useconds_t(10_000 - micros)) }
    }
    return samples
}

let floodNanoseconds = UInt64(settings.floodSeconds * 1e9)
let idleLatencies = SortedSamples(try adminStatusLatencies(until: monotonicNanoseconds() + floodNanoseconds))
let flood = EvidenceFlood(
    path: directory + "/flood.sock",
    connections: settings.floodConnections,
    inFlight: settings.floodInFlight
)
flood.start()
flood.started.wait()
let floodBegan = monotonicNanoseconds()
let floodLatencies = SortedSamples(try adminStatusLatencies(until: floodBegan + floodNanoseconds))
let floodElapsed = elapsedSeconds(from: floodBegan, to: monotonicNanoseconds())
flood.stop()
flood.finished.wait()
let floodReport = String(decoding: try floodAdmin.tpmStatus().report, as: UTF8.self)
let floodStatus = try JSONSerialization.jsonObject(with: Data(floodReport.utf8)) as? [String: Any]
floodAdmin.close()
stop(keyd)
if let failure = flood.failure { fatalError("tpm-bench: flood: \(failure)") }
print(
    String(
        format: "admin status, idle keyd: p50 %.0f µs, p99 %.0f µs, max %.0f µs over %d round trips (one per 10 ms)",
        idleLatencies.median,
        idleLatencies.percentile(0.99),
        idleLatencies.maximum,
        idleLatencies.values.count
    )
)
print(
    String(
        format:
            "admin status, %d trustd connections flooding evidence.issue (%d in flight each): p50 %.0f µs, p99 %.0f µs, max %.0f µs over %d round trips",
        settings.floodConnections,
        settings.floodInFlight,
        floodLatencies.median,
        floodLatencies.percentile(0.99),
        floodLatencies.maximum,
        floodLatencies.values.count
    )
)
print(
    String(
        format:
            "  the flood over %.1f s: %d evidence issued (%.1f/s; keyd counted %d), %d rateLimited (%.0f/s), %d other answers, %d connections closed by keyd",
        floodElapsed,
        flood.issued,
        Double(flood.issued) / floodElapsed,
        floodStatus?["evidenceIssued"] as? Int ?? -1,
        flood.rateLimited,
        Double(flood.rateLimited) / floodElapsed,
        flood.otherStatuses,
        flood.closedByKeyd
    )
)
print(
    String(
        format: "  flood p99 / idle p99: %.1fx (goal: admin status p99 under the flood < 1 s: %@)",
        floodLatencies.percentile(0.99) / idleLatencies.percentile(0.99),
        verdict(floodLatencies.percentile(0.99) < 1_000_000)
    )
)
