import BenchSupport
import Foundation
import KeydClient
import KeydCore
import KeydProtocol
import Synchronization

/// `nodes.count` trustd connections on a thread each, every one doing one release at a time:
/// `challenge.issue`, a quote signed for its nonce, `key.release`, and again until `budget` is spent.
enum ConcurrentClients {
    /// Connects every client, starts them and `budget`'s clock together once all are connected, and
    /// merges what they measured; the seconds from the start until the last client finished.
    static func run(
        socket: String,
        nodes: [JoiningNode],
        budget: Budget,
        sampling: Sampling
    ) -> (
        result: ModeResult, seconds: Double
    ) {
        let connected = DispatchSemaphore(value: 0)
        let start = DispatchSemaphore(value: 0)
        let finished = DispatchGroup()
        let results = Collected()
        for (index, node) in nodes.enumerated() {
            finished.enter()
            Thread {
                defer { finished.leave() }
                var result = ModeResult()
                let connection: KeydConnection
                do {
                    connection = try KeydConnection(path: socket)
                } catch {
                    result.failure = "client \(index): \(error)"
                    results.add(result)
                    connected.signal()
                    return
                }
                connected.signal()
                start.wait()
                do {
                    try releases(connection, node: node, index: index, budget: budget, sampling: sampling, &result)
                } catch {
                    result.failure = "client \(index): \(error)"
                }
                results.add(result)
            }.start()
        }
        for _ in nodes { connected.wait() }
        let began = monotonicNanoseconds()
        budget.start()
        for _ in nodes { start.signal() }
        finished.wait()
        return (results.merged, elapsedSeconds(from: began, to: monotonicNanoseconds()))
    }

    /// What the client threads measured.
    private final class Collected: Sendable {
        private let results = Mutex<ModeResult>(ModeResult())
        func add(_ result: ModeResult) { results.withLock { $0.merge(result) } }
        var merged: ModeResult { results.withLock { $0 } }
    }

    /// One client's loop on `connection` until `budget` is spent.
    private static func releases(
        _ connection: KeydConnection,
        node: JoiningNode,
        index: Int,
        budget: Budget,
        sampling: Sampling,
        _ result: inout ModeResult
    ) throws {
        while budget.claim() {
            let asked = monotonicNanoseconds()
            let challengeAnswer = try connection.roundTrip(.challengeIssue(.join))
            result.challengeLatencies.append(elapsedMicroseconds(since: asked))
            guard challengeAnswer.status == .ok else {
                result.refused(.challengeIssue, challengeAnswer.status)
                continue
            }
            let challenge = try challengeAnswer.decodePayload(.challengeIssue, ChallengeAnswer.read)
            let signingStarted = monotonicNanoseconds()
            let (request, claims) = try node.releaseRequest(for: challenge)
            let sent = monotonicNanoseconds()
            result.signing.append(Double(sent - signingStarted) / 1e3)
            let answer = try connection.roundTrip(.keyRelease(request))
            result.releaseLatencies.append(elapsedMicroseconds(since: sent))
            guard answer.status == .ok else {
                result.refused(.keyRelease, answer.status)
                continue
            }
            try result.sample(
                node: index,
                sampling: sampling,
                challengeID: challenge.challengeID,
                answer: answer,
                quote: QuoteSample(node: index, evidence: request.evidence, claims: claims)
            )
            result.granted += 1
        }
    }
}
