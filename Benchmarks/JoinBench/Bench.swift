import ATLS
import AsterismTestSupport
import Attestation
import BenchSupport
import Foundation
import KeydCore
import NIOCore
import NIOPosix
import Trustd
import TrustdCore

#if canImport(Glibc)
import Glibc
#endif

/// What to run, from the command line.
struct BenchSettings: Sendable {
    let keyd: String
    let seconds: Double
    let tickets: Int
    let clients: [Int]
    let rejoins: Int
    let clevisRuns: Int
    let storm: Int
    let serverThreads: Int
    let gatewayConnections: Int
}

/// The run: keyd and swtpm started, the JoinService in process, the modes, the figures; keyd and swtpm
/// stopped whatever happens.
struct JoinBench {
    let settings: BenchSettings

    /// Runs every mode and prints its figures; false when the bench could not finish.
    func run() async -> Bool {
        var template = Array("/tmp/join-bench-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            report("join-bench: mkdtemp: errno \(errno)")
            return false
        }
        let directory = String(cString: made)
        report(
            "join-bench: join tickets through trustd's JoinService (in process) and keyd \(settings.keyd); "
                + "\(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs, load \(loadAverage())"
        )

        var tpm: SoftwareTPM?
        var keyd: ServingKeyd?
        var failed = false
        do {
            tpm = try SoftwareTPM()
            let serving = try ServingKeyd(binary: settings.keyd, directory: directory, tcti: tpm!.tcti)
            keyd = serving
            // The joining nodes' AKs (the policy holds 64 at most; node i signs with AK i mod 64).
            let aks = (0..<MeasurementPolicy.maximumAKDigests).map { _ in SoftwareTPMEvidenceIssuer(format: .native) }
            try serving.serve(issuers: aks)
            let nodeCount = max(settings.storm, settings.clients.max()!, 1)
            let nodes = try (0..<nodeCount).map { try BenchNode(index: $0, ak: aks[$0 % aks.count]) }
            let serverAK = SoftwareTPMEvidenceIssuer(format: .native)
            let threads = ThreadGroups()
            let serverLoops = registeringThreads("server event loops", in: threads) {
                MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
            }
            let clientLoops = registeringThreads("client event loops", in: threads) {
                MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
            }
            let serverPool = registeringThreads("server aTLS pool", in: threads) {
                let pool = NIOThreadPool(numberOfThreads: settings.serverThreads)
                pool.start()
                return pool
            }
            let clientPool = registeringThreads("client pool", in: threads) {
                let pool = NIOThreadPool(numberOfThreads: System.coreCount)
                pool.start()
                return pool
            }
            let gateway = registeringThreads("keyd gateway pool", in: threads) {
                KeydGateway(socketPath: serving.trustdSocket, maxConnections: settings.gatewayConnections)
            }
            let tally = TicketTally()
            let server = JoinServer(
                keydSocket: serving.trustdSocket,
                serverAK: serverAK,
                threadPool: serverPool,
                eventLoopGroup: serverLoops,
                gateway: gateway,
                handshakesPerSource: 1024,
                tally: tally
            )
            report(
                "setup: keyd holds the KEK and a signed policy allow-listing \(aks.count) software P-256 AKs"
                    + " (\(nodes.count) joining nodes share them); JoinService: \(System.coreCount) event loops,"
                    + " \(settings.serverThreads) aTLS pool threads, \(settings.gatewayConnections) keyd gateway connections,"
                    + " its own aTLS evidence from a software AK (keyd's evidence.issue allows 4/s: PROTOCOL.md \"Limits\"),"
                    + " logging off; clients: \(System.coreCount) event loops, \(System.coreCount) pool threads; all clients"
                    + " connect from 127.0.0.1, so the aTLS per-source handshake cap is raised from 64 to 1024 (the global cap)"
            )
            try await server.run { port in
                let verifier = ATLSVerifier(validators: [
                    NativeTPMDocumentValidator(
                        policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [serverAK.akDigest]))
                    )
                ])
                let client = TicketClient(
                    serviceVerifier: verifier,
                    port: port,
                    threadPool: clientPool,
                    eventLoopGroup: clientLoops,
                    timeout: .seconds(5)
                )

                // MARK: Warm-up, then the load modes

                let (warm, _) = await Modes.load(
                    clients: 4,
                    nodes: nodes,
                    client: client,
                    rejoin: false,
                    budget: TicketBudget(limit: 40, seconds: 30)
                )
                guard warm.failures.isEmpty else { throw BenchFailure("warm-up tickets failed: \(warm.failures)") }
                report("warm-up: \(warm.latencies.count) tickets, p50 \(ms(SortedSamples(warm.latencies).median))")

                var envelopes = warm.envelopes
                for (index, count) in settings.clients.enumerated() {
                    let budget = TicketBudget(limit: settings.tickets, seconds: settings.seconds)
                    let ((result, elapsed), cpu) = await CPUSplit.measure(threads, keyd: serving) {
                        await Modes.load(clients: count, nodes: nodes, client: client, rejoin: false, budget: budget)
                    }
                    envelopes += result.envelopes
                    let latencies = SortedSamples(result.latencies)
                    let rate = Double(result.latencies.count) / elapsed
                    report(
                        "[\(index + 1)] \(count) concurrent client\(count == 1 ? "" : "s"), a fresh aTLS connection per ticket:"
                            + " \(fixed(rate, 0)) tickets/s, p50 \(ms(latencies.median)), p99 \(ms(latencies.percentile(0.99)))"
                            + " (max \(ms(latencies.maximum))); \(result.latencies.count) tickets in \(fixed(elapsed, 2)) s,"
                            + " stopped by \(budget.stoppedBy); failed attempts: \(result.failures.isEmpty ? "none" : "\(result.failures)")"
                    )
                    report(cpu.lines(tickets: result.latencies.count, seconds: elapsed))
                    if count == 64 {
                        report(
                            "    goal at 64 clients: ≥ 1,000 tickets/s \(verdict(rate >= 1000)), p99 ≤ 50 ms"
                                + " \(verdict(latencies.percentile(0.99) <= 50))"
                        )
                    }
                }

                // MARK: Rejoin from one client, beside clevis decrypt against tangd

                let rejoinBudget = TicketBudget(limit: settings.rejoins, seconds: settings.seconds)
                let (rejoined, _) = await Modes.load(
                    clients: 1,
                    nodes: nodes,
                    client: client,
                    rejoin: true,
                    budget: rejoinBudget
                )
                let rejoins = SortedSamples(rejoined.latencies)
                report(
                    "[rejoin] one client, IssueRejoinTicket end to end (fresh aTLS connection, keyd key.release):"
                        + " p50 \(ms(rejoins.median)), p99 \(ms(rejoins.percentile(0.99))) over \(rejoined.latencies.count)"
                        + " rejoins (stopped by \(rejoinBudget.stoppedBy)); failed attempts:"
                        + " \(rejoined.failures.isEmpty ? "none" : "\(rejoined.failures)"); goal p50 ≤ 10 ms"
                        + " \(verdict(rejoins.median <= 10))"
                )
                if settings.clevisRuns > 0 {
                    do {
                        let clevis = SortedSamples(
                            try TangAnchor.decryptLatencies(runs: settings.clevisRuns, directory: directory)
                        )
                        report(
                            "[rejoin] beside it: clevis decrypt of a Tang-bound secret against tangd on 127.0.0.1 (socat per"
                                + " connection), \(clevis.values.count) runs: p50 \(ms(clevis.median)), p99"
                                + " \(ms(clevis.percentile(0.99))); the rejoin takes \(fixed(rejoins.median / clevis.median, 3))x"
                                + " its time (the issue's anchor: 93–103 ms)"
                        )
                    } catch {
                        report("[rejoin] clevis decrypt anchor not measured: \(error)")
                    }
                }

                // MARK: Boot storm

                if settings.storm > 0 {
                    let backoff = JoinBackoff(initialMilliseconds: 250, maximumMilliseconds: 30_000)
                    let tallyBefore = tally.snapshot
                    let ((clients, elapsed), cpu) = await CPUSplit.measure(threads, keyd: serving) {
                        await Modes.storm(
                            nodes: Array(nodes.prefix(settings.storm)),
                            client: client,
                            backoff: backoff,
                            deadline: .seconds(300)
                        )
                    }
                    let done = SortedSamples(clients.compactMap(\.completed))
                    let attempts = clients.map(\.attempts).reduce(0, +)
                    var failures: [String: Int] = [:]
                    for outcome in clients { failures.merge(outcome.failures, uniquingKeysWith: +) }
                    let served = tally.snapshot.merging(tallyBefore) { $0 - $1 }.filter { $0.value != 0 }
                    report(
                        "[storm] \(settings.storm) joining clients started at once (trustd's default backoff 250 ms doubling to"
                            + " 30 s with jitter, retry-after-ms honoured, 5 s per attempt): \(done.values.count) of"
                            + " \(settings.storm) joined in \(fixed(elapsed, 2)) s; per client completion p50"
                            + " \(ms(done.median)), p99 \(ms(done.percentile(0.99))), max \(ms(done.maximum));"
                            + " \(attempts) attempts, \(attempts - done.values.count) retries"
                            + " (\(clients.map(\.hinted).reduce(0, +)) with a retry hint)"
                    )
                    report("    failed attempts by reason: \(failures.isEmpty ? "none" : "\(failures)")")
                    report("    the JoinService's outcomes: \(served)")
                    report(cpu.lines(tickets: done.values.count, seconds: elapsed))
                    report("    goal: all \(settings.storm) succeed \(verdict(done.values.count == settings.storm))")
                }

                // MARK: Proof of real releases

                var opened = 0
                for sample in envelopes {
                    if let problem = nodes[sample.node].problem(envelope: sample.envelope) {
                        throw BenchFailure("an envelope from the JoinService \(problem)")
                    }
                    opened += 1
                }
                report(
                    "envelopes: \(opened) sampled envelopes (one per client and mode) opened with the node's boot key"
                )
            }
            await gateway.shutdown()
            try await clientPool.shutdownGracefully()
            try await serverPool.shutdownGracefully()
            try await clientLoops.shutdownGracefully()
            try await serverLoops.shutdownGracefully()
        } catch {
            report("join-bench: \(error)")
            failed = true
        }
        let status = keyd?.stop() ?? 0
        tpm?.stop()
        if let tpm { try? FileManager.default.removeItem(atPath: tpm.stateDirectory) }
        if failed {
            report("join-bench: keyd's log and state stay in \(directory)")
            return false
        }
        report("keyd stopped with status \(status)")
        try? FileManager.default.removeItem(atPath: directory)
        return true
    }
}

