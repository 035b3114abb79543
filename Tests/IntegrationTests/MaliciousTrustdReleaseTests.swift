import AsterismTestSupport
import Attestation
import Foundation
import KeydClient
import KeydCore
import KeydProtocol
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The malicious-trustd table of sealed release (issue 14): a test on trustd's uid attacks the serving
/// keyd (and, where a row needs one, a joining keyd on swtpm) straight through keyd's socket. Every row
/// ends with the same checks: the documented status, no key byte in any answer it received, an audit
/// record with the reason (read with `audit.read`; the flood: one `audit.summary` count instead), keyd
/// still serving, and its resident memory flat.
@Suite(.serialized, .needsSwtpm, .needsRoot) struct MaliciousTrustdReleaseTests {
    /// Which keyd a row attacks and audits.
    enum Target: Sendable {
        case server
        case joiner
    }

    /// What the row's audit must show.
    enum Audited: Sendable {
        /// A record holding every fragment.
        case record([String])
        /// No record of `event` beyond those before the attack; at stop one `audit.summary` counting `count`.
        case countedOnly(event: String, count: Int)
    }

    /// One attack.
    struct Row: Sendable, CustomTestStringConvertible {
        let name: String
        var needsJoiner = false
        var target = Target.server
        /// The attack; returns the status of its decisive answer.
        let attack: @Sendable (Scene) throws -> StatusCode
        let expected: StatusCode
        let audited: Audited
        var testDescription: String { name }
    }

    /// A serving keyd without TPM holding a KEK (kek.import), the operator's key and policy version 1,
    /// which allow-lists a software AK (and the joining keyd's swtpm AK when there is one), enforcing
    /// PCRs 0–7 as the joining TPM reports them; the software AK reports the same PCRs.
    final class Scene {
        let secret = ClusterSecret(measurementSalt: nil)
        let operatorKey = Operator()
        let server: ReleaseNode
        let joiner: ReleaseNode?
        /// The software AK on the allow-list (its quotes carry any qualifying data the test likes).
        let issuer: SoftwareTPMEvidenceIssuer
        let measurements: Measurements
        /// The test's own X25519 key: the attacker's, or another node's.
        let attackerKey = BootKey()
        let certificateKeyHash = ClusterSecret.random(32)
        let diskUUID = UUID().uuidString.lowercased()
        /// Every answer the row received, searched for key bytes at the end.
        var answers: [AnswerFrame] = []
        /// Disk UUIDs whose keys must appear nowhere.
        var diskUUIDs: [String]
        /// The AKs every policy of the scene allow-lists.
        let allowedAKs: Set<[UInt8]>

        init(joiner needed: Bool) throws {
            server = try ReleaseNode(tpm: false)
            diskUUIDs = [diskUUID]
            var allowed: Set<[UInt8]> = []
            if needed {
                let joiner = try ReleaseNode()
                try joiner.formatStateDisk()
                let facts = try joiner.tpmFacts()
                allowed.insert(facts.akDigest)
                diskUUIDs.append(try joiner.diskUUID())
                issuer = SoftwareTPMEvidenceIssuer(format: .native, pcrs: facts.pcrs)
                self.joiner = joiner
            } else {
                issuer = SoftwareTPMEvidenceIssuer(format: .native)
                joiner = nil
            }
            allowed.insert(issuer.akDigest)
            allowedAKs = allowed
            measurements = TPMFacts(akDigest: issuer.akDigest, pcrs: issuer.pcrs).measurements(0...7)
            let admin = try server.admin()
            _ = try admin.call(.operatorKeyPin(operatorKey: operatorKey.key.encoded))
            try secret.importKEK(admin)
            try setPolicy(policy(version: 1))
        }

        /// The keyd a row targets.
        func node(_ target: Target) throws -> ReleaseNode {
            switch target {
            case .server: server
            case .joiner: try #require(joiner)
            }
        }

        /// A policy like version 1's with the changes a row makes.
        func policy(
            version: UInt64,
            measurements: Measurements? = nil,
            lifetime: Int = 60,
            revokedDisks: [String] = [],
            revokedAKs: Set<[UInt8]> = []
        ) throws -> MeasurementPolicy {
            try MeasurementPolicy(
                version: version,
                measurements: measurements ?? self.measurements,
                allowedAKDigests: allowedAKs,
                challengeLifetimeSeconds: lifetime,
                revokedDiskUUIDs: Set(try revokedDisks.map { try DiskUUID(validating: $0) }),
                revokedAKDigests: revokedAKs
            )
        }

