import ArgumentParser
import Attestation
import Crypto
import Foundation
import KeydCore

/// `asterism keygen --out FILE`: the operator's signing key.
struct Keygen: ParsableCommand, OutcomeCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Create the operator's signing key (ECDSA P-256) and print its public key and digest.",
        discussion: """
            The private key is written as PKCS#8 PEM with mode 0600; an existing file is never replaced. \
            The public key (PEM) is what keyd pins at init and what `policy verify --operator-key` takes; \
            the digest is how keyd's status and audit records name it.
            """
    )

    @Option(name: .long, help: "The private key file to create (mode 0600).") var out: String
    @Option(name: .customLong("public-out"), help: "Also write the public key's PEM to this new file.")
    var publicOut: String?
    @OptionGroup var output: OutputOptions

    func outcome() -> Asterism.Outcome {
        let key = P256.Signing.PrivateKey()
        let operatorKey = OperatorKey(key.publicKey)
        let publicPEM = operatorKey.pem.hasSuffix("\n") ? operatorKey.pem : operatorKey.pem + "\n"
        do {
            try OperatorFiles.create(out, Array(key.pemRepresentation.utf8), mode: 0o600)
            if let publicOut {
                do {
                    try OperatorFiles.create(publicOut, Array(publicPEM.utf8), mode: 0o644)
                } catch {
                    throw CLIInput.InputError(description: "\(error) (the private key is in \(out))")
                }
            }
        } catch {
            return .failed(error)
        }
        if output.json {
            return .printed(
                ReportRendering.json(
                    encoding: [
                        "algorithm": operatorKey.algorithm.description, "publicKeyPEM": publicPEM,
                        "digest": hexString(operatorKey.digest),
                    ]
                )
            )
        }
        return .printed(
            "operator key \(operatorKey.algorithm) written to \(out) (mode 0600)\n\(publicPEM)"
                + "digest sha256:\(hexString(operatorKey.digest))\n"
        )
    }
}

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Measurement policies (the JSON keyd enforces) and their operator signatures.",
        subcommands: [PolicySign.self, PolicyVerify.self, PolicyShow.self, PolicyFromEvidence.self, PolicyPush.self]
    )
}

/// Reading policy files: each failure is a usage or parse error (exit 2).
enum PolicyInput {
    /// A bare policy's bytes and the policy they parse to.
    static func policy(_ path: String) throws -> (bytes: [UInt8], policy: MeasurementPolicy) {
        let bytes = try OperatorFiles.contents(of: path, what: "policy", limit: MeasurementPolicy.maximumLength)
        do throws(CoreError) {
            return (bytes, try MeasurementPolicy(json: bytes))
        } catch {
            throw CLIInput.InputError(description: "\(path): \(error.message)")
        }
    }

    /// A signed policy file, decoded (not verified).
    static func signed(_ path: String) throws -> SignedPolicy {
        let bytes = try OperatorFiles.contents(of: path, what: "signed policy", limit: SignedPolicy.maximumLength)
        do throws(CoreError) {
            return try SignedPolicy(decoding: bytes)
        } catch {
            throw CLIInput.InputError(description: "\(path): \(error.message)")
        }
    }

    /// A PEM public operator key.
    static func operatorKey(_ path: String) throws -> OperatorKey {
        let bytes = try OperatorFiles.contents(
            of: path,
            what: "operator public key",
            limit: OperatorFiles.maximumKeyFileLength
        )
        do throws(CoreError) {
            return try OperatorKey(pem: String(decoding: bytes, as: UTF8.self))
        } catch {
            throw CLIInput.InputError(description: "\(path): \(error.message)")
        }
    }
}

