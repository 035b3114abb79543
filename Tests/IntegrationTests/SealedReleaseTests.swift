import Crypto
import Foundation
import KeydClient
import KeydCore
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Sealed key release end to end on one machine (issue 14): real keyds, each on its own swtpm and
/// LUKS2 state-disk image formatted by its admin this boot; the test plays both trustds over trustd's
/// socket and checks every key, disk and PCR against values it derives itself.
@Suite(.serialized, .needsSwtpm, .needsRoot) struct SealedReleaseTests {
    /// A policy of `version` allow-listing `nodes`' AKs, enforcing PCRs 0–7 as the first node's TPM reports them.
    static func policy(version: UInt64, allowing nodes: [TPMFacts]) throws -> MeasurementPolicy {
        try MeasurementPolicy(
            version: version,
            measurements: nodes[0].measurements(0...7),
            allowedAKDigests: Set(nodes.map(\.akDigest))
        )
    }

    @Test func initJoinAsControlPlaneThenServeAWorkerAndRestart() throws {
        let secret = ClusterSecret()
        let operatorKey = Operator()
        // a: the first control plane (init.accept); b joins through a as a control plane; c joins through b.
        let a = try ReleaseNode()
        let b = try ReleaseNode()
        let c = try ReleaseNode()
        for node in [a, b, c] { try node.formatStateDisk() }
        let bTPM = try b.tpmFacts()
        let cTPM = try c.tpmFacts()
        #expect(bTPM.measurements(0...7) == cTPM.measurements(0...7), "fresh swtpms report the same PCRs 0–7")
        let policy = try Self.policy(version: 1, allowing: [bTPM, cTPM])
        let signedPolicy = try operatorKey.sign(policy)
        // b will serve releases after its join: the operator pins its key there before b holds a KEK.
        _ = try b.admin().call(.operatorKeyPin(operatorKey: operatorKey.key.encoded))

        // Init: the operator seals the master secret to a's boot key.
        let aTrustd = try a.trustd()
        let (bootKey, bootAnswer) = try ask(aTrustd, .bootKeyGet, BootKeyAnswer.read)
        let (initialized, initAnswer) = try ask(
            aTrustd,
            .initAccept(
                InitAcceptRequest(
                    envelope: try secret.initEnvelope(
                        to: bootKey.publicKey,
                        operatorKey: operatorKey.key.encoded,
                        signedPolicy: signedPolicy
                    ),
                    operatorKey: operatorKey.key.encoded,
                    signedPolicy: signedPolicy
                )
            ),
            InitAcceptAnswer.read
        )
        #expect(initialized.clusterID == secret.clusterID)
        let (stored, _) = try ask(try a.admin(), .policyGet, PolicyGetAnswer.read)
        #expect(stored.signedPolicy == signedPolicy && stored.operatorKey == operatorKey.key.encoded)
        let aStatus = try a.admin().status()
        #expect(aStatus.phase == .holdingKEK && aStatus.sealedKEK == .sealed)
        #expect(aStatus.policyVersion == 1 && aStatus.policyDigest == Array(SHA256.hash(data: policy.json)))
        #expect(aStatus.operatorKeyPinned)
        let aUUID = try a.diskUUID()
        #expect(try a.diskOpens(with: secret.diskKey(uuid: aUUID)), "init bound a's own state disk")
        #expect(try a.pcrFromKeyd(15) == secret.markedPCR15)

        // b joins through a as a control plane.
        let bJoin = try Join(b, through: a, role: .controlPlane, nodeName: "control-plane-2")
        let bUUID = try b.diskUUID()
        #expect(bJoin.evidence.diskUUID == bUUID)
        #expect(bJoin.accepted.diskOpened && bJoin.accepted.holdsKEK && !bJoin.accepted.activated)
        #expect(bJoin.accepted.clusterID == secret.clusterID)
        #expect(try b.diskOpens(with: secret.diskKey(uuid: bUUID)), "b's disk opens with HKDF(KEK, key-<uuid>)")
        #expect(!(try b.diskOpens(with: ClusterSecret().diskKey(uuid: bUUID))), "…and not with another cluster's")
        #expect(try b.pcrFromKeyd(15) == secret.markedPCR15)
        let bStatus = try b.admin().status()
        #expect(bStatus.phase == .holdingKEK && bStatus.sealedKEK == .sealed)
        let released = try #require(a.auditRecords().first { $0.contains("\"event\":\"key.release\"") })
        #expect(released.contains("\"decision\":\"granted\"") && released.contains(hex(bJoin.challenge.challengeID)))
        #expect(
            released.contains(bUUID) && released.contains("control-plane-2") && released.contains(hex(bTPM.akDigest))
        )
        #expect(try b.auditRecords().contains { $0.contains("\"envelope.accept\"") && $0.contains("\"granted\"") })

        // A joined control plane holds the KEK but no policy (the envelope carries keys only): it
        // releases nothing until its admin sets the operator's policy.
        #expect(bStatus.policyVersion == 0 && bStatus.operatorKeyPinned)
        let bTrustd = try b.trustd()
        let (early, _) = try ask(bTrustd, .challengeIssue(.join), ChallengeAnswer.read)
        let premature = KeyReleaseRequest(
            challengeID: early.challengeID,
            evidence: [],
            certificateKeyHash: ClusterSecret.random(32),
            bootPublicKey: ClusterSecret.random(32),
            diskUUID: UUID().uuidString.lowercased(),
            role: .worker
        )
        #expect(try bTrustd.roundTrip(.keyRelease(premature)).status == .policyMissing)