        /// `policy.set` of `policy` signed by the operator, from the admin.
        func setPolicy(_ policy: MeasurementPolicy) throws {
            _ = try server.admin().call(.policySet(signedPolicy: try operatorKey.sign(policy)))
        }

        /// Sends `request` on `connection`, keeps the answer, returns it.
        @discardableResult
        func send(_ connection: KeydConnection, _ request: Request) throws -> AnswerFrame {
            let answer = try connection.roundTrip(request)
            answers.append(answer)
            return answer
        }

        /// A challenge from the serving keyd.
        func challenge(_ connection: KeydConnection) throws -> ChallengeAnswer {
            let answer = try send(connection, .challengeIssue(.join))
            return try answer.decodePayload(.challengeIssue, ChallengeAnswer.read)
        }

        /// The claims of a release request: by default the attacker's boot key, the scene's disk, a worker.
        func claims(
            nonce: [UInt8],
            bootPublicKey: [UInt8]? = nil,
            diskUUID: String? = nil,
            role: NodeRole = .worker,
            nodeName: String = "worker-1"
        ) throws -> JoinClaims {
            try JoinClaims(
                nonce: nonce,
                certificateKeyHash: certificateKeyHash,
                bootPublicKey: bootPublicKey ?? attackerKey.publicKey,
                diskUUID: try DiskUUID(validating: diskUUID ?? self.diskUUID),
                role: role,
                nodeName: try KubernetesNodeName(validating: nodeName)
            )
        }

        /// Join evidence by `issuer` (the allow-listed software AK by default) binding `claims`.
        func evidence(_ claims: JoinClaims, by issuer: SoftwareTPMEvidenceIssuer? = nil) throws -> [UInt8] {
            try (issuer ?? self.issuer).issueNative(
                qualifyingData: JoinBinding.qualifyingData(claims),
                userDataDigest: claims.certificateKeyHash
            )
        }

        /// `key.release` naming `challenge` with `evidence` and the fields of `claims`.
        func release(
            _ connection: KeydConnection,
            _ challenge: ChallengeAnswer,
            evidence: [UInt8],
            claims: JoinClaims
        ) throws -> AnswerFrame {
            try send(
                connection,
                .keyRelease(
                    KeyReleaseRequest(
                        challengeID: challenge.challengeID,
                        evidence: evidence,
                        certificateKeyHash: claims.certificateKeyHash,
                        bootPublicKey: claims.bootPublicKey,
                        diskUUID: claims.diskUUID.text,
                        role: claims.role,
                        nodeName: claims.nodeName.text
                    )
                )
            )
        }

        /// A release naming `challenge` with software evidence that binds exactly what the request names.
        func genuineRelease(_ connection: KeydConnection, _ challenge: ChallengeAnswer) throws -> AnswerFrame {
            let claims = try claims(nonce: challenge.nonce)
            return try release(connection, challenge, evidence: try evidence(claims), claims: claims)
        }

        /// A fresh challenge and a genuine release naming it (granted while the policy allows it).
        func genuineRelease(_ connection: KeydConnection) throws -> (ChallengeAnswer, AnswerFrame) {
            let challenge = try challenge(connection)
            return (challenge, try genuineRelease(connection, challenge))
        }

        /// Join evidence from the joining keyd for `nonce` (worker-1), and what it bound.
        func joinEvidence(nonce: [UInt8], role: NodeRole = .worker) throws -> JoinEvidenceAnswer {
            let answer = try send(
                try node(.joiner).trustd(),
                .joinEvidenceIssue(
                    JoinEvidenceRequest(
                        nonce: nonce,
                        certificateKeyHash: certificateKeyHash,
                        role: role,
                        nodeName: "worker-1"
                    )
                )
            )
            return try answer.decodePayload(.joinEvidenceIssue, JoinEvidenceAnswer.read)
        }

        /// Sends `frames` (after hello) on a raw trustd connection and keeps the answers.
        func sendRaw(_ frames: [UInt8], answers count: Int) throws -> [AnswerFrame] {
            let client = try RawClient(path: server.keyd.socketPath)
            client.send(RawClient.hello() + frames)
            let received = client.readAnswers(count + 1)
            answers += received
            return Array(received.dropFirst())
        }
    }

    // MARK: The table