/// `asterism policy sign`: the operator key's signature over a policy, in keyd's signed-policy form.
struct PolicySign: ParsableCommand, OutcomeCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Sign a measurement policy with the operator key, in the form keyd accepts.",
        discussion: """
            The policy is checked with keyd's own parser first and signed byte for byte as given. \
            The key file must be readable by its owner only.
            """
    )

    @Option(name: .long, help: "The operator's private key (PEM, mode 0600).") var key: String
    @Option(name: .long, help: "The policy JSON.") var policy: String
    @Option(name: .long, help: "The signed policy file to create.") var out: String
    @Flag(name: .long, help: "Replace --out if it exists.") var force = false

    func outcome() -> Asterism.Outcome {
        do {
            let signingKey = try OperatorFiles.signingKey(key)
            let (bytes, parsed) = try PolicyInput.policy(policy)
            let signature = try signingKey.signature(for: SHA256.hash(data: SignedPolicy.signedMessage(bytes)))
            let signed = SignedPolicy(policy: bytes, signature: Array(signature.derRepresentation))
            let operatorKey = OperatorKey(signingKey.publicKey)
            // What keyd will check, checked here first.
            _ = try signed.verified(by: operatorKey, above: nil)
            guard signed.encoded.count <= SignedPolicy.maximumLength else {
                throw CLIInput.InputError(
                    description:
                        "signed policy of \(signed.encoded.count) bytes exceeds limit \(SignedPolicy.maximumLength)"
                )
            }
            try OperatorFiles.create(out, signed.encoded, mode: 0o644, replacing: force)
            return .printed(
                "policy version \(parsed.version) sha256:\(hexString(parsed.digest)) signed with \(operatorKey)\n"
                    + "written to \(out)\n"
            )
        } catch {
            return .failed(error)
        }
    }
}

/// `asterism policy verify`: what keyd decides when it is sent a signed policy.
struct PolicyVerify: ParsableCommand, OutcomeCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract:
            "Check a signed policy as keyd does: exit 0 when it verifies, 1 when refused, 2 on a usage or parse error.",
        discussion: """
            Checks, in keyd's order: the signature under the operator key, the policy parses, and \
            (with --above) its version is above the version keyd holds.
            """
    )

    @Option(name: .long, help: "The signed policy file.") var signed: String
    @Option(name: .customLong("operator-key"), help: "The operator's public key (PEM).") var operatorKey: String
    @Option(name: .long, help: "The version keyd holds now: the policy's must be higher.") var above: UInt64?
    @OptionGroup var output: OutputOptions

    func outcome() -> Asterism.Outcome {
        let signedPolicy: SignedPolicy
        let key: OperatorKey
        do {
            signedPolicy = try PolicyInput.signed(signed)
            key = try PolicyInput.operatorKey(operatorKey)
        } catch {
            return .failed(error)
        }
        struct Verdict: Encodable {
            let valid: Bool
            let version: UInt64?
            let digest: String
            let operatorKeyDigest: String
            let reason: String?
        }
        do throws(CoreError) {
            let policy = try signedPolicy.verified(by: key, above: above)
            let text =
                "\(signed): VALID policy version \(policy.version) sha256:\(hexString(policy.digest)), signed by \(key)\n"
            let verdict = Verdict(
                valid: true,
                version: policy.version,
                digest: hexString(policy.digest),
                operatorKeyDigest: hexString(key.digest),
                reason: nil
            )
            return .printed(output.json ? ReportRendering.json(encoding: verdict) : text)
        } catch {
            let verdict = Verdict(
                valid: false,
                version: nil,
                digest: hexString(signedPolicy.digest),
                operatorKeyDigest: hexString(key.digest),
                reason: error.message
            )
            return Asterism.Outcome(
                status: Asterism.ExitStatus.refused,
                stdout: output.json
                    ? ReportRendering.json(encoding: verdict) : "\(signed): REFUSED: \(error.message)\n",
                stderr: ""
            )
        }
    }
}

/// `asterism policy show`: a policy or signed policy, readable.
struct PolicyShow: ParsableCommand, OutcomeCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print a policy or a signed policy: version, digest, PCRs, AKs, variants, revocations.",
        discussion: """
            A signed policy's signature is checked only when --operator-key is given (exit 1 when it does \
            not verify); without it the output says it is unverified.
            """
    )

    @Argument(help: "A policy JSON or a signed policy file.") var file: String
    @Option(name: .customLong("operator-key"), help: "Verify a signed policy's signature with this public key (PEM).")
    var operatorKey: String?
    @OptionGroup var output: OutputOptions

    func outcome() -> Asterism.Outcome {
        let summary: PolicySummary
        do {
            let bytes = try OperatorFiles.contents(of: file, what: "policy", limit: SignedPolicy.maximumLength)
            switch Result(catching: { () throws(CoreError) in try SignedPolicy(decoding: bytes) }) {
            case .success(let signed):
                let key = try operatorKey.map(PolicyInput.operatorKey)
                let policy: MeasurementPolicy
                do throws(CoreError) {
                    policy = try MeasurementPolicy(json: signed.policy)
                } catch {
                    throw CLIInput.InputError(description: "\(file): the signed \(error.message)")
                }
                let verified = key.map {
                    $0.verify(signature: signed.signature, message: SignedPolicy.signedMessage(signed.policy))
                }
                summary = PolicySummary(policy, signed: signed, verifiedBy: key, verifies: verified)
            case .failure(let signedError):
                let policy: MeasurementPolicy
                do throws(CoreError) {
                    policy = try MeasurementPolicy(json: bytes)
                } catch {
                    throw CLIInput.InputError(
                        description: "\(file) is neither a \(signedError.message) nor a \(error.message)"
                    )
                }
                guard operatorKey == nil else {
                    throw CLIInput.InputError(
                        description: "\(file) is a bare policy: --operator-key has nothing to verify"
                    )
                }
                summary = PolicySummary(policy, signed: nil, verifiedBy: nil, verifies: nil)
            }
        } catch {
            return .failed(error)
        }
        let text = output.json ? ReportRendering.json(encoding: summary) : summary.text()
        if summary.signatureVerifies == false {
            return .refused(text, reason: "the signature does not verify with the operator key given")
        }
        return .printed(text)
    }
}

