import BenchSupport
import KeydCore
import KeydProtocol

/// Which releases a mode keeps for the checks after it: every `envelopeEvery`-th envelope of a client
/// (opened with its boot key afterwards) and its first `quotesPerClient` quotes (validated in process).
struct Sampling: Sendable {
    let envelopeEvery: Int
    let quotesPerClient: Int
}

/// A granted release's envelope, kept to be opened with the node's boot key.
struct EnvelopeSample: Sendable {
    let node: Int
    let challengeID: [UInt8]
    let envelope: [UInt8]
}

/// A quote sent to keyd and the claims keyd checked it against, kept for the in-process baseline.
struct QuoteSample: Sendable {
    let node: Int
    let evidence: [UInt8]
    let claims: JoinClaims
}

/// What one client (or one mode, once merged) measured.
struct ModeResult: Sendable {
    /// Releases keyd granted.
    var granted = 0
    /// Refused releases and challenges, by status name (none expected).
    var refusals: [String: Int] = [:]
    /// Microseconds from sending `key.release` to reading its answer: keyd's part of a release.
    var releaseLatencies: [Double] = []
    /// Microseconds from sending `challenge.issue` to reading its answer.
    var challengeLatencies: [Double] = []
    /// Microseconds the client spent making each quote and request (the software AK's signature).
    var signing: [Double] = []
    var envelopes: [EnvelopeSample] = []
    var quotes: [QuoteSample] = []
    /// Why a client stopped early, if one did.
    var failure: String?

    /// Counts a refusal of `kind`.
    mutating func refused(_ kind: RequestKind, _ status: StatusCode) {
        refusals["\(kind) \(status)", default: 0] += 1
    }

    /// Keeps the samples `sampling` asks for from the `granted`-th release of `node`.
    mutating func sample(
        node: Int,
        sampling: Sampling,
        challengeID: [UInt8],
        answer: AnswerFrame,
        quote: QuoteSample?
    ) throws {
        if granted % sampling.envelopeEvery == 0 {
            let release = try answer.decodePayload(.keyRelease, KeyReleaseAnswer.read)
            envelopes.append(EnvelopeSample(node: node, challengeID: challengeID, envelope: release.envelope))
        }
        if let quote, quotes.count < sampling.quotesPerClient { quotes.append(quote) }
    }

    /// This result with `other`'s counts and samples added.
    mutating func merge(_ other: ModeResult) {
        granted += other.granted
        refusals.merge(other.refusals, uniquingKeysWith: +)
        releaseLatencies += other.releaseLatencies
        challengeLatencies += other.challengeLatencies
        signing += other.signing
        envelopes += other.envelopes
        quotes += other.quotes
        failure = failure ?? other.failure
    }
}
