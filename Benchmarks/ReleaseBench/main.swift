import ArgumentParser
import AsterismTestSupport
import Attestation
// release-bench: key releases per second through keyd's trustd socket (issue 14). The serving keyd
// (release build, on its own swtpm) holds a KEK and a policy signed by an Ed25519 operator key that
// allow-lists the bench's software P-256 AKs. Every release is a fresh challenge.issue, a fresh quote
// signed by the client for its nonce (timed apart, as the client's part), then key.release, audited
// and fsync'd by keyd's group commit before its answer. Two modes: one client pipelining on one
// connection, and --clients concurrent clients one release at a time. Beside them, in the same run:
// what one commit costs at least (append+fsync, TPM counter), the bare validation rate of the same
// quotes (KeyRelease.decide in process, the same policy), keyd's RSS idle and after the releases, and
// a sample of envelopes opened with the clients' boot keys.
//
//   release-bench [--keyd PATH] [--releases N] [--seconds S] [--in-flight N] [--clients N]
//                 [--validation-sample N]
import BenchKeyd
import BenchSupport
import Crypto
import Foundation
import KeydClient
import KeydCore
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release-bench",
        abstract: "Key releases per second through keyd (pipelined and concurrent) beside in-process validation."
    )

    @OptionGroup var keyd: KeydBinaryOption
    @Option(help: ArgumentHelp("Releases per mode at most; a mode also stops at --seconds.", valueName: "n"))
    var releases = 100_000
    @OptionGroup var duration: SecondsOption
    @Option(help: ArgumentHelp("Requests the pipelining client keeps in flight.", valueName: "n"))
    var inFlight = 64
    @Option(help: ArgumentHelp("Concurrent clients, one release at a time each (1...64).", valueName: "n"))
    var clients = 16
    @Option(help: ArgumentHelp("Quotes of each mode validated again in process.", valueName: "n"))
    var validationSample = 1000

    func validate() throws {
        guard (1...10_000_000).contains(releases) else {
            throw ValidationError("--releases \(releases) outside 1...10000000")
        }
        guard (1...1024).contains(inFlight) else { throw ValidationError("--in-flight \(inFlight) outside 1...1024") }
        // Every client's AK is on the policy's allow-list, which holds 64 at most.
        guard (1...MeasurementPolicy.maximumAKDigests).contains(clients) else {
            throw ValidationError("--clients \(clients) outside 1...\(MeasurementPolicy.maximumAKDigests)")
        }
        guard (1...100_000).contains(validationSample) else {
            throw ValidationError("--validation-sample \(validationSample) outside 1...100000")
        }
    }
}

/// What one mode measured, with keyd's side of it.
struct ModeFigures {
    let name: String
    let result: ModeResult
    let seconds: Double
    let stoppedBy: String
    /// Seconds keyd ran on a CPU, and waited on a run queue for one, during the mode.
    let keydOnCPU: Double
    let keydRunQueue: Double
    let benchCPUSeconds: Double
    let auditRecords: UInt64
    let releaseRecords: Int
    let commits: Int
    let rssAfter: Int

    var perSecond: Double { Double(result.granted) / seconds }
    var latencies: SortedSamples { SortedSamples(result.releaseLatencies) }
}

/// What the bench started: stopped by ``fail(_:)`` too, so that no keyd or swtpm outlives the bench.
var started: (tpm: SoftwareTPM?, keyd: ServingKeyd?) = (nil, nil)

/// Stops keyd and swtpm and the bench with `message` (keyd's log stays in the scratch directory).
@MainActor func fail(_ message: String) -> Never {
    _ = started.keyd?.stop()
    if let tpm = started.tpm {
        tpm.stop()
        try? FileManager.default.removeItem(atPath: tpm.stateDirectory)
    }
    print("release-bench: \(message)")
    exit(1)
}

/// Prints `line` and flushes it at once (the figures of a long run appear as they are measured).
func report(_ line: String) {
    print(line)
    fflush(nil)
}

func mebibytes(_ kibibytes: Int) -> String { fixed(Double(kibibytes) / 1024, 1) + " MiB" }

func milliseconds(_ microseconds: Double) -> String { fixed(microseconds / 1000, 2) + " ms" }

