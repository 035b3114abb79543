import ATLS
import AsterismTestSupport
import Attestation
import BenchKeyd
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
        raiseOpenFileLimit()
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
            let scene = try BenchScene(settings: settings, keyd: serving, directory: directory)
            try await scene.run()
            await scene.shutdown()
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

/// Everything a run uses besides keyd: the joining nodes and their AKs (allow-listed by keyd's policy),
/// the JoinService's own AK, the server's and the clients' threads (registered for the CPU split).
final class BenchScene {
    let settings: BenchSettings
    let keyd: ServingKeyd
    let directory: String
    let nodes: [BenchNode]
    let serverAK = SoftwareTPMEvidenceIssuer(format: .native)
    let threads = ThreadGroups()
    let tally = TicketTally()
    let serverLoops: MultiThreadedEventLoopGroup
    let clientLoops: MultiThreadedEventLoopGroup
    let serverPool: NIOThreadPool
    let clientPool: NIOThreadPool
    let gateway: KeydGateway
    /// Envelopes kept from every mode, opened at the end.
    var envelopes: [(node: Int, envelope: [UInt8])] = []

    /// Makes the nodes, sets keyd's policy and starts the threads.
    init(settings: BenchSettings, keyd: ServingKeyd, directory: String) throws {
        self.settings = settings
        self.keyd = keyd
        self.directory = directory
        // The joining nodes' AKs (the policy holds 64 at most; node i signs with AK i mod 64).
        let aks = (0..<MeasurementPolicy.maximumAKDigests).map { _ in SoftwareTPMEvidenceIssuer(format: .native) }
        try keyd.serve(issuers: aks)
        let count = max(settings.storm, settings.clients.max() ?? 1, 1)
        nodes = try (0..<count).map { try BenchNode(index: $0, ak: aks[$0 % aks.count]) }
        let threads = self.threads
        serverLoops = registeringThreads("server event loops", in: threads) {
            MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        }
        clientLoops = registeringThreads("client event loops", in: threads) {
            MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        }
        serverPool = registeringThreads("server aTLS pool", in: threads) {
            let pool = NIOThreadPool(numberOfThreads: settings.serverThreads)
            pool.start()
            return pool
        }
        clientPool = registeringThreads("client pool", in: threads) {
            let pool = NIOThreadPool(numberOfThreads: System.coreCount)
            pool.start()
            return pool
        }
        gateway = registeringThreads("keyd gateway pool", in: threads) {
            KeydGateway(socketPath: keyd.trustdSocket, maxConnections: settings.gatewayConnections)
        }
        report(
            "setup: keyd holds the KEK and a signed policy allow-listing \(aks.count) software P-256 AKs"
                + " (\(nodes.count) joining nodes share them); JoinService: \(System.coreCount) event loops,"
                + " \(settings.serverThreads) aTLS pool threads, \(settings.gatewayConnections) keyd gateway"
                + " connections, logging off, its own aTLS evidence from a software AK (keyd's evidence.issue"
                + " allows 4/s per trustd uid: PROTOCOL.md \"Limits\"); clients: \(System.coreCount) event loops,"
                + " \(System.coreCount) pool threads, all connecting from 127.0.0.1"
        )
    }

    /// The in-process JoinService with `handshakesPerSource`.
    func server(handshakesPerSource: Int) -> JoinServer {
        JoinServer(
            keydSocket: keyd.trustdSocket,
            serverAK: serverAK,
            threadPool: serverPool,
            eventLoopGroup: serverLoops,
            gateway: gateway,
            handshakesPerSource: handshakesPerSource,
            tally: tally
        )
    }

