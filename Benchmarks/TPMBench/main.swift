// tpm-bench: evidence latency through keyd's socket beside tpm2_quote on the same software TPM,
// and the time keyd takes to unseal the KEK at start. Starts its own swtpm and keyd.
//
//   tpm-bench [--keyd PATH] [--requests N] [--quotes N] [--restarts N]
import ArgumentParser
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
        abstract: "Evidence latency through keyd beside tpm2_quote on one swtpm; KEK unseal at keyd start."
    )

    @OptionGroup var keyd: KeydBinaryOption
    @Option(help: "Timed evidence requests through keyd.") var requests = 2000
    @Option(help: "Timed tpm2_quote runs (the baseline).") var quotes = 200
    @Option(help: "keyd restarts, each timing the KEK unseal.") var restarts = 5

    func validate() throws {
        for (name, value) in [("--requests", requests), ("--quotes", quotes), ("--restarts", restarts)]
        where !(1...1_000_000).contains(value) {
            throw ValidationError("\(name) \(value) outside 1...1000000")
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
try FileManager.default.createDirectory(atPath: directory + "/swtpm", withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: directory) }
let port = Int.random(in: 20_000...60_000) & ~1
let tcti = "swtpm:host=127.0.0.1,port=\(port)"
let swtpm = try start(
    "/usr/bin/swtpm",
    [
        "socket", "--tpm2", "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1", "--ctrl",
        "type=tcp,port=\(port + 1),bindaddr=127.0.0.1",
        "--tpmstate", "dir=\(directory)/swtpm", "--flags", "not-need-init,startup-clear",
    ],
    output: directory + "/swtpm.log"
)
defer { swtpm.terminate() }
usleep(300_000)
let config = "tpm-tcti = \(tcti)\ntrustd-uids = \(geteuid())\nadmin-uids = \(geteuid())\n"
try config.write(toFile: directory + "/keyd.conf", atomically: true, encoding: .utf8)

/// Starts keyd and waits until its admin socket answers.
@MainActor func startKeyd() throws -> Process {
    let keyd = try start(
        settings.keyd.path,
        [
            "--state-dir", directory + "/state", "--socket", directory + "/keyd.sock", "--admin-socket",
            directory + "/admin.sock",
            "--config", directory + "/keyd.conf",
        ],
        output: directory + "/keyd.log"
    )
    waitFor({ (try? KeydConnection(path: directory + "/admin.sock", timeoutMilliseconds: 500)) != nil }, what: "keyd")
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