/// Prints `line` and flushes it at once.
func report(_ line: String) {
    print(line)
    fflush(nil)
}

func ms(_ value: Double) -> String { fixed(value, value < 10 ? 2 : 1) + " ms" }

/// The thread ids of this process now.
func threadIDsNow() -> Set<Int32> {
    Set(((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []).compactMap { Int32($0) })
}

/// Makes `value` with `make` and registers the threads that appeared meanwhile as group `name`.
func registeringThreads<T>(_ name: String, in groups: ThreadGroups, _ make: () throws -> T) rethrows -> T {
    let before = threadIDsNow()
    let value = try make()
    groups.add(name, threads: threadIDsNow().subtracting(before))
    return value
}

/// CPU seconds per thread group of this process, keyd's and swtpm's around `body`, and how keyd's
/// thread spent the time.
struct CPUSplit {
    let groups: [String: Double]
    let keyd: Double
    let keydRunQueue: Double
    let swtpm: Double

    static func measure<T>(
        _ threads: ThreadGroups,
        keyd: ServingKeyd,
        _ body: () async throws -> T
    ) async rethrows -> (T, CPUSplit) {
        let before = threads.snapshot()
        let keydBefore = keyd.schedule
        let swtpmBefore = childrenCPUSeconds(named: "swtpm")
        let value = try await body()
        let keydAfter = keyd.schedule
        let split = CPUSplit(
            groups: threads.snapshot().merging(before) { $0 - $1 },
            keyd: keydAfter.onCPU - keydBefore.onCPU,
            keydRunQueue: keydAfter.runQueue - keydBefore.runQueue,
            swtpm: childrenCPUSeconds(named: "swtpm") - swtpmBefore
        )
        return (value, split)
    }

    /// Two lines: CPU per ticket by thread group, keyd's and swtpm's; the machine's share used and
    /// how keyd's thread spent the run.
    func lines(tickets: Int, seconds: Double) -> String {
        let per = { (value: Double) in fixed(value * 1000 / Double(max(tickets, 1)), 2) + " ms" }
        let order = [
            "server event loops", "server aTLS pool", "keyd gateway pool", "client event loops", "client pool",
            "other",
        ]
        let parts = order.map { "\($0) \(per(groups[$0] ?? 0))" }.joined(separator: ", ")
        let process = groups["process"] ?? 0
        let cpus = Double(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        return
            "    CPU per ticket: bench process \(per(process)) (\(parts); \"other\": Swift tasks of both sides, main);"
            + " keyd \(per(keyd)); swtpm \(per(swtpm))\n"
            + "    all three used \(percent((process + keyd + swtpm) / seconds / cpus)) of the machine's \(Int(cpus)) CPUs;"
            + " keyd's thread: on CPU \(percent(keyd / seconds)), waiting for a CPU \(percent(keydRunQueue / seconds)),"
            + " off CPU \(percent(1 - (keyd + keydRunQueue) / seconds)) (fsync, the TPM, or idle)"
    }
}