/// Runs one mode (`body` starts the budget's clock and returns what it measured and its seconds) with
/// keyd's CPU, audit records and commits counted around it.
@MainActor func mode(
    _ name: String,
    on keyd: ServingKeyd,
    _ body: (Budget) throws -> (ModeResult, Double)
) throws -> ModeFigures {
    let budget = Budget(limit: options.releases, seconds: seconds)
    let recordsBefore = try keyd.status().auditRecords
    let tallyBefore = keyd.auditTally()
    let keydSchedule = keyd.schedule
    let benchCPU = benchCPUSeconds()
    let (result, elapsed) = try body(budget)
    let keydScheduleAfter = keyd.schedule
    let benchCPUAfter = benchCPUSeconds()
    if let failure = result.failure { throw BenchFailure("\(name): \(failure)") }
    let recordsAfter = try keyd.status().auditRecords
    let tally = keyd.auditTally()
    return ModeFigures(
        name: name,
        result: result,
        seconds: elapsed,
        stoppedBy: budget.stoppedBy(countOption: "--releases"),
        keydOnCPU: keydScheduleAfter.onCPU - keydSchedule.onCPU,
        keydRunQueue: keydScheduleAfter.runQueue - keydSchedule.runQueue,
        benchCPUSeconds: benchCPUAfter - benchCPU,
        auditRecords: recordsAfter - recordsBefore,
        releaseRecords: tally.releases - tallyBefore.releases,
        commits: tally.commits - tallyBefore.commits,
        rssAfter: keyd.memory.rss
    )
}

/// Prints what mode `index` (1-based) measured, as soon as it ended.
@MainActor func reportMode(_ index: Int, _ figures: ModeFigures) {
    let result = figures.result
    let latencies = figures.latencies
    let signing = SortedSamples(result.signing)
    let challenges = SortedSamples(result.challengeLatencies)
    report("[\(index)] \(figures.name): \(figures.stoppedBy)")
    report(
        "    \(result.granted) releases in \(fixed(figures.seconds, 1)) s = \(fixed(figures.perSecond, 0))/s"
            + (result.refusals.isEmpty
                ? "" : "; REFUSED: \(result.refusals.map { "\($0.key) \($0.value)" }.sorted().joined(separator: ", "))")
    )
    report(
        "    key.release, sent to answered (keyd's part, queueing included): p50 \(milliseconds(latencies.median)),"
            + " p99 \(milliseconds(latencies.percentile(0.99))), max \(milliseconds(latencies.maximum));"
            + " challenge.issue p50 \(milliseconds(challenges.median)), p99 \(milliseconds(challenges.percentile(0.99)))"
    )
    report(
        "    client: quote made and signed p50 \(fixed(signing.median, 0)) µs, p99 \(fixed(signing.percentile(0.99), 0)) µs;"
            + " bench CPU \(fixed(figures.benchCPUSeconds / Double(max(result.granted, 1)) * 1e6, 0)) µs per release"
    )
    let cpuPerRelease = figures.keydOnCPU / Double(max(result.granted, 1))
    let releasesPerCommit = Double(figures.releaseRecords) / Double(max(figures.commits, 1))
    report(
        "    keyd: on CPU \(fixed(cpuPerRelease * 1e6, 0)) µs per release (one core's ceiling"
            + " \(fixed(1 / cpuPerRelease, 0))/s); of the run on CPU \(percent(figures.keydOnCPU / figures.seconds)),"
            + " waiting for a CPU \(percent(figures.keydRunQueue / figures.seconds)),"
            + " off CPU \(percent(1 - (figures.keydOnCPU + figures.keydRunQueue) / figures.seconds))"
            + " (in fsync, at the TPM, or idle in poll)"
    )
    report(
        "    audit: \(figures.releaseRecords) key.release records (\(figures.auditRecords) records in all)"
            + " in \(figures.commits) commits = \(fixed(releasesPerCommit, 1)) releases per fsync and TPM count;"
            + " a group's releases take \(milliseconds(releasesPerCommit * cpuPerRelease * 1e6)) of keyd's CPU,"
            + " and their answers wait for the group's commit"
    )
    report(
        "    goals: ≥ 2,000 releases/s \(verdict(figures.perSecond >= 2000)); key.release p99 ≤ 5 ms"
            + " \(verdict(latencies.percentile(0.99) <= 5000))"
    )
    report("    keyd RSS after it: \(mebibytes(figures.rssAfter))")
}