    static let rows: [Row] =
        [
            Row(
                name: "replayed challenge",
                attack: { scene in
                    let trustd = try scene.server.trustd()
                    let (challenge, first) = try scene.genuineRelease(trustd)
                    #expect(first.status == .ok, "the first use is a genuine release")
                    return try scene.genuineRelease(trustd, challenge).status
                },
                expected: .challengeUnknown,
                audited: .record(["\"key.release\"", "\"challengeUnknown\"", "challenge already used"])
            ),
            Row(
                name: "expired challenge",
                attack: { scene in
                    try scene.setPolicy(try scene.policy(version: 2, lifetime: 1))
                    let trustd = try scene.server.trustd()
                    let challenge = try scene.challenge(trustd)
                    #expect(challenge.lifetimeSeconds == 1)
                    // The attack is the passage of time itself: there is no event to await.
                    usleep(1_200_000)
                    return try scene.genuineRelease(trustd, challenge).status
                },
                expected: .challengeExpired,
                audited: .record(["\"key.release\"", "\"challengeExpired\"", "challenge lifetime passed"])
            ),
            Row(
                name: "unknown challenge",
                attack: { scene in
                    let forged = ChallengeAnswer(
                        challengeID: ClusterSecret.random(16),
                        nonce: ClusterSecret.random(32),
                        lifetimeSeconds: 60
                    )
                    return try scene.genuineRelease(try scene.server.trustd(), forged).status
                },
                expected: .challengeUnknown,
                audited: .record(["\"key.release\"", "\"challengeUnknown\"", "no such challenge"])
            ),
            Row(
                name: "evicted challenge",
                attack: { scene in
                    let trustd = try scene.server.trustd()
                    let oldest = try scene.challenge(trustd)
                    // 4,096 newer challenges fill the table and push the oldest out.
                    let frames = (1...4096).flatMap {
                        RequestFrame(sequence: UInt32($0), request: .challengeIssue(.join)).encodeFrame()
                    }
                    let issued = try scene.sendRaw(frames, answers: 4096)
                    #expect(issued.count == 4096 && issued.allSatisfy { $0.status == .ok })
                    return try scene.genuineRelease(trustd, oldest).status
                },
                expected: .challengeEvicted,
                audited: .record(["\"key.release\"", "\"challengeEvicted\"", "evicted"])
            ),
            Row(
                name: "evidence for another nonce",
                attack: { scene in
                    let trustd = try scene.server.trustd()
                    let challenge = try scene.challenge(trustd)
                    let claims = try scene.claims(nonce: challenge.nonce)
                    let stale = try scene.evidence(try scene.claims(nonce: ClusterSecret.random(32)))
                    return try scene.release(trustd, challenge, evidence: stale, claims: claims).status
                },
                expected: .evidenceRejected,
                audited: .record(["\"key.release\"", "\"evidenceRejected\"", "tpm.quote.qualifying-data"])
            ),
        ] + evidenceIssueRows + bindingRows + trustRows + frameRows + policyRows + envelopeRows + dataKeyRows
        + [floodRow]

    /// The joining keyd's own TPM asked through `evidence.issue` for the challenge's nonce (the generic
    /// label, or Constellation's format), with a request naming exactly what its join evidence binds.
    static let evidenceIssueRows: [Row] = [
        (EvidenceVariant.native, "generic-label evidence (evidence.issue)", "tpm.quote.qualifying-data"),
        (.constellationQEMUVTPM, "Constellation-format evidence (evidence.issue)", "not keyd's native TPM document"),
    ].map { variant, name, reason in
        Row(
            name: name,
            needsJoiner: true,
            attack: { scene in
                let trustd = try scene.server.trustd()
                let challenge = try scene.challenge(trustd)
                let joined = try scene.joinEvidence(nonce: ClusterSecret.random(32))
                let issued = try scene.send(
                    try scene.node(.joiner).trustd(),
                    .evidenceIssue(
                        EvidenceRequest(
                            variant: variant,
                            nonce: challenge.nonce,
                            userDataDigest: scene.certificateKeyHash
                        )
                    )
                )
                let document = try issued.decodePayload(.evidenceIssue, EvidenceAnswer.read).document
                let claims = try scene.claims(
                    nonce: challenge.nonce,
                    bootPublicKey: joined.bootPublicKey,
                    diskUUID: joined.diskUUID
                )
                return try scene.release(trustd, challenge, evidence: document, claims: claims).status
            },
            expected: .evidenceRejected,
            audited: .record(["\"key.release\"", "\"evidenceRejected\"", reason])
        )
    }

