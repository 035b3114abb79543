import AsterismTestSupport
import Attestation
import Crypto
import Foundation
import KeydCore
import KeydProtocol
import Testing

/// The release decision against a software AK (AsterismTestSupport's issuer): one row per attack or outcome.
@Suite struct KeyReleaseTests {
    static let issuer = SoftwareTPMEvidenceIssuer(format: .native)
    static let stranger = SoftwareTPMEvidenceIssuer(format: .native)
    static let uuid = try! DiskUUID(validating: "0f0e0d0c-0b0a-4988-8776-655443322110")
    static let otherUUID = try! DiskUUID(validating: "0f0e0d0c-0b0a-4988-8776-655443322111")

    static func claims(
        nonce: [UInt8] = [UInt8](repeating: 1, count: 32),
        bootPublicKey: [UInt8] = [UInt8](repeating: 3, count: 32),
        diskUUID: DiskUUID = uuid,
        role: NodeRole = .worker,
        nodeName: String = "node-1"
    ) -> JoinClaims {
        try! JoinClaims(
            nonce: nonce,
            certificateKeyHash: [UInt8](repeating: 2, count: 32),
            bootPublicKey: bootPublicKey,
            diskUUID: diskUUID,
            role: role,
            nodeName: try! KubernetesNodeName(validating: nodeName)
        )
    }

    static func policy(
        measurements: [Int: Measurements.Expected] = [4: .init(value: issuer.pcrs[4]!)],
        allowed: Set<[UInt8]> = [issuer.akDigest],
        insecure: Bool = false,
        variants: [AttestationVariant] = [.asterismTPM],
        revokedDisks: Set<DiskUUID> = [],
        revokedAKs: Set<[UInt8]> = []
    ) -> MeasurementPolicy {
        try! MeasurementPolicy(
            version: 1,
            measurements: Measurements(measurements),
            allowedAKDigests: allowed,
            insecureTrustAnyAK: insecure,
            evidenceVariants: variants,
            revokedDiskUUIDs: revokedDisks,
            revokedAKDigests: revokedAKs
        )
    }

    /// Join evidence the joining keyd would issue for `claims`.
    static func joinEvidence(_ claims: JoinClaims, by issuer: SoftwareTPMEvidenceIssuer = issuer) -> [UInt8] {
        try! issuer.issueNative(
            qualifyingData: JoinBinding.qualifyingData(claims),
            userDataDigest: claims.certificateKeyHash
        )
    }

    /// One row: evidence, the claims keyd checks it against, the policy, and the expected verdict.
    struct Row: Sendable, CustomTestStringConvertible {
        let name: String
        let evidence: [UInt8]
        let claims: JoinClaims
        let policy: MeasurementPolicy
        /// nil: granted; else the status and a fragment of the reason.
        let refusal: (StatusCode, String)?
        /// Whether the verdict must name the issuer's AK digest.
        var knowsAK = true
        var testDescription: String { name }
    }

    static let genuine = claims()

