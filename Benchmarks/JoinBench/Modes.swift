import BenchSupport
import GRPCCore
import TrustdCore

/// What a mode's clients measured.
struct LoadResult: Sendable {
    /// Milliseconds per granted ticket, end to end (new connection, handshake, call, answer).
    var latencies: [Double] = []
    /// Failed attempts by their error's text (none expected outside the storm).
    var failures: [String: Int] = [:]
    /// One envelope per client (its first), with the client's node index, to open afterwards.
    var envelopes: [(node: Int, envelope: [UInt8])] = []

    mutating func merge(_ other: LoadResult) {
        latencies += other.latencies
        failures.merge(other.failures, uniquingKeysWith: +)
        envelopes += other.envelopes
    }
}

/// A failed attempt's short description: a gRPC status and message, or the error.
func failureText(_ error: any Error) -> String {
    if let error = error as? RPCError { return "\(error.code): \(error.message)" }
    return "\(error)".prefix(160).description
}

enum Modes {
    /// `clients` concurrent clients, each one ticket at a time (node `index` for client `index`) until
    /// `budget` is spent; what they measured and the seconds from the start to the last answer.
    static func load(
        clients: Int,
        nodes: [BenchNode],
        client: TicketClient,
        rejoin: Bool,
        budget: Budget
    ) async -> (LoadResult, Double) {
        let began = monotonicNanoseconds()
        budget.start()
        let result = await withTaskGroup(of: LoadResult.self) { group in
            for index in 0..<clients {
                group.addTask {
                    var result = LoadResult()
                    let node = nodes[index % nodes.count]
                    while budget.claim() {
                        let started = monotonicNanoseconds()
                        do {
                            let envelope = try await client.ticket(node, rejoin: rejoin)
                            result.latencies.append(elapsedMilliseconds(since: started))
                            if result.envelopes.isEmpty { result.envelopes.append((index % nodes.count, envelope)) }
                        } catch {
                            result.failures[failureText(error), default: 0] += 1
                        }
                    }
                    return result
                }
            }
            var merged = LoadResult()
            for await result in group { merged.merge(result) }
            return merged
        }
        return (result, elapsedSeconds(from: began, to: monotonicNanoseconds()))
    }

    /// One storm client's outcome.
    struct StormClient: Sendable {
        /// Milliseconds from the storm's start to its ticket; nil when it gave up.
        var completed: Double?
        var attempts = 0
        /// Failed attempts by their error's text.
        var failures: [String: Int] = [:]
        /// Attempts that failed with a server retry hint (`retry-after-ms`).
        var hinted = 0
    }

    /// `nodes.count` clients started at once, each retrying as the join client does (the backoff
    /// with jitter, the server's `retry-after-ms` honoured) until it has its ticket or `deadline` passed.
    static func storm(
        nodes: [BenchNode],
        client: TicketClient,
        backoff: JoinBackoff,
        deadline: Duration
    ) async -> ([StormClient], Double) {
        let began = monotonicNanoseconds()
        let clients = await withTaskGroup(of: StormClient.self) { group in
            for node in nodes {
                group.addTask {
                    var outcome = StormClient()
                    let clock = ContinuousClock()
                    let end = clock.now + deadline
                    while clock.now < end {
                        outcome.attempts += 1
                        var hint: Int?
                        do {
                            _ = try await client.ticket(node, rejoin: false)
                            outcome.completed = elapsedMilliseconds(since: began)
                            return outcome
                        } catch let error as RPCError {
                            outcome.failures[failureText(error), default: 0] += 1
                            hint = error.metadata[stringValues: "retry-after-ms"].first(where: { _ in true })
                                .flatMap { Int($0) }
                            if hint != nil { outcome.hinted += 1 }
                        } catch {
                            outcome.failures[failureText(error), default: 0] += 1
                        }
                        let pause = backoff.pauseMilliseconds(
                            afterAttempt: outcome.attempts,
                            hintMilliseconds: hint,
                            random: Double.random(in: 0..<1)
                        )
                        guard clock.now + .milliseconds(pause) < end else { break }
                        try? await Task.sleep(for: .milliseconds(pause))
                    }
                    return outcome
                }
            }
            var all: [StormClient] = []
            for await outcome in group { all.append(outcome) }
            return all
        }
        return (clients, elapsedSeconds(from: began, to: monotonicNanoseconds()))
    }
}