    /// Genuine join evidence of the joining keyd, with a request that names something else than it bound.
    static let bindingRows: [Row] = [
        ("another boot key", "worker-1"), ("another disk UUID", "worker-1"), ("another role", "worker-1"),
        ("another node name", "worker-2"),
    ].map { what, nodeName in
        Row(
            name: "join evidence binding \(what) than the request",
            needsJoiner: true,
            attack: { scene in
                let trustd = try scene.server.trustd()
                let challenge = try scene.challenge(trustd)
                let joined = try scene.joinEvidence(nonce: challenge.nonce)
                let claims = try scene.claims(
                    nonce: challenge.nonce,
                    bootPublicKey: what == "another boot key" ? scene.attackerKey.publicKey : joined.bootPublicKey,
                    diskUUID: what == "another disk UUID" ? scene.diskUUID : joined.diskUUID,
                    role: what == "another role" ? .controlPlane : .worker,
                    nodeName: nodeName
                )
                return try scene.release(trustd, challenge, evidence: joined.document, claims: claims).status
            },
            expected: .evidenceRejected,
            audited: .record([
                "\"key.release\"", "\"evidenceRejected\"", "tpm.quote.qualifying-data", "\"nodeName\":\"\(nodeName)\"",
            ])
        )
    }

    /// The AK, the PCRs and the revocation lists.
    static let trustRows: [Row] = [
        Row(
            name: "untrusted AK (a software AK not allow-listed)",
            attack: { scene in
                let trustd = try scene.server.trustd()
                let challenge = try scene.challenge(trustd)
                let claims = try scene.claims(nonce: challenge.nonce)
                let stranger = SoftwareTPMEvidenceIssuer(format: .native, pcrs: scene.issuer.pcrs)
                let evidence = try scene.evidence(claims, by: stranger)
                return try scene.release(trustd, challenge, evidence: evidence, claims: claims).status
            },
            expected: .evidenceRejected,
            audited: .record(["\"key.release\"", "\"evidenceRejected\"", "tpm.ak.trust", "neither allow-listed"])
        ),
        Row(
            name: "PCR mismatch",
            attack: { scene in
                var expected = scene.measurements.entries
                expected[4] = Measurements.Expected(value: ClusterSecret.random(32))
                try scene.setPolicy(try scene.policy(version: 2, measurements: Measurements(expected)))
                return try scene.genuineRelease(try scene.server.trustd()).1.status
            },
            expected: .evidenceRejected,
            audited: .record(["\"key.release\"", "\"evidenceRejected\"", "PCR 4 differs from the expected value"])
        ),
        Row(
            name: "revoked disk",
            attack: { scene in
                try scene.setPolicy(try scene.policy(version: 2, revokedDisks: [scene.diskUUID]))
                return try scene.genuineRelease(try scene.server.trustd()).1.status
            },
            expected: .revoked,
            audited: .record(["\"key.release\"", "\"revoked\"", "is revoked by policy version 2", "disk "])
        ),
        Row(
            name: "revoked AK",
            attack: { scene in
                try scene.setPolicy(try scene.policy(version: 2, revokedAKs: [scene.issuer.akDigest]))
                return try scene.genuineRelease(try scene.server.trustd()).1.status
            },
            expected: .revoked,
            audited: .record(["\"key.release\"", "\"revoked\"", "is revoked by policy version 2", "AK "])
        ),
    ]

    /// `key.release` frames built byte by byte: oversized and truncated fields.
    static let frameRows: [Row] = [
        Row(
            name: "oversized node name (300 bytes of text<253>)",
            attack: { scene in
                let body = releaseBody(evidence: [1, 2, 3], nodeName: [UInt8](repeating: 0x61, count: 300))
                return try scene.sendRaw(frame(body), answers: 1).first?.status ?? .ok
            },
            expected: .malformed,
            audited: .record(["\"protocol.violation\"", "\"malformed\"", "nodeName"])
        ),
        Row(
            name: "oversized evidence (50,000 bytes of bytes<49152>)",
            attack: { scene in
                let body = releaseBody(evidence: [UInt8](repeating: 7, count: 50_000), nodeName: Array("w".utf8))
                return try scene.sendRaw(frame(body), answers: 1).first?.status ?? .ok
            },
            expected: .malformed,
            audited: .record(["\"protocol.violation\"", "\"malformed\"", "evidence"])
        ),
        Row(
            name: "truncated evidence (its length says 1,000, the frame ends after 10)",
            attack: { scene in
                var body = be16(RequestKind.keyRelease.rawValue) + be32(1) + ClusterSecret.random(16)
                body += be16(1000) + [UInt8](repeating: 7, count: 10)
                return try scene.sendRaw(frame(body), answers: 1).first?.status ?? .ok
            },
            expected: .malformed,
            audited: .record(["\"protocol.violation\"", "\"malformed\"", "evidence"])
        ),
    ]

