import FoundationEssentials

/// How one policy judged one aspect of the evidence.
public struct PolicyResult: Hashable, Sendable, Codable {
    /// The verdict of a policy.
    public enum Outcome: String, Hashable, Sendable, Codable {
        /// The check held.
        case passed
        /// The check failed; the evidence is refused.
        case failed
        /// The check failed where the policy only warns (for example a warn-only PCR).
        case warned
        /// The policy was not asked to check this (for example no nonce was given).
        case notChecked
    }

    /// A named value involved in the decision (expected, actual, index...).
    public struct Value: Hashable, Sendable, Codable {
        public let name: String
        public let value: String

        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The policy's stable name, such as `tpm.quote.signature`.
    public let policy: String
    /// The verdict.
    public let outcome: Outcome
    /// One sentence saying what was checked or what failed.
    public let message: String
    /// The values behind the verdict, in a stable order.
    public let values: [Value]

    public init(policy: String, outcome: Outcome, message: String, values: [(String, String)] = []) {
        self.policy = policy
        self.outcome = outcome
        self.message = message
        self.values = values.map { Value(name: $0.0, value: $0.1) }
    }

    static func passed(_ policy: String, _ message: String, _ values: [(String, String)] = []) -> Self {
        Self(policy: policy, outcome: .passed, message: message, values: values)
    }

    static func failed(_ policy: String, _ message: String, _ values: [(String, String)] = []) -> Self {
        Self(policy: policy, outcome: .failed, message: message, values: values)
    }

    static func warned(_ policy: String, _ message: String, _ values: [(String, String)] = []) -> Self {
        Self(policy: policy, outcome: .warned, message: message, values: values)
    }

    static func notChecked(_ policy: String, _ message: String, _ values: [(String, String)] = []) -> Self {
        Self(policy: policy, outcome: .notChecked, message: message, values: values)
    }
}

/// The structured outcome of validating one piece of evidence: every policy's result, in order.
public struct AttestationReport: Hashable, Sendable, Codable {
    /// What was validated: `tpm-quote`, `native-tpm-document`, `constellation-qemu-vtpm`, `sev-snp`.
    public let evidence: String
    /// Every policy's result, in the order they ran.
    public private(set) var results: [PolicyResult]
    /// Facts an operator must see beside the verdict, such as an insecure trust mode that was used.
    public private(set) var notes: [String]

    public init(evidence: String, results: [PolicyResult] = [], notes: [String] = []) {
        self.evidence = evidence
        self.results = results
        self.notes = notes
    }

    /// True when no policy failed.
    public var isValid: Bool { !results.contains { $0.outcome == .failed } }
    /// The failed results.
    public var failures: [PolicyResult] { results.filter { $0.outcome == .failed } }
    /// The warn-only results.
    public var warnings: [PolicyResult] { results.filter { $0.outcome == .warned } }

    /// The result of the named policy, if it ran.
    public func result(of policy: String) -> PolicyResult? { results.first { $0.policy == policy } }

    mutating func append(_ result: PolicyResult) { results.append(result) }
    mutating func append(contentsOf more: [PolicyResult]) { results.append(contentsOf: more) }
    mutating func note(_ text: String) { if !notes.contains(text) { notes.append(text) } }
    mutating func merge(_ other: AttestationReport) {
        results.append(contentsOf: other.results)
        for text in other.notes { note(text) }
    }

    enum CodingKeys: String, CodingKey { case evidence, valid, results, notes }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        evidence = try container.decode(String.self, forKey: .evidence)
        results = try container.decode([PolicyResult].self, forKey: .results)
        notes = try container.decode([String].self, forKey: .notes)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(evidence, forKey: .evidence)
        try container.encode(isValid, forKey: .valid)
        try container.encode(results, forKey: .results)
        try container.encode(notes, forKey: .notes)
    }
}

/// What every policy is given besides the evidence: the validation time. Trust roots live in the
/// policies themselves, passed in by the caller, as in swift-certificates' `VerifierPolicy`.
public struct ValidationContext: Sendable {
    /// The time at which certificates must be valid.
    public var time: Date

    public init(time: Date) { self.time = time }
}

/// One pure check of evidence of type `Evidence`; it never performs I/O and never throws.
public protocol EvidencePolicy<Evidence>: Sendable {
    associatedtype Evidence
    /// Evaluates `evidence`, returning one or more results that name this policy.
    func evaluate(_ evidence: Evidence, context: ValidationContext) -> [PolicyResult]
}

/// Policies run in order; all of them run, so a report lists every problem at once.
public struct PolicySet<Evidence>: Sendable {
    /// The policies, in evaluation order.
    public var policies: [any EvidencePolicy<Evidence>]

    public init(_ policies: [any EvidencePolicy<Evidence>]) { self.policies = policies }

    /// Runs every policy against `evidence`.
    public func evaluate(_ evidence: Evidence, context: ValidationContext) -> [PolicyResult] {
        policies.flatMap { $0.evaluate(evidence, context: context) }
    }
}
