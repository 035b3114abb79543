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
    ///
    /// Byte strings and numbers are kept as they are and rendered as text only when read, so a
    /// validation that nobody prints does not pay for hex strings.
    public struct Value: Hashable, Sendable, Codable {
        public let name: String
        private let storage: Storage

        private enum Storage: Sendable {
            case text(String)
            /// Rendered as lowercase hex.
            case bytes(ArraySlice<UInt8>)
            /// Rendered as `0x` and lowercase hex.
            case hexNumber(UInt64)
            /// Rendered by its description.
            case described(any CustomStringConvertible & Sendable)
        }

        /// The value as text.
        public var value: String {
            switch storage {
            case .text(let text): text
            case .bytes(let bytes): hexString(bytes)
            case .hexNumber(let number): "0x" + String(number, radix: 16)
            case .described(let value): value.description
            }
        }

        public init(name: String, value: String) {
            self.name = name
            self.storage = .text(value)
        }

        private init(name: String, storage: Storage) {
            self.name = name
            self.storage = storage
        }

        /// A value shown as lowercase hex of `bytes`.
        static func hex(_ name: String, _ bytes: [UInt8]) -> Self { Self(name: name, storage: .bytes(bytes[...])) }
        /// A value shown as lowercase hex of `bytes`.
        static func hex(_ name: String, _ bytes: ArraySlice<UInt8>) -> Self { Self(name: name, storage: .bytes(bytes)) }
        /// A number shown as `0x` and lowercase hex.
        static func hex(_ name: String, _ number: UInt64) -> Self { Self(name: name, storage: .hexNumber(number)) }
        /// A value shown as `text`.
        static func text(_ name: String, _ text: String) -> Self { Self(name: name, storage: .text(text)) }
        /// A value shown as `value.description`, rendered when read.
        static func described(_ name: String, _ value: some CustomStringConvertible & Sendable) -> Self {
            Self(name: name, storage: .described(value))
        }

        public static func == (lhs: Self, rhs: Self) -> Bool {
            guard lhs.name == rhs.name else { return false }
            if case .bytes(let left) = lhs.storage, case .bytes(let right) = rhs.storage { return left == right }
            return lhs.value == rhs.value
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(name)
            hasher.combine(value)
        }

        enum CodingKeys: String, CodingKey { case name, value }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.init(
                name: try container.decode(String.self, forKey: .name),
                value: try container.decode(String.self, forKey: .value)
            )
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(name, forKey: .name)
            try container.encode(value, forKey: .value)
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
        self.init(
            policy: policy,
            outcome: outcome,
            message: message,
            values: values.map { Value(name: $0.0, value: $0.1) }
        )
    }

    public init(policy: String, outcome: Outcome, message: String, values: [Value]) {
        self.policy = policy
        self.outcome = outcome
        self.message = message
        self.values = values
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

    static func passed(_ policy: String, _ message: String, _ values: [Value]) -> Self {
        Self(policy: policy, outcome: .passed, message: message, values: values)
    }

    static func failed(_ policy: String, _ message: String, _ values: [Value]) -> Self {
        Self(policy: policy, outcome: .failed, message: message, values: values)
    }

    static func warned(_ policy: String, _ message: String, _ values: [Value]) -> Self {
        Self(policy: policy, outcome: .warned, message: message, values: values)
    }

    static func notChecked(_ policy: String, _ message: String, _ values: [Value]) -> Self {
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

/// A policy that appends its results to the caller's array, so a validator running many policies
/// builds one array instead of one per policy.
protocol AppendingEvidencePolicy: EvidencePolicy {
    /// Evaluates `evidence`, appending one or more results that name this policy.
    func evaluate(_ evidence: Evidence, context: ValidationContext, into results: inout [PolicyResult])
}

extension AppendingEvidencePolicy {
    func evaluate(_ evidence: Evidence, context: ValidationContext) -> [PolicyResult] {
        var results: [PolicyResult] = []
        evaluate(evidence, context: context, into: &results)
        return results
    }
}