/// What `policy show` prints, text or JSON.
struct PolicySummary: Encodable {
    /// A measurement by PCR.
    struct PCR: Encodable {
        let index: Int
        let expected: String
        let warnOnly: Bool
    }

    let kind: String
    let version: UInt64
    let digest: String
    let signatureLength: Int?
    let signatureVerifies: Bool?
    let operatorKeyDigest: String?
    let measurements: [PCR]
    let allowedAKDigests: [String]
    let akCACertificates: Int
    let insecureTrustAnyAK: Bool
    let evidenceVariants: [String]
    let challengeLifetimeSeconds: Int
    let revokedDiskUUIDs: [String]
    let revokedAKDigests: [String]

    init(_ policy: MeasurementPolicy, signed: SignedPolicy?, verifiedBy key: OperatorKey?, verifies: Bool?) {
        kind = signed == nil ? "policy" : "signed-policy"
        version = policy.version
        digest = hexString(policy.digest)
        signatureLength = signed?.signature.count
        signatureVerifies = verifies
        operatorKeyDigest = key.map { hexString($0.digest) }
        measurements = policy.measurements.entries.sorted { $0.key < $1.key }.map {
            PCR(index: $0.key, expected: hexString($0.value.value), warnOnly: $0.value.warnOnly)
        }
        allowedAKDigests = policy.allowedAKDigests.map { hexString($0) }.sorted()
        akCACertificates = policy.akCACertificates.count
        insecureTrustAnyAK = policy.insecureTrustAnyAK
        evidenceVariants = policy.evidenceVariants.map(\.name)
        challengeLifetimeSeconds = policy.challengeLifetimeSeconds
        revokedDiskUUIDs = policy.revokedDiskUUIDs.map(\.text).sorted()
        revokedAKDigests = policy.revokedAKDigests.map { hexString($0) }.sorted()
    }

    func text() -> String {
        var lines = ["policy version \(version)  sha256:\(digest)"]
        if let signatureLength {
            let state: String
            switch signatureVerifies {
            case true?: state = "VERIFIES with operator key sha256:\(operatorKeyDigest ?? "")"
            case false?: state = "DOES NOT VERIFY with operator key sha256:\(operatorKeyDigest ?? "")"
            case nil: state = "unverified (give --operator-key to check it)"
            }
            lines.append("  signature   \(signatureLength) bytes, \(state)")
        }
        lines.append("  variants    \(evidenceVariants.joined(separator: ", "))")
        lines.append("  challenge   \(challengeLifetimeSeconds) s")
        let enforced = measurements.filter { !$0.warnOnly }.count
        lines.append("  PCRs        \(enforced) enforced, \(measurements.count - enforced) warn-only")
        for pcr in measurements {
            lines.append(
                "    \(String(pcr.index).padding(toLength: 3, withPad: " ", startingAt: 0))\(pcr.expected)\(pcr.warnOnly ? "  (warn only)" : "")"
            )
        }
        lines.append("  AKs         \(allowedAKDigests.count) allowed, \(akCACertificates) CA certificates")
        for akDigest in allowedAKDigests { lines.append("    \(akDigest)") }
        if insecureTrustAnyAK { lines.append("  INSECURE    any AK is trusted (insecureTrustAnyAK, development only)") }
        lines.append("  revoked     \(revokedDiskUUIDs.count) disks, \(revokedAKDigests.count) AKs")
        for uuid in revokedDiskUUIDs { lines.append("    disk \(uuid)") }
        for akDigest in revokedAKDigests { lines.append("    ak   \(akDigest)") }
        return lines.joined(separator: "\n") + "\n"
    }
}