    /// A client of the JoinService on `port` that trusts exactly its AK.
    func client(port: Int) -> TicketClient {
        let verifier = ATLSVerifier(validators: [
            NativeTPMDocumentValidator(policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [serverAK.akDigest])))
        ])
        return TicketClient(
            serviceVerifier: verifier,
            port: port,
            threadPool: clientPool,
            eventLoopGroup: clientLoops,
            timeout: .seconds(5)
        )
    }

    /// Every mode: load modes, rejoin and clevis, the storms; then the envelopes opened.
    func run() async throws {
        // Every client connects from 127.0.0.1, so the per-source cap (64) would stand for the global one
        // (1024): raised to the global cap for all modes but the last storm.
        report("JoinService with the aTLS per-source handshake cap raised from 64 to 1024 (the global cap):")
        try await server(handshakesPerSource: 1024).run { port in
            let client = self.client(port: port)
            let (warm, _) = await Modes.load(
                clients: 4,
                nodes: nodes,
                client: client,
                rejoin: false,
                budget: Budget(limit: 40, seconds: 30)
            )
            guard warm.failures.isEmpty else { throw BenchFailure("warm-up tickets failed: \(warm.failures)") }
            report("warm-up: \(warm.latencies.count) tickets, p50 \(ms(SortedSamples(warm.latencies).median))")
            envelopes += warm.envelopes
            for (index, count) in settings.clients.enumerated() { await load(index + 1, clients: count, client) }
            await rejoin(client)
            if settings.storm > 0 { await storm("[storm]", client) }
        }
        if settings.storm > 0 {
            report("JoinService with its default aTLS handshake caps (64 per source, 1024 in all):")
            try await server(handshakesPerSource: 64).run { port in
                await storm("[storm, one source]", self.client(port: port))
            }
        }
        var opened = 0
        for sample in envelopes {
            if let problem = nodes[sample.node].problem(envelope: sample.envelope) {
                throw BenchFailure("an envelope from the JoinService \(problem)")
            }
            opened += 1
        }
        report("envelopes: \(opened) sampled envelopes (one per client and mode) opened with the node's boot key")
    }

    /// Load mode `number`: `clients` concurrent clients, one ticket at a time each.
    func load(_ number: Int, clients: Int, _ client: TicketClient) async {
        let budget = Budget(limit: settings.tickets, seconds: settings.seconds)
        let ((result, elapsed), cpu) = await CPUSplit.measure(threads, keyd: keyd) {
            await Modes.load(clients: clients, nodes: nodes, client: client, rejoin: false, budget: budget)
        }
        envelopes += result.envelopes
        let latencies = SortedSamples(result.latencies)
        let rate = Double(result.latencies.count) / elapsed
        report(
            "[\(number)] \(clients) concurrent client\(clients == 1 ? "" : "s"), a fresh aTLS connection per ticket:"
                + " \(fixed(rate, 0)) tickets/s, p50 \(ms(latencies.median)), p99 \(ms(latencies.percentile(0.99)))"
                + " (max \(ms(latencies.maximum))); \(result.latencies.count) tickets in \(fixed(elapsed, 2)) s,"
                + " \(budget.stoppedBy(countOption: "--tickets")); failed attempts: \(describe(result.failures))"
        )
        report(cpu.lines(tickets: result.latencies.count, seconds: elapsed))
        if clients == 64 {
            report(
                "    goal at 64 clients: ≥ 1,000 tickets/s \(verdict(rate >= 1000)), p99 ≤ 50 ms"
                    + " \(verdict(latencies.percentile(0.99) <= 50))"
            )
        }
    }

    /// Rejoins from one client, then `clevis decrypt` against tangd for the anchor.
    func rejoin(_ client: TicketClient) async {
        let budget = Budget(limit: settings.rejoins, seconds: settings.seconds)
        let (rejoined, _) = await Modes.load(clients: 1, nodes: nodes, client: client, rejoin: true, budget: budget)
        let rejoins = SortedSamples(rejoined.latencies)
        report(
            "[rejoin] one client, IssueRejoinTicket end to end (fresh aTLS connection, keyd key.release):"
                + " p50 \(ms(rejoins.median)), p99 \(ms(rejoins.percentile(0.99))) over \(rejoined.latencies.count)"
                + " rejoins (\(budget.stoppedBy(countOption: "--rejoins"))); failed attempts: \(describe(rejoined.failures));"
                + " goal p50 ≤ 10 ms \(verdict(rejoins.median <= 10))"
        )
        guard settings.clevisRuns > 0 else { return }
        do {
            let clevis = SortedSamples(try TangAnchor.decryptLatencies(runs: settings.clevisRuns, directory: directory))
            report(
                "[rejoin] beside it: clevis decrypt of a Tang-bound secret against tangd on 127.0.0.1 (socat, one"
                    + " tangd per connection), \(clevis.values.count) runs: p50 \(ms(clevis.median)), p99"
                    + " \(ms(clevis.percentile(0.99))); the rejoin's p50 is \(percent(rejoins.median / clevis.median))"
                    + " of clevis's (the issue's anchor: 93–103 ms)"
            )
        } catch {
            report("[rejoin] clevis decrypt anchor not measured: \(error)")
        }
    }

    /// The boot storm: `settings.storm` clients started at once, each retrying until it has its ticket.
    func storm(_ title: String, _ client: TicketClient) async {
        let tallyBefore = tally.snapshot
        let ((clients, elapsed), cpu) = await CPUSplit.measure(threads, keyd: keyd) {
            await Modes.storm(
                nodes: Array(nodes.prefix(settings.storm)),
                client: client,
                backoff: JoinBackoff(initialMilliseconds: 250, maximumMilliseconds: 30_000),
                deadline: .seconds(300)
            )
        }
        let done = SortedSamples(clients.compactMap(\.completed))
        let attempts = clients.map(\.attempts).reduce(0, +)
        var failures: [String: Int] = [:]
        for outcome in clients { failures.merge(outcome.failures, uniquingKeysWith: +) }
        let served = tally.snapshot.merging(tallyBefore) { $0 - $1 }.filter { $0.value != 0 }
        report(
            "\(title) \(settings.storm) joining clients started at once (trustd's default backoff: 250 ms doubling to"
                + " 30 s with jitter, retry-after-ms honoured, 5 s per attempt): \(done.values.count) of"
                + " \(settings.storm) joined in \(fixed(elapsed, 2)) s; per client completion p50 \(ms(done.median)),"
                + " p99 \(ms(done.percentile(0.99))), max \(ms(done.maximum)); \(attempts) attempts ="
                + " \(attempts - done.values.count) retries (\(clients.map(\.hinted).reduce(0, +)) after a retry hint),"
                + " most by one client \(clients.map(\.attempts).max() ?? 0)"
        )
        report("    failed attempts by reason: \(describe(failures))")
        report("    the JoinService's ticket outcomes: \(served)")
        report(cpu.lines(tickets: done.values.count, seconds: elapsed))
        report("    goal: all \(settings.storm) succeed \(verdict(done.values.count == settings.storm))")
    }

    /// Stops the threads.
    func shutdown() async {
        await gateway.shutdown()
        try? await clientPool.shutdownGracefully()
        try? await serverPool.shutdownGracefully()
        try? await clientLoops.shutdownGracefully()
        try? await serverLoops.shutdownGracefully()
    }
}

/// Failures by reason, or "none".
func describe(_ failures: [String: Int]) -> String {
    failures.isEmpty
        ? "none" : failures.sorted { $0.value > $1.value }.map { "\($0.value)× \($0.key)" }.joined(separator: "; ")
}

/// Raises the soft limit of open files to the hard one (the storm holds thousands of sockets).
func raiseOpenFileLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
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

    /// Three lines: CPU per ticket by thread group, keyd's and swtpm's; the machine's share used and
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
            + " off CPU \(percent(1 - (keyd + keydRunQueue) / seconds)) (fsync, the TPM, or idle)\n"
            + "    serving side alone (its event loops, aTLS pool and gateway, keyd, swtpm; its share of \"other\""
            + " left out): \(per(serving)) per ticket, so at most \(fixed(cpus * Double(tickets) / max(serving, 1e-9), 0))"
            + " tickets/s on \(Int(cpus)) CPUs with the clients elsewhere"
    }

    /// CPU seconds of the serving side that are known apart: the JoinService's own threads, keyd and swtpm.
    var serving: Double {
        ["server event loops", "server aTLS pool", "keyd gateway pool"].map { groups[$0] ?? 0 }.reduce(0, +) + keyd
            + swtpm
    }
}