    /// Admin-only requests from trustd, and policies the admin sends that keyd must refuse.
    static let policyRows: [Row] = [
        Row(
            name: "policy.set from trustd signed by its own key",
            attack: { scene in
                let signed = try Operator().sign(try scene.policy(version: 2))
                let status = try scene.send(try scene.server.trustd(), .policySet(signedPolicy: signed)).status
                #expect(try scene.server.admin().status().policyVersion == 1)
                return status
            },
            expected: .policyRejected,
            audited: .record(["\"policy.set\"", "\"refused\"", "\"class\":\"trustd\""])
        ),
        Row(
            name: "policy.set from trustd replaying the policy in force",
            attack: { scene in
                let signed = try scene.operatorKey.sign(try scene.policy(version: 1))
                let status = try scene.send(try scene.server.trustd(), .policySet(signedPolicy: signed)).status
                #expect(try scene.server.admin().status().policyVersion == 1)
                return status
            },
            expected: .policyRejected,
            audited: .record(["\"policy.set\"", "\"refused\"", "\"class\":\"trustd\""])
        ),
        Row(
            name: "kek.import from trustd",
            attack: { scene in
                let master = ClusterSecret.random(32)
                let frame = master.withUnsafeBytes { bytes in
                    RequestFrame.encodeKEKImport(sequence: 1, masterSecret: bytes, salt: bytes)
                }
                return try scene.sendRaw(frame, answers: 1).first?.status ?? .ok
            },
            expected: .denied,
            audited: .record(["\"kek.import\"", "\"denied\"", "\"class\":\"trustd\""])
        ),
        Row(
            name: "kek.lock from trustd",
            attack: { scene in
                let status = try scene.send(try scene.server.trustd(), .kekLock).status
                #expect(try scene.server.admin().status().phase == .holdingKEK, "the KEK is still held")
                return status
            },
            expected: .denied,
            audited: .record(["\"kek.lock\"", "\"denied\"", "\"class\":\"trustd\""])
        ),
        Row(
            name: "unsigned policy from admin (bare JSON)",
            attack: { scene in
                let bare = try scene.policy(version: 2).json
                return try scene.send(try scene.server.admin(), .policySet(signedPolicy: bare)).status
            },
            expected: .policyRejected,
            audited: .record(["\"policy.set\"", "\"policyRejected\"", "invalidSignedPolicy"])
        ),
        Row(
            name: "policy with an empty signature from admin",
            attack: { scene in
                let json = try scene.policy(version: 2).json
                let unsigned = SignedPolicy(policy: json, signature: []).encoded
                return try scene.send(try scene.server.admin(), .policySet(signedPolicy: unsigned)).status
            },
            expected: .policyRejected,
            audited: .record(["\"policy.set\"", "\"policyRejected\"", "policySignatureInvalid"])
        ),
        Row(
            name: "badly signed policy from admin (another key)",
            attack: { scene in
                let forged = try Operator().sign(try scene.policy(version: 2))
                return try scene.send(try scene.server.admin(), .policySet(signedPolicy: forged)).status
            },
            expected: .policyRejected,
            audited: .record(["\"policy.set\"", "\"policyRejected\"", "policySignatureInvalid"])
        ),
        Row(
            name: "older-version policy from admin",
            attack: { scene in
                try scene.setPolicy(try scene.policy(version: 3))
                let older = try scene.operatorKey.sign(try scene.policy(version: 2))
                let status = try scene.send(try scene.server.admin(), .policySet(signedPolicy: older)).status
                #expect(try scene.server.admin().status().policyVersion == 3)
                return status
            },
            expected: .policyRejected,
            audited: .record(["\"policy.set\"", "\"policyRejected\"", "policyVersionNotNewer", "version 2"])
        ),
    ]