/// Runs `body` over `quotes` again and again for about `seconds`; per second.
@MainActor func rate(_ quotes: [QuoteSample], seconds: Double, _ body: (QuoteSample) throws -> Void) rethrows -> Double
{
    var count = 0
    let began = monotonicNanoseconds()
    repeat {
        for quote in quotes { try body(quote) }
        count += quotes.count
    } while elapsedSeconds(from: began, to: monotonicNanoseconds()) < seconds
    return Double(count) / elapsedSeconds(from: began, to: monotonicNanoseconds())
}

let options = Options.parseOrExit()
let seconds = options.duration.seconds(default: 60)
var template = Array("/tmp/release-bench-XXXXXX".utf8CString)
guard let made = mkdtemp(&template) else { fail("mkdtemp: errno \(errno)") }
let directory = String(cString: made)
report(
    "release-bench: key releases through keyd's trustd socket (keyd \(options.keyd.path)); "
        + "\(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs, load \(loadAverage())"
)

do {
    // MARK: What one group commit does: an fsync, then a TPM counter increment

    let tpm = try SoftwareTPM()
    started.tpm = tpm
    let fsyncs = try CommitFloor.fsyncLatencies(directory: directory, count: 200)
    let counts = try CommitFloor.counterLatencies(tcti: tpm.tcti, count: 200)
    report(
        "one audit commit's parts, timed before keyd starts: append+fsync of a 450-byte line in \(directory) p50 \(milliseconds(fsyncs.median))"
            + " (p99 \(milliseconds(fsyncs.percentile(0.99)))); TPM NV counter increment on swtpm p50"
            + " \(milliseconds(counts.median)) (p99 \(milliseconds(counts.percentile(0.99)))); one commit (both) ≈"
            + " \(milliseconds(fsyncs.median + counts.median))"
    )

    // MARK: The serving keyd: operator key pinned, KEK imported, signed policy set

    let keyd = try ServingKeyd(binary: options.keyd.path, directory: directory, tcti: tpm.tcti)
    started.keyd = keyd
    let startRSS = keyd.memory.rss
    let admin = try KeydConnection(path: keyd.adminSocket)
    let operatorKey = Curve25519.Signing.PrivateKey()
    let pinnedKey = OperatorKey(operatorKey.publicKey)
    _ = try admin.call(.operatorKeyPin(operatorKey: pinnedKey.encoded))
    let masterSecret = (0..<32).map { _ in UInt8.random(in: 0...255) }
    let salt = (0..<32).map { _ in UInt8.random(in: 0...255) }
    try masterSecret.withUnsafeBytes { secret in
        try salt.withUnsafeBytes { salt in try admin.importKEK(masterSecret: secret, salt: salt) }
    }
    let nodes = try (0..<options.clients).map { try JoiningNode(index: $0) }
    let enforcedPCRs = [4, 8, 9, 11, 12, 13]
    let draft = try MeasurementPolicy(
        version: 1,
        measurements: Measurements(
            Dictionary(
                uniqueKeysWithValues: enforcedPCRs.map { ($0, Measurements.Expected(value: nodes[0].issuer.pcrs[$0]!)) }
            )
        ),
        allowedAKDigests: Set(nodes.map(\.issuer.akDigest))
    )
    let signedPolicy = SignedPolicy(
        policy: draft.json,
        signature: Array(try operatorKey.signature(for: SignedPolicy.signedMessage(draft.json)))
    )
    _ = try admin.call(.policySet(signedPolicy: signedPolicy.encoded))
    // The policy exactly as keyd holds it: the signed bytes, verified and parsed.
    let policy = try signedPolicy.verified(by: pinnedKey, above: nil)
    admin.close()
    let ready = try keyd.status()
    guard ready.phase == .holdingKEK, ready.policyVersion == 1, ready.policyDigest == signedPolicy.digest else {
        throw BenchFailure("keyd is not serving releases: phase \(ready.phase), policy version \(ready.policyVersion)")
    }
    let idle = keyd.memory
    report(
        "keyd: RSS \(mebibytes(startRSS)) at start, \(mebibytes(idle.rss)) idle holding the KEK and the signed policy"
            + " (version 1: PCRs \(enforcedPCRs.map(String.init).joined(separator: ",")) enforced, \(nodes.count) P-256 AKs allowed)"
    )

    // MARK: The two modes

    let envelopeEvery = max(1, options.releases / 100)
    let pipelined = try mode("1 client pipelining, \(options.inFlight) requests in flight on one connection", on: keyd)
    {
        budget in
        let client = try PipelinedClient(socket: keyd.trustdSocket, node: nodes[0], nodeIndex: 0)
        let began = monotonicNanoseconds()
        budget.start()
        let sampling = Sampling(envelopeEvery: envelopeEvery, quotesPerClient: options.validationSample)
        let result = client.run(inFlight: options.inFlight, budget: budget, sampling: sampling)
        return (result, elapsedSeconds(from: began, to: monotonicNanoseconds()))
    }
    reportMode(1, pipelined)
    let concurrent = try mode("\(nodes.count) concurrent clients, one release at a time each", on: keyd) { budget in
        let sampling = Sampling(
            envelopeEvery: envelopeEvery,
            quotesPerClient: max(1, options.validationSample / nodes.count)
        )
        return ConcurrentClients.run(socket: keyd.trustdSocket, nodes: nodes, budget: budget, sampling: sampling)
    }
    reportMode(2, concurrent)
    let modes = [pipelined, concurrent]

    // MARK: Proof of real releases: sampled envelopes opened with the clients' boot keys

    var opened = 0
    for sample in modes.flatMap(\.result.envelopes) {
        if let problem = nodes[sample.node].problem(
            envelope: sample.envelope,
            challengeID: sample.challengeID,
            masterSecret: masterSecret,
            salt: salt
        ) {
            throw BenchFailure("an envelope from keyd \(problem)")
        }
        opened += 1
    }

    // MARK: In process, the same quotes and policy

    let quotes = modes.flatMap(\.result.quotes)
    let kek = try KeyEncryptionKey(masterSecret: SecretBytes(copying: masterSecret), salt: SecretBytes(copying: salt))
    let bareValidation = try rate(quotes, seconds: 3) { quote in
        guard
            case .granted = KeyRelease.decide(
                evidence: quote.evidence,
                claims: quote.claims,
                policy: policy,
                at: Date()
            )
        else { throw BenchFailure("a quote keyd granted is refused in process") }
    }
    let validationAndSeal = try rate(quotes, seconds: 3) { quote in
        guard
            case .granted = KeyRelease.decide(
                evidence: quote.evidence,
                claims: quote.claims,
                policy: policy,
                at: Date()
            )
        else { throw BenchFailure("a quote keyd granted is refused in process") }
        let binding = try EnvelopeBinding(
            purpose: .join,
            challengeID: [UInt8](repeating: 7, count: 16),
            diskUUID: quote.claims.diskUUID,
            role: .worker,
            nodeName: quote.claims.nodeName
        )
        _ = try KeyEnvelope.seal(
            kek.releasedKeys(for: quote.claims.diskUUID, includeKEK: false),
            binding: binding,
            to: quote.claims.bootPublicKey
        )
    }
    let after = keyd.memory
    let exitStatus = keyd.stop()

    // MARK: Figures

    report(
        "in process, one thread, the \(quotes.count) quotes sampled from both modes, the same policy:"
            + " KeyRelease.decide \(fixed(bareValidation, 0))/s (\(fixed(1e6 / bareValidation, 0)) µs);"
            + " decide + HKDF + HPKE seal \(fixed(validationAndSeal, 0))/s (\(fixed(1e6 / validationAndSeal, 0)) µs)"
    )
    for (index, figures) in modes.enumerated() {
        report(
            "[\(index + 1)] beside the bare validation: \(fixed(figures.perSecond / bareValidation, 2))x its rate"
                + " (\(fixed(bareValidation / figures.perSecond, 1))x the time per release)"
        )
    }
    report(
        "keyd RSS: \(mebibytes(idle.rss)) idle, \(mebibytes(pipelined.rssAfter)) after \(pipelined.result.granted) releases,"
            + " \(mebibytes(concurrent.rssAfter)) after \(pipelined.result.granted + concurrent.result.granted),"
            + " \(mebibytes(after.rss)) after the in-process baseline; peak \(mebibytes(after.peak));"
            + " keyd stopped with status \(exitStatus)"
    )
    report(
        "envelopes: \(opened) sampled envelopes opened with the client's boot key, binding and disk key"
            + " (HKDF of the imported KEK) checked"
    )
    tpm.stop()
    try? FileManager.default.removeItem(atPath: tpm.stateDirectory)
    try? FileManager.default.removeItem(atPath: directory)
} catch {
    fail("\(error)")
}
