import ArgumentParser
import Attestation
import Foundation
import KeydCore
import TrustdCore

/// `asterism policy from-evidence`: a policy made of what nodes' TPMs quote, so nobody types PCR values.
struct PolicyFromEvidence: ParsableCommand, OutcomeCommand {
    static let configuration = CommandConfiguration(
        commandName: "from-evidence",
        abstract: "Write a measurement policy from the verified evidence of running nodes.",
        discussion: """
            Each node's VerificationService is asked for evidence over a fresh nonce (sealed-v1 binding); the \
            quote must verify under the AK it carries, bind the nonce and the node's boot key, and its event log \
            must replay. The policy allows exactly these AKs and expects the quoted PCR values, which every node \
            must agree on. Exit 0 when written, 1 when evidence is refused or nodes disagree, 2 on a usage or \
            connection error.
            """
    )

    @Option(name: .long, help: "A node's VerificationService, HOST:PORT (repeatable).") var endpoint: [String] = []
    @Option(name: .long, help: "The policy file to create.") var out: String
    @Option(name: .long, help: "The policy's version (1 or more).") var version: UInt64 = 1
    @Option(
        name: .long,
        help: "PCRs to expect: a list like 0,1,4 or all-quoted (default: every quoted PCR but 15, the cluster-ID mark)."
    )
    var pcrs: String?
    @Flag(
        name: .customLong("insecure-trust-any-ak"),
        help: "Write a policy that trusts any AK, unauthenticated (development only)."
    )
    var insecureTrustAnyAK = false
    @Option(name: .long, help: "Seconds to wait for each node.") var timeout = 10
    @Flag(name: .long, help: "Replace --out if it exists.") var force = false
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard !endpoint.isEmpty else { throw ValidationError("give at least one --endpoint") }
        guard (1...300).contains(timeout) else { throw ValidationError("--timeout must be 1…300 seconds") }
        guard (1...UInt64(Int64.max)).contains(version) else { throw ValidationError("--version must be 1 or more") }
        for text in endpoint {
            do throws(NodeAttestationError) {
                _ = try NodeAttestationClient.endpoint(parsing: text)
            } catch {
                throw ValidationError(error.message)
            }
        }
        _ = try PolicyDraft.PCRChoice(parsing: pcrs)
    }

    func outcome() -> Asterism.Outcome {
        let attestations: [NodeAttestation]
        let choice: PolicyDraft.PCRChoice
        do {
            choice = try PolicyDraft.PCRChoice(parsing: pcrs)
            let endpoints = try endpoint.map { (text) throws(NodeAttestationError) in
                try NodeAttestationClient.endpoint(parsing: text)
            }
            let timeout = Duration.seconds(timeout)
            attestations = try Blocking.run {
                try await NodeAttestationClient().fetchAll(endpoints, binding: .sealedV1, timeout: timeout)
            }
        } catch {
            return .failed(error)
        }
        var lines: [String] = []
        var nodes: [PolicyDraft.Node] = []
        for attestation in attestations {
            guard let quoted = attestation.quotedPCRs else {
                let failures = attestation.integrity.failures.map { "\($0.policy): \($0.message)" }
                return .refused(
                    ReportRendering.text(attestation.integrity),
                    reason: "\(attestation.endpoint): evidence refused (\(failures.joined(separator: "; ")))"
                )
            }
            nodes.append(
                PolicyDraft.Node(endpoint: "\(attestation.endpoint)", akDigest: attestation.akDigest, pcrs: quoted)
            )
            lines.append(
                "\(attestation.endpoint)  ak sha256:\(hexString(attestation.akDigest.prefix(8)))…  \(quoted.count) PCRs quoted"
            )
        }
        let policy: MeasurementPolicy
        do {
            policy = try PolicyDraft.policy(
                nodes,
                choice: choice,
                version: version,
                insecureTrustAnyAK: insecureTrustAnyAK
            )
        } catch let refusal as PolicyDraft.Refusal {
            return .refused(lines.joined(separator: "\n") + "\n", reason: refusal.description)
        } catch {
            return .failed(error)
        }
        // The policy must take the very evidence it was made from.
        for attestation in attestations {
            let report = NodeAttestationClient().validate(attestation, against: policy)
            guard report.isValid else {
                return .refused(
                    ReportRendering.text(report),
                    reason: "\(attestation.endpoint): the drafted policy refuses the node's own evidence"
                )
            }
        }
        do {
            try OperatorFiles.create(out, policy.json, mode: 0o644, replacing: force)
        } catch {
            return .failed(error)
        }
        if output.json {
            struct Written: Encodable {
                struct Node: Encodable {
                    let endpoint: String
                    let akDigest: String
                    let quotedPCRs: Int
                }
                let nodes: [Node]
                let out: String
                let version: UInt64
                let digest: String
                let pcrs: [Int]
            }
            let written = Written(
                nodes: nodes.map {
                    Written.Node(endpoint: $0.endpoint, akDigest: hexString($0.akDigest), quotedPCRs: $0.pcrs.count)
                },
                out: out,
                version: policy.version,
                digest: hexString(policy.digest),
                pcrs: policy.measurements.entries.keys.sorted()
            )
            return .printed(ReportRendering.json(encoding: written))
        }
        lines.append(
            "policy version \(policy.version) sha256:\(hexString(policy.digest)) written to \(out): "
                + "\(policy.measurements.entries.count) PCRs, \(policy.allowedAKDigests.count) AKs"
        )
        return .printed(lines.joined(separator: "\n") + "\n")
    }
}