    static let rows: [Row] = [
        Row(name: "granted", evidence: joinEvidence(genuine), claims: genuine, policy: policy(), refusal: nil),
        Row(
            name: "evidence for another nonce",
            evidence: joinEvidence(claims(nonce: [UInt8](repeating: 9, count: 32))),
            claims: genuine,
            policy: policy(),
            refusal: (.evidenceRejected, "tpm.quote.qualifying-data")
        ),
        Row(
            name: "generic-label evidence (evidence.issue) for the same nonce and key hash",
            evidence: try! issuer.issue(userData: genuine.certificateKeyHash, nonce: genuine.nonce),
            claims: genuine,
            policy: policy(),
            refusal: (.evidenceRejected, "tpm.quote.qualifying-data")
        ),
        Row(
            name: "Constellation-format evidence",
            evidence: try! SoftwareTPMEvidenceIssuer(format: .constellation).issue(
                userData: genuine.certificateKeyHash,
                nonce: genuine.nonce
            ),
            claims: genuine,
            policy: policy(insecure: true, variants: [.asterismTPM, .qemuVTPM]),
            refusal: (.evidenceRejected, "not keyd's native TPM document"),
            knowsAK: false
        ),
        Row(
            name: "evidence binding another boot key",
            evidence: joinEvidence(claims(bootPublicKey: [UInt8](repeating: 7, count: 32))),
            claims: genuine,
            policy: policy(),
            refusal: (.evidenceRejected, "tpm.quote.qualifying-data")
        ),
        Row(
            name: "evidence binding another disk UUID",
            evidence: joinEvidence(claims(diskUUID: otherUUID)),
            claims: genuine,
            policy: policy(),
            refusal: (.evidenceRejected, "tpm.quote.qualifying-data")
        ),
        Row(
            name: "evidence binding another role",
            evidence: joinEvidence(claims(role: .controlPlane)),
            claims: genuine,
            policy: policy(),
            refusal: (.evidenceRejected, "tpm.quote.qualifying-data")
        ),
        Row(
            name: "evidence binding another node name",
            evidence: joinEvidence(claims(nodeName: "node-2")),
            claims: genuine,
            policy: policy(),
            refusal: (.evidenceRejected, "tpm.quote.qualifying-data")
        ),
        Row(
            name: "untrusted AK",
            evidence: joinEvidence(genuine, by: stranger),
            claims: genuine,
            policy: policy(),
            refusal: (.evidenceRejected, "tpm.ak.trust"),
            knowsAK: false
        ),
        Row(
            name: "PCR mismatch names the PCR, expected and actual",
            evidence: joinEvidence(genuine),
            claims: genuine,
            policy: policy(measurements: [7: .init(value: [UInt8](repeating: 0xEE, count: 32))]),
            refusal: (
                .evidenceRejected,
                "measurements.pcr[7]: PCR 7 differs from the expected value (pcr=7, expected=\(String(repeating: "ee", count: 32)), actual=\(hexString(issuer.pcrs[7]!))"
            )
        ),
        Row(
            name: "warn-only PCR mismatch is granted",
            evidence: joinEvidence(genuine),
            claims: genuine,
            policy: policy(measurements: [7: .init(value: [UInt8](repeating: 0xEE, count: 32), warnOnly: true)]),
            refusal: nil
        ),
        Row(
            name: "revoked disk",
            evidence: joinEvidence(genuine),
            claims: genuine,
            policy: policy(revokedDisks: [uuid]),
            refusal: (.revoked, "disk \(uuid) is revoked by policy version 1")
        ),
        Row(
            name: "revoked AK",
            evidence: joinEvidence(genuine),
            claims: genuine,
            policy: policy(revokedAKs: [issuer.akDigest]),
            refusal: (.revoked, "AK \(hexString(issuer.akDigest)) is revoked")
        ),
        Row(
            name: "policy without the native variant",
            evidence: joinEvidence(genuine),
            claims: genuine,
            policy: policy(variants: [.qemuVTPM]),
            refusal: (.evidenceRejected, "does not allow evidence variant asterism-tpm"),
            knowsAK: false
        ),
        Row(
            name: "truncated evidence",
            evidence: Array(joinEvidence(genuine).dropLast()),
            claims: genuine,
            policy: policy(),
            refusal: (.evidenceRejected, "not keyd's native TPM document"),
            knowsAK: false
        ),
        Row(
            name: "oversized evidence",
            evidence: [UInt8](repeating: 0, count: Limits.maxEvidence + 1),
            claims: genuine,
            policy: policy(),
            refusal: (.evidenceRejected, "exceeds limit \(Limits.maxEvidence)"),
            knowsAK: false
        ),
    ]

    @Test(arguments: rows)
    func decide(row: Row) {
        let verdict = KeyRelease.decide(evidence: row.evidence, claims: row.claims, policy: row.policy, at: Date())
        switch (verdict, row.refusal) {
        case (.granted(let akDigest, let report), nil):
            #expect(akDigest == Self.issuer.akDigest)
            #expect(report.isValid)
            #expect(!verdict.usedInsecureAKTrust)
        case (.refused(let status, let reason, let akDigest), let (expectedStatus, fragment)?):
            #expect(status == expectedStatus)
            #expect(reason.contains(fragment), "\(reason)")
            #expect(reason.count <= KeyRelease.maximumReasonLength)
            if row.knowsAK { #expect(akDigest == Self.issuer.akDigest) }
        default:
            Issue.record("verdict \(verdict) where \(String(describing: row.refusal)) was expected")
        }
    }

    @Test func aWarnOnlyMismatchStaysInTheGrantedReport() throws {
        let verdict = KeyRelease.decide(
            evidence: Self.joinEvidence(Self.genuine),
            claims: Self.genuine,
            policy: Self.policy(measurements: [7: .init(value: [UInt8](repeating: 0xEE, count: 32), warnOnly: true)]),
            at: Date()
        )
        guard case .granted(_, let report) = verdict else {
            Issue.record("refused: \(verdict)")
            return
        }
        #expect(report.warnings.map(\.policy) == ["measurements.pcr[7]"])
    }

    @Test func theInsecureTrustIsGrantedAndSaysSo() {
        let verdict = KeyRelease.decide(
            evidence: Self.joinEvidence(Self.genuine, by: Self.stranger),
            claims: Self.genuine,
            policy: Self.policy(allowed: [], insecure: true),
            at: Date()
        )
        #expect(verdict.usedInsecureAKTrust)
        #expect(verdict.akDigest == Self.stranger.akDigest)
    }

    @Test func reasonsAreCutToTheirLimit() {
        // 24 enforced PCRs that all differ: far more text than an audit record should carry.
        let verdict = KeyRelease.decide(
            evidence: Self.joinEvidence(Self.genuine),
            claims: Self.genuine,
            policy: Self.policy(
                measurements: Dictionary(
                    uniqueKeysWithValues: (0..<24).map { ($0, .init(value: [UInt8](repeating: 0xEE, count: 32))) }
                )
            ),
            at: Date()
        )
        guard case .refused(_, let reason, _) = verdict else {
            Issue.record("granted")
            return
        }
        #expect(reason.count == KeyRelease.maximumReasonLength && reason.hasSuffix("…"))
    }
}