    /// What the joining keyd does with envelopes.
    static let envelopeRows: [Row] = [
        Row(
            name: "envelope.accept twice",
            needsJoiner: true,
            target: .joiner,
            attack: { scene in
                let join = try Join(try scene.node(.joiner), through: scene.server, role: .worker, nodeName: "worker-1")
                scene.answers += join.answers
                #expect(join.accepted.diskOpened)
                return try scene.send(
                    try scene.node(.joiner).trustd(),
                    .envelopeAccept(.join, envelope: join.release.envelope)
                ).status
            },
            expected: .alreadyUsed,
            audited: .record(["\"envelope.accept\"", "\"alreadyUsed\""])
        ),
        Row(
            name: "envelope sealed to another keyd",
            needsJoiner: true,
            target: .joiner,
            attack: { scene in
                // A genuine release of the serving keyd for the joining disk, sealed to the attacker's key.
                let trustd = try scene.server.trustd()
                let challenge = try scene.challenge(trustd)
                let joined = try scene.joinEvidence(nonce: ClusterSecret.random(32))
                let claims = try scene.claims(nonce: challenge.nonce, diskUUID: joined.diskUUID)
                let released = try scene.release(
                    trustd,
                    challenge,
                    evidence: try scene.evidence(claims),
                    claims: claims
                )
                let envelope = try released.decodePayload(.keyRelease, KeyReleaseAnswer.read).envelope
                #expect((try? KeyEnvelope.open(envelope, with: scene.attackerKey)) != nil, "a genuine envelope")
                let joiner = try scene.node(.joiner)
                let status = try scene.send(try joiner.trustd(), .envelopeAccept(.join, envelope: envelope)).status
                // The refusal did not use envelope.accept up: the node still joins.
                let join = try Join(joiner, through: scene.server, role: .worker, nodeName: "worker-1")
                scene.answers += join.answers
                #expect(join.accepted.diskOpened)
                return status
            },
            expected: .envelopeRejected,
            audited: .record(["\"envelope.accept\"", "\"envelopeRejected\"", "HPKE open failed"])
        ),
        Row(
            name: "envelope forged with a low-order encapsulated key",
            needsJoiner: true,
            target: .joiner,
            attack: { scene in
                // The zero DH output is the same for every boot key: trustd seals keys of its choosing
                // for exactly the join the node attested. swift-crypto's HPKE would open it.
                let joined = try scene.joinEvidence(nonce: ClusterSecret.random(32))
                let forged = try ZeroDHSender.keyEnvelope(
                    purpose: EnvelopePurpose.join.rawValue,
                    role: NodeRole.worker.rawValue,
                    challengeID: ClusterSecret.random(16),
                    diskUUID: joined.diskUUID,
                    nodeName: "worker-1",
                    recipient: joined.bootPublicKey,
                    plaintext: [UInt8](repeating: 0x41, count: 96) + [0]
                )
                let joiner = try scene.node(.joiner)
                let status = try scene.send(try joiner.trustd(), .envelopeAccept(.join, envelope: forged)).status
                // The node's disk did not take the attacker's key, and it still joins for real.
                let join = try Join(joiner, through: scene.server, role: .worker, nodeName: "worker-1")
                scene.answers += join.answers
                #expect(join.accepted.diskOpened)
                return status
            },
            expected: .envelopeRejected,
            audited: .record(["\"envelope.accept\"", "\"envelopeRejected\"", "low-order X25519 point"])
        ),
    ]