/// A policy drafted from nodes' verified quotes (pure).
enum PolicyDraft {
    /// What one node's verified evidence gave.
    struct Node {
        let endpoint: String
        let akDigest: [UInt8]
        let pcrs: [Int: [UInt8]]
    }

    /// The cluster-ID mark, extended at init: never the same before and after.
    static let clusterIDPCR = 15

    /// Which PCRs the policy expects.
    enum PCRChoice: Equatable {
        /// Every PCR any node quoted except ``PolicyDraft/clusterIDPCR``.
        case quotedButClusterID
        /// Every PCR any node quoted.
        case allQuoted
        /// These.
        case listed([Int])

        /// nil: the default; `all-quoted`; or a comma-separated list of distinct indices 0…23.
        init(parsing text: String?) throws {
            guard let text else {
                self = .quotedButClusterID
                return
            }
            if text == "all-quoted" {
                self = .allQuoted
                return
            }
            var indices: [Int] = []
            for part in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard let index = Int(part), (0...23).contains(index), String(index) == part else {
                    throw ValidationError("--pcrs \"\(part)\" is not a PCR index 0…23 (or give all-quoted)")
                }
                guard !indices.contains(index) else { throw ValidationError("--pcrs names PCR \(index) twice") }
                indices.append(index)
            }
            self = .listed(indices.sorted())
        }
    }

    /// Why the nodes' evidence makes no policy (exit 1).
    struct Refusal: Error, Equatable, CustomStringConvertible {
        let description: String
    }

    /// The PCR values every node agrees on for `choice`; throws a ``Refusal`` naming the PCR and the two
    /// nodes that differ, or the node that did not quote a PCR asked for.
    static func measurements(_ nodes: [Node], choice: PCRChoice) throws(Refusal) -> Measurements {
        let indices: [Int]
        switch choice {
        case .listed(let listed): indices = listed
        case .allQuoted: indices = Set(nodes.flatMap(\.pcrs.keys)).sorted()
        case .quotedButClusterID: indices = Set(nodes.flatMap(\.pcrs.keys)).subtracting([clusterIDPCR]).sorted()
        }
        var entries: [Int: Measurements.Expected] = [:]
        for index in indices {
            var first: (node: Node, value: [UInt8])?
            for node in nodes {
                guard let value = node.pcrs[index] else {
                    throw Refusal(description: "\(node.endpoint) did not quote PCR \(index)")
                }
                if let first, first.value != value {
                    throw Refusal(
                        description:
                            "PCR \(index) differs: \(first.node.endpoint) quotes \(hexString(first.value)), \(node.endpoint) quotes \(hexString(value))"
                    )
                }
                if first == nil { first = (node, value) }
            }
            if let first { entries[index] = Measurements.Expected(value: first.value) }
        }
        return Measurements(entries)
    }

    /// The policy: the agreed PCRs, every node's AK, the native variant; made in code and read back with
    /// keyd's parser, so what is written is what keyd will enforce.
    static func policy(
        _ nodes: [Node],
        choice: PCRChoice,
        version: UInt64,
        insecureTrustAnyAK: Bool
    ) throws -> MeasurementPolicy {
        let made = try MeasurementPolicy(
            version: version,
            measurements: try measurements(nodes, choice: choice),
            allowedAKDigests: Set(nodes.map(\.akDigest)),
            insecureTrustAnyAK: insecureTrustAnyAK,
            evidenceVariants: [.asterismTPM]
        )
        let parsed = try MeasurementPolicy(json: made.json)
        guard parsed == made, parsed.measurements == made.measurements, parsed.allowedAKDigests == made.allowedAKDigests
        else { preconditionFailure("a policy made in code reads back differently") }
        return parsed
    }
}