        // b holds the same KEK: with the operator's policy it releases to c, whose disk opens with
        // the same derivation.
        _ = try b.admin().call(.policySet(signedPolicy: signedPolicy))
        let cJoin = try Join(c, through: b, role: .worker, nodeName: "worker-1")
        let cUUID = try c.diskUUID()
        #expect(cJoin.accepted.diskOpened && !cJoin.accepted.holdsKEK && cJoin.accepted.clusterID == secret.clusterID)
        #expect(try c.diskOpens(with: secret.diskKey(uuid: cUUID)), "c's disk opens with HKDF(KEK, key-<uuid>)")
        #expect(try c.pcrFromKeyd(15) == secret.markedPCR15)
        #expect(try c.admin().status().phase == .awaitingKEK, "a worker's envelope carries no KEK")

        // No answer of any of this carried a key byte; no audit record either.
        let secrets = secret.secrets(diskUUIDs: [aUUID, bUUID, cUUID])
        #expect(leakedSecret(in: [0] + secret.diskKey(uuid: cUUID).suffix(20), secrets) != nil, "the search bites")
        let answers = [bootAnswer, initAnswer].flatMap(\.payload) + bJoin.answerBytes + cJoin.answerBytes
        #expect(leakedSecret(in: answers, secrets) == nil)
        for node in [a, b, c] {
            #expect(leakedSecret(in: Array(try node.auditRecords().joined().utf8), secrets) == nil)
        }

        // b restarted in the same boot (same swtpm): it unseals its KEK and leaves PCR 15 as it was.
        b.stopKeyd()
        #expect(try b.pcrFromTools(15) == secret.markedPCR15, "tpm2_pcrread agrees with keyd's report")
        try b.start()
        let restarted = try b.admin().status()
        #expect(restarted.phase == .holdingKEK && restarted.sealedKEK == .unsealed)
        #expect(restarted.policyVersion == 1 && restarted.operatorKeyPinned)
        #expect(try b.pcrFromKeyd(15) == secret.markedPCR15, "PCR 15 was not extended a second time")
        let unsealRecords = try b.auditRecords().filter { $0.contains("\"event\":\"kek.unseal\"") }
        #expect(unsealRecords.count == 1 && unsealRecords[0].contains("\"granted\""), "\(unsealRecords)")
        b.stopKeyd()
        #expect(try b.pcrFromTools(15) == secret.markedPCR15)
    }

    @Test func kekImportedByTheAdminServesAWorker() throws {
        // The serving keyd's KEK comes from kek.import (no measurement salt given: keyd derives it).
        let secret = ClusterSecret(measurementSalt: nil)
        let operatorKey = Operator()
        let server = try ReleaseNode()
        let joiner = try ReleaseNode()
        try joiner.formatStateDisk()
        let policy = try Self.policy(version: 1, allowing: [try joiner.tpmFacts()])
        let admin = try server.admin()
        _ = try admin.call(.operatorKeyPin(operatorKey: operatorKey.key.encoded))
        try secret.importKEK(admin)
        _ = try admin.call(.policySet(signedPolicy: try operatorKey.sign(policy)))

        let join = try Join(joiner, through: server, role: .worker, nodeName: "worker-7")
        let uuid = try joiner.diskUUID()
        #expect(join.accepted.diskOpened && join.accepted.clusterID == secret.clusterID)
        #expect(try joiner.diskOpens(with: secret.diskKey(uuid: uuid)))
        #expect(try joiner.pcrFromKeyd(15) == secret.markedPCR15)
        #expect(leakedSecret(in: join.answerBytes, secret.secrets(diskUUIDs: [uuid])) == nil)
        joiner.stopKeyd()
        #expect(try joiner.pcrFromTools(15) == secret.markedPCR15)
    }

    @Test func aRelayCannotSwapTheOperatorKeyOrPolicyOfAnInit() throws {
        // A compromised trustd relays the operator's init envelope with its own key and policy, or with an
        // older policy the operator signed; keyd refuses each (the envelope binds both), and the genuine
        // request still works afterwards (a refusal does not use init.accept up).
        let secret = ClusterSecret()
        let operatorKey = Operator()
        let attacker = Operator()
        let node = try ReleaseNode()
        try node.formatStateDisk()
        let facts = try node.tpmFacts()
        let signed = try operatorKey.sign(try Self.policy(version: 2, allowing: [facts]))
        let older = try operatorKey.sign(try Self.policy(version: 1, allowing: [facts]))
        let attackerSigned = try attacker.sign(
            try MeasurementPolicy(version: 9, measurements: facts.measurements(0...7), insecureTrustAnyAK: true)
        )
        let trustd = try node.trustd()
        let (bootKey, _) = try ask(trustd, .bootKeyGet, BootKeyAnswer.read)
        let envelope = try secret.initEnvelope(
            to: bootKey.publicKey,
            operatorKey: operatorKey.key.encoded,
            signedPolicy: signed
        )
        for (key, policy) in [
            (attacker.key.encoded, attackerSigned), (operatorKey.key.encoded, older),
        ] {
            let answer = try trustd.roundTrip(
                .initAccept(InitAcceptRequest(envelope: envelope, operatorKey: key, signedPolicy: policy))
            )
            #expect(answer.status == .envelopeRejected)
        }
        #expect(try node.admin().status().phase == .awaitingKEK)
        let (initialized, _) = try ask(
            trustd,
            .initAccept(
                InitAcceptRequest(envelope: envelope, operatorKey: operatorKey.key.encoded, signedPolicy: signed)
            ),
            InitAcceptAnswer.read
        )
        #expect(initialized.clusterID == secret.clusterID)
        let refusals = try node.auditRecords().filter {
            $0.contains("\"event\":\"init.accept\",\"decision\":\"refused\"")
        }
        #expect(refusals.count == 2, "\(refusals)")
    }
}
