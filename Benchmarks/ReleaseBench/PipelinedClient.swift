import BenchSupport
import Foundation
import KeydClient
import KeydCore
import KeydProtocol
import Synchronization

/// One trustd connection that keeps `inFlight` requests in flight: every challenge answer is turned into
/// a signed `key.release` at once, every release answer into the next `challenge.issue`.
///
/// A second thread only reads answers and stamps them with the time they arrived, so the client's
/// signing does not count as keyd's time. KeydConnection's sending path touches only the socket
/// descriptor and its receiving path only the decoder and buffer: one thread each is safe.
final class PipelinedClient: @unchecked Sendable {
    /// An answer and when it was read (monotonic ns), or why reading stopped.
    private enum Arrival {
        case answer(AnswerFrame, at: UInt64)
        case failed(String)
    }

    /// A request sent and not answered yet.
    private enum Pending {
        case challenge(sentAt: UInt64)
        case release(sentAt: UInt64, challengeID: [UInt8], quote: QuoteSample?)
        /// `status`, sent last: its answer ends the receiving thread.
        case sentinel
    }

    private let connection: KeydConnection
    private let node: JoiningNode
    private let nodeIndex: Int
    private let arrivals = Mutex<[Arrival]>([])
    private let arrived = DispatchSemaphore(value: 0)
    private var pending: [Pending] = []
    private var answered = 0
    private var sequence: UInt32 = 1
    private var result = ModeResult()

    /// Connects to keyd's trustd socket at `socket` as node `nodeIndex`.
    init(socket: String, node: JoiningNode, nodeIndex: Int) throws {
        connection = try KeydConnection(path: socket)
        self.node = node
        self.nodeIndex = nodeIndex
    }

    /// Runs releases until `budget` is spent, then drains the pipeline.
    func run(inFlight: Int, budget: Budget, sampling: Sampling) -> ModeResult {
        let receiver = Thread { [self] in receive() }
        receiver.start()
        do {
            for _ in 0..<inFlight where budget.claim() { try send(.challengeIssue(.join)) { .challenge(sentAt: $0) } }
            var sentinelSent = false
            while true {
                if answered == pending.count, !sentinelSent {
                    try send(.status) { _ in .sentinel }
                    sentinelSent = true
                }
                arrived.wait()
                let batch = arrivals.withLock { arrivals in
                    defer { arrivals.removeAll(keepingCapacity: true) }
                    return arrivals
                }
                for arrival in batch {
                    switch arrival {
                    case .failed(let reason):
                        result.failure = reason
                        return result
                    case .answer(let answer, let at):
                        if try !handle(answer, at: at, budget: budget, sampling: sampling) { return result }
                    }
                }
            }
        } catch {
            result.failure = "\(error)"
            return result
        }
    }

    /// Reads answers until the sentinel's, or until the connection fails.
    private func receive() {
        while true {
            let arrival: Arrival
            do {
                let answer = try connection.receiveAnswer()
                arrival = .answer(answer, at: monotonicNanoseconds())
            } catch {
                arrival = .failed("\(error)")
            }
            arrivals.withLock { $0.append(arrival) }
            arrived.signal()
            if case .answer(let answer, _) = arrival, answer.kind != RequestKind.status.rawValue { continue }
            return
        }
    }

    /// Sends `request` as the next sequence and remembers it as `entry` of its send time.
    private func send(_ request: Request, as entry: (_ sentAt: UInt64) -> Pending) throws {
        let frame = RequestFrame(sequence: sequence, request: request).encodeFrame()
        sequence &+= 1
        pending.append(entry(monotonicNanoseconds()))
        try connection.sendRaw(frame)
    }

    /// Handles the next answer in order; false once the sentinel's answer arrived.
    private func handle(_ answer: AnswerFrame, at: UInt64, budget: Budget, sampling: Sampling) throws -> Bool {
        guard answered < pending.count else { throw BenchFailure("an answer keyd owed nothing for: \(answer.kind)") }
        let entry = pending[answered]
        pending[answered] = .sentinel  // drops the quote sample's bytes
        answered += 1
        // Requests are numbered from 1 (hello was 0) in the order of `pending`.
        guard answer.sequence == UInt32(truncatingIfNeeded: answered) else {
            throw BenchFailure("answer for sequence \(answer.sequence) out of order")
        }
        switch entry {
        case .sentinel:
            return false
        case .challenge(let sentAt):
            result.challengeLatencies.append(Double(at - sentAt) / 1e3)
            guard answer.status == .ok else {
                result.refused(.challengeIssue, answer.status)
                return true
            }
            let challenge = try answer.decodePayload(.challengeIssue, ChallengeAnswer.read)
            let signingStarted = monotonicNanoseconds()
            let (request, claims) = try node.releaseRequest(for: challenge)
            result.signing.append(elapsedMicroseconds(since: signingStarted))
            let quote =
                result.quotes.count < sampling.quotesPerClient
                ? QuoteSample(node: nodeIndex, evidence: request.evidence, claims: claims) : nil
            try send(.keyRelease(request)) { .release(sentAt: $0, challengeID: challenge.challengeID, quote: quote) }
        case .release(let sentAt, let challengeID, let quote):
            result.releaseLatencies.append(Double(at - sentAt) / 1e3)
            if answer.status == .ok {
                try result.sample(
                    node: nodeIndex,
                    sampling: sampling,
                    challengeID: challengeID,
                    answer: answer,
                    quote: quote
                )
                result.granted += 1
            } else {
                result.refused(.keyRelease, answer.status)
            }
            if budget.claim() { try send(.challengeIssue(.join)) { .challenge(sentAt: $0) } }
        }
        return true
    }
}

/// A bench run that cannot go on: what went wrong.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