    /// 100,000 `challenge.issue` pipelined on four connections: all answered, none audited one by one.
    static let floodRow = Row(
        name: "flood of 100,000 challenge.issue",
        attack: { scene in
            let clients = try (0..<4).map { _ in try RawClient(path: scene.server.keyd.socketPath) }
            // The hello goes first, from this thread: keyd closes a connection that has not said hello
            // within its hello timeout, and a loaded machine can hold a worker thread back that long.
            for client in clients { client.send(RawClient.hello()) }
            let pipeline = (1...25_000).flatMap {
                RequestFrame(sequence: UInt32($0), request: .challengeIssue(.join)).encodeFrame()
            }
            // Each connection has its own sending and reading thread (not Dispatch's pool, which is as wide
            // as the machine's cores): keyd stops reading a peer whose answers it cannot hand over, and
            // closes a peer that takes no answer bytes for its idle timeout.
            let received = Mutex<[[AnswerFrame]]>(Array(repeating: [], count: clients.count))
            let done = DispatchGroup()
            for (index, client) in clients.enumerated() {
                let fd = client.fd
                done.enter()
                Thread.detachNewThread {
                    sendAll(pipeline, to: fd)
                    done.leave()
                }
                done.enter()
                Thread.detachNewThread {
                    let answers = Array(client.readAnswers(25_001).dropFirst())
                    received.withLock { $0[index] = answers }
                    done.leave()
                }
            }
            done.wait()
            var statuses: [StatusCode: Int] = [:]
            for answers in received.withLock({ $0 }) {
                for answer in answers { statuses[answer.status, default: 0] += 1 }
                // Only a sample is kept for the key-byte search: 100,000 nonces are plenty of noise.
                scene.answers += answers.prefix(100)
            }
            #expect(statuses == [.ok: 100_000], "\(statuses)")
            return statuses == [.ok: 100_000] ? .ok : .internal
        },
        expected: .ok,
        audited: .countedOnly(event: "challenge.issue", count: 100_000)
    )

    // MARK: The checks

    @Test(arguments: rows) func attack(_ row: Row) throws {
        let scene = try Scene(joiner: row.needsJoiner)
        let node = try scene.node(row.target)
        let recordsBefore = try node.auditRecords().count
        let memoryBefore = try #require(residentKiB(pid: node.keyd.pid))

        let status = try row.attack(scene)
        #expect(status == row.expected, "\(row.name): \(status)")

        let secrets = scene.secret.secrets(diskUUIDs: scene.diskUUIDs)
        #expect(leakedSecret(in: scene.answers.flatMap(\.payload), secrets) == nil, "\(row.name): key bytes answered")
        let records = try node.auditRecords()
        #expect(leakedSecret(in: Array(records.joined().utf8), secrets) == nil, "\(row.name): key bytes audited")
        switch row.audited {
        case .record(let fragments):
            let found = records.dropFirst(recordsBefore).contains { record in fragments.allSatisfy(record.contains) }
            #expect(found, "\(row.name): no audit record with \(fragments) in \(records.dropFirst(recordsBefore))")
        case .countedOnly(let event, _):
            let oneByOne = records.dropFirst(recordsBefore).filter { $0.contains("\"event\":\"\(event)\"") }
            #expect(oneByOne.isEmpty, "\(row.name): \(oneByOne.count) records written one by one")
        }

        // Still serving both sockets, memory flat.
        #expect(try node.admin().status().auditIntact)
        #expect(try node.trustd().status().peerClass == .trustd)
        let memoryAfter = try #require(residentKiB(pid: node.keyd.pid))
        #expect(
            memoryAfter <= memoryBefore + AttackChecks.memorySlackKiB,
            "\(row.name): resident memory grew from \(memoryBefore) KiB to \(memoryAfter) KiB"
        )

        if case .countedOnly(let event, let count) = row.audited {
            // The count is written at stop, as one audit.summary.
            node.stopKeyd()
            let summaries = node.keyd.auditLines.filter { $0.contains("\"event\":\"audit.summary\"") }
            #expect(summaries.count == 1 && summaries[0].contains("\"\(event)\":\"\(count)\""), "\(summaries)")
        }
    }

    // MARK: Raw frames

    static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }

    static func be32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(value >> (24 - 8 * $0) & 0xFF) } }

    /// The length prefix and `body`.
    static func frame(_ body: [UInt8]) -> [UInt8] { be32(UInt32(body.count)) + body }

    /// A `key.release` body (sequence 1) with `evidence` and `nodeName` as given, whatever their lengths.
    static func releaseBody(evidence: [UInt8], nodeName: [UInt8]) -> [UInt8] {
        var body = be16(RequestKind.keyRelease.rawValue) + be32(1) + ClusterSecret.random(16)
        body += be16(UInt16(evidence.count)) + evidence
        body += ClusterSecret.random(32) + ClusterSecret.random(32)
        body += be16(36) + Array(UUID().uuidString.lowercased().utf8) + [1]
        body += be16(UInt16(nodeName.count)) + nodeName + be16(0)
        return body
    }
}

/// Writes all of `bytes` to `fd`, blocking as the peer reads.
private func sendAll(_ bytes: [UInt8], to fd: Int32) {
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { raw in
            send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
        }
        if n <= 0 { return }
        offset += n
    }
}
