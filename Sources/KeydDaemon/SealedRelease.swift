import FoundationEssentials
import KeydCore
import KeydPlatform
import KeydProtocol

/// The settings of sealed release, read from keyd's configuration at start.
struct ReleaseSettings {
    /// Whether `compat.release` answers (Constellation's bootstrapper, keys in plain through trustd).
    var constellationCompatibility = false
    /// The device-mapper name the state disk is activated under by `envelope.accept` and `init.accept`.
    var stateDiskMapping = "state"
    /// The Kubernetes CA that signs kubelet certificates, when configured.
    var kubeletCA: KubeletCertificateAuthority?
    /// Outstanding challenges at most (the oldest is evicted first).
    var challengeCapacity = 4096

    /// The most join evidence claims keyd remembers per boot (the envelopes it will accept name one).
    static let attestedJoinCapacity = 16

    /// Reads the settings; a configured Kubernetes CA whose files do not load stops keyd at start.
    static func load(_ configuration: KeydConfiguration) throws(KeydError) -> ReleaseSettings {
        var settings = ReleaseSettings(
            constellationCompatibility: configuration.constellationCompatibility,
            stateDiskMapping: configuration.stateDiskMapping
        )
        switch (configuration.kubernetesCACertificate, configuration.kubernetesCAKey) {
        case (nil, nil):
            break
        case (let certificatePath?, let keyPath?):
            do {
                let certificate = try readWholeFile(path: certificatePath, limit: 65_536)
                let key = SecretBytes(copying: try readWholeFile(path: keyPath, limit: 65_536))
                settings.kubeletCA = try KubeletCertificateAuthority(
                    certificatePEM: String(decoding: certificate, as: UTF8.self),
                    privateKeyPEM: key
                )
            } catch {
                throw .startup("Kubernetes CA (\(certificatePath), \(keyPath)): \(error)")
            }
        default:
            throw .startup("kubernetes-ca-certificate and kubernetes-ca-key are set together or not at all")
        }
        return settings
    }
}

/// What keyd bound into one join evidence document this boot: an envelope it accepts names these.
struct AttestedJoin: Hashable {
    /// This keyd's state disk.
    let diskUUID: DiskUUID
    /// The role asked for.
    let role: NodeRole
    /// The node name asked for.
    let nodeName: KubernetesNodeName
}

/// keyd's sealed-release state for one boot: the boot key, the challenges, what it attested.
final class ReleaseState {
    /// The X25519 key envelopes are sealed to; made at start, never written anywhere.
    let bootKey = BootKey()
    /// The outstanding challenges.
    var challenges: ChallengeTable
    /// Join claims keyd attested this boot, newest last, at most ``ReleaseSettings/attestedJoinCapacity``.
    var attestedJoins: [AttestedJoin] = []
    /// Whether PCR 15 holds the cluster ID this boot.
    var clusterMarked = false

    init(challengeCapacity: Int) { challenges = ChallengeTable(capacity: challengeCapacity) }

    /// Whether this keyd bound `diskUUID`, `role` and `nodeName` into join evidence this boot (an
    /// envelope it opens must name such a join).
    func attested(_ diskUUID: DiskUUID, _ role: NodeRole, _ nodeName: KubernetesNodeName) -> Bool {
        attestedJoins.contains(AttestedJoin(diskUUID: diskUUID, role: role, nodeName: nodeName))
    }

    /// Remembers `join`, dropping the oldest beyond capacity.
    func remember(_ join: AttestedJoin) {
        attestedJoins.removeAll { $0 == join }
        attestedJoins.append(join)
        if attestedJoins.count > ReleaseSettings.attestedJoinCapacity { attestedJoins.removeFirst() }
    }
}

/// Fresh random bytes (not secret: IDs and nonces).
private func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var bytes: [UInt8] = []
    bytes.reserveCapacity(count + 7)
    while bytes.count < count {
        let word: UInt64 = generator.next()
        withUnsafeBytes(of: word) { bytes.append(contentsOf: $0) }
    }
    return Array(bytes.prefix(count))
}

/// A release refused before its evidence was looked at: the status and the audit reason.
struct ReleaseRefusal: Error {
    let status: StatusCode
    let reason: String
    /// The AK's digest, when the evidence got as far as one.
    var ak: [UInt8]? = nil
    init(_ status: StatusCode, _ reason: String, ak: [UInt8]? = nil) {
        self.status = status
        self.reason = reason
        self.ak = ak
    }
}

/// A release whose evidence passed: the challenge it consumed, the claims it bound, the policy it passed.
struct VerifiedRelease {
    let challenge: Challenge
    let claims: JoinClaims
    let policy: MeasurementPolicy
}

/// An audit record's fields for a release decision: challenge, node, disk, role, AK, and why.
struct ReleaseDetail {
    var fields: [(key: String, value: String)] = []

    mutating func add(_ key: String, _ value: String?) {
        if let value { fields.append((key, value)) }
    }
}

extension KeydService {
    // MARK: Boot key, challenges, join evidence

    /// `bootKey.get`: the boot public key (routine for trustd).
    func answerBootKey(identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        audit(.request(.bootKeyGet), granted: true, status: .ok, peer: identity.auditPeer, detail: [])
        return AnswerFrame.encode(
            answering: .bootKeyGet,
            sequence: sequence,
            status: .ok,
            BootKeyAnswer(publicKey: release.bootKey.publicKey).write
        )
    }

    /// `challenge.issue`: a fresh single-use challenge valid for the policy's lifetime.
    func issueChallenge(_ purpose: ChallengePurpose, identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        let lifetime = trust.policy?.challengeLifetimeSeconds ?? MeasurementPolicy.defaultChallengeLifetimeSeconds
        let idBytes = randomBytes(16)
        let nonce = randomBytes(32)
        guard let id = ChallengeID(idBytes) else { preconditionFailure("a 16-byte challenge ID") }
        release.challenges.issue(
            id: id,
            nonce: nonce,
            purpose: purpose,
            now: MonotonicClock.nowNanoseconds(),
            lifetime: UInt64(lifetime) * 1_000_000_000
        )
        // Routine: counted into the next audit.summary; its use is what the log records.
        audit(.request(.challengeIssue), granted: true, status: .ok, peer: identity.auditPeer, detail: [])
        return AnswerFrame.encode(
            answering: .challengeIssue,
            sequence: sequence,
            status: .ok,
            ChallengeAnswer(challengeID: idBytes, nonce: nonce, lifetimeSeconds: UInt32(lifetime)).write
        )
    }

    /// The UUID of the configured state disk after its header check, or the disk refusal.
    private func stateDiskUUID() -> Result<DiskUUID, DiskOutcomeError> {
        var uuid: DiskUUID?
        let (_, outcome) = onDevice("", exclusive: false) { device in
            switch stateDisk.checkedHeader(device: device) {
            case .success(let checked):
                uuid = checked.uuid
                return DiskOutcome(status: .ok, uuid: checked.uuid)
            case .failure(let error):
                return error.outcome
            }
        }
        guard let uuid else { return .failure(DiskOutcomeError(outcome)) }
        return .success(uuid)
    }

    /// `joinEvidence.issue`: a quote whose qualifying data keyd computes over the request's fields, its
    /// own boot key and its own state disk's UUID. Granted issues are routine; refusals are audited.
    func issueJoinEvidence(_ request: JoinEvidenceRequest, identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        func refuse(_ status: StatusCode, _ reason: String) -> [UInt8] {
            audit(
                .request(.joinEvidenceIssue),
                granted: false,
                status: status,
                peer: identity.auditPeer,
                detail: [("nodeName", request.nodeName), ("reason", reason)]
            )
            return AnswerFrame.encodeStatus(answering: .joinEvidenceIssue, sequence: sequence, status: status)
        }
        guard let tpm, tpm.available else { return refuse(.tpmUnavailable, "keyd has no TPM") }
        let diskUUID: DiskUUID
        switch stateDiskUUID() {
        case .success(let uuid): diskUUID = uuid
        case .failure(let error):
            return refuse(error.outcome.status, error.outcome.reason ?? "state disk refused")
        }
        let claims: JoinClaims
        do {
            claims = try JoinClaims(
                nonce: request.nonce,
                certificateKeyHash: request.certificateKeyHash,
                bootPublicKey: release.bootKey.publicKey,
                diskUUID: diskUUID,
                role: request.role,
                nodeName: try KubernetesNodeName(validating: request.nodeName)
            )
        } catch {
            return refuse(.invalidArgument, error.message)
        }
        switch tpm.joinEvidence(
            joinBinding: JoinBinding.qualifyingData(claims),
            certificateKeyHash: request.certificateKeyHash
        ) {
        case .success(let document):
            release.remember(AttestedJoin(diskUUID: diskUUID, role: request.role, nodeName: claims.nodeName))
            audit(
                .request(.joinEvidenceIssue),
                granted: true,
                status: .ok,
                peer: identity.auditPeer,
                detail: [("nodeName", request.nodeName), ("diskUUID", diskUUID.text)]
            )
            let answer = JoinEvidenceAnswer(
                document: document,
                bootPublicKey: release.bootKey.publicKey,
                diskUUID: diskUUID.text
            )
            return AnswerFrame.encode(
                answering: .joinEvidenceIssue,
                sequence: sequence,
                status: .ok,
                capacity: document.count + 128,
                answer.write
            )
        case .failure(let refusal):
            return refuse(refusal.status, refusal.reason)
        }
    }

    // MARK: Release

    /// Takes challenge `bytes` out of the table for a release: it is used up whatever follows.
    /// Only a challenge of one of `purposes` serves: join and rejoin for `key.release` and
    /// `compat.release`, dataKey for `dataKey.release`; init challenges serve none of them.
    private func consumeChallenge(
        _ bytes: [UInt8],
        purposes: Set<ChallengePurpose>
    ) -> Result<Challenge, ReleaseRefusal> {
        guard let id = ChallengeID(bytes) else {
            return .failure(ReleaseRefusal(.invalidArgument, "challenge ID is not 16 bytes"))
        }
        switch release.challenges.consume(id, now: MonotonicClock.nowNanoseconds()) {
        case .success(let challenge):
            guard purposes.contains(challenge.purpose) else {
                return .failure(
                    ReleaseRefusal(
                        .invalidArgument,
                        "challenge \(id) was issued for \(challenge.purpose), not for this release"
                    )
                )
            }
            return .success(challenge)
        case .failure(let refusal):
            return .failure(ReleaseRefusal(refusal.status, "challenge \(id): \(refusal.reason)"))
        }
    }

    /// Audits a release decision (one record: challenge, node, disk, role, AK, verdict, reason) and
    /// answers a refusal with `status`; never a key byte in either.
    func auditRelease(
        _ kind: RequestKind,
        status: StatusCode,
        detail: ReleaseDetail,
        identity: ConnectionIdentity
    ) {
        if status != .ok {
            let node = detail.fields.first { $0.key == "nodeName" }?.value ?? ""
            Log.warning(
                "Key release refused",
                ["request": kind.description, "status": status.description, "node": node]
            )
        }
        audit(.request(kind), granted: status == .ok, status: status, peer: identity.auditPeer, detail: detail.fields)
    }

    /// The request's fields for the audit record, before anything is checked.
    func releaseDetail(
        challengeID: [UInt8],
        diskUUID: String,
        role: NodeRole,
        nodeName: String
    ) -> ReleaseDetail {
        var detail = ReleaseDetail()
        detail.add("challengeID", ChallengeID(challengeID)?.description ?? "invalid")
        detail.add("nodeName", nodeName)
        detail.add("diskUUID", diskUUID)
        detail.add("role", role == .controlPlane ? "control-plane" : "worker")
        return detail
    }

    /// Audits a release refused with `status` and `reason` (and the AK, when known) and answers it.
    func refuseRelease(
        _ kind: RequestKind,
        _ status: StatusCode,
        _ reason: String,
        ak: [UInt8]?,
        detail: ReleaseDetail,
        identity: ConnectionIdentity,
        sequence: UInt32
    ) -> [UInt8] {
        var detail = detail
        detail.add("akDigest", ak.map(lowercaseHex))
        detail.add("reason", reason)
        auditRelease(kind, status: status, detail: detail, identity: identity)
        return AnswerFrame.encodeStatus(answering: kind, sequence: sequence, status: status)
    }

    /// The first two checks of every release: the challenge (consumed here, whatever follows) and a
    /// policy in force; the refusal as a failure.
    private func startRelease(
        challengeID: [UInt8],
        purposes: Set<ChallengePurpose> = [.join, .rejoin]
    ) -> Result<(Challenge, MeasurementPolicy), ReleaseRefusal> {
        consumeChallenge(challengeID, purposes: purposes).flatMap { challenge in
            guard let policy = trust.policy else {
                return .failure(ReleaseRefusal(.policyMissing, "keyd holds no measurement policy"))
            }
            return .success((challenge, policy))
        }
    }

    /// The checks `key.release` and `dataKey.release` share, in PROTOCOL.md's order: the challenge (one
    /// of `purposes`; consumed here), a policy in force, the request's fields and `checkFields`' own, the
    /// evidence against the policy with the join binding, the revocation lists. Adds the AK, policy
    /// version and insecure AK trust to `detail`.
    func verifyRelease(
        _ request: some AttestedReleaseFields,
        purposes: Set<ChallengePurpose>,
        at now: Date,
        detail: inout ReleaseDetail,
        checkFields: () -> String? = { nil }
    ) -> Result<VerifiedRelease, ReleaseRefusal> {
        let (challenge, policy): (Challenge, MeasurementPolicy)
        switch startRelease(challengeID: request.challengeID, purposes: purposes) {
        case .success(let started): (challenge, policy) = started
        case .failure(let refusal): return .failure(refusal)
        }
        let claims: JoinClaims
        do {
            claims = try JoinClaims(
                nonce: challenge.nonce,
                certificateKeyHash: request.certificateKeyHash,
                bootPublicKey: request.bootPublicKey,
                diskUUID: try DiskUUID(validating: request.diskUUID),
                role: request.role,
                nodeName: try KubernetesNodeName(validating: request.nodeName)
            )
        } catch {
            return .failure(ReleaseRefusal(.invalidArgument, error.message))
        }
        if let problem = checkFields() { return .failure(ReleaseRefusal(.invalidArgument, problem)) }
        let verdict = KeyRelease.decide(evidence: request.evidence, claims: claims, policy: policy, at: now)
        switch verdict {
        case .refused(let status, let reason, let ak):
            return .failure(ReleaseRefusal(status, reason, ak: ak))
        case .granted(let ak, _):
            detail.add("akDigest", lowercaseHex(ak))
        }
        detail.add("policyVersion", "\(policy.version)")
        if verdict.usedInsecureAKTrust {
            detail.add("insecureTrustAnyAK", "true")
            Log.warning("Release granted under insecureTrustAnyAK (development only)", ["node": request.nodeName])
        }
        return .success(VerifiedRelease(challenge: challenge, claims: claims, policy: policy))
    }

    /// `key.release`: the challenge, then the evidence against the policy (``KeyRelease/decide``), then
    /// the keys derived from the KEK and sealed to the boot key bound in the evidence.
    func releaseKeys(_ request: KeyReleaseRequest, identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        var detail = releaseDetail(
            challengeID: request.challengeID,
            diskUUID: request.diskUUID,
            role: request.role,
            nodeName: request.nodeName
        )
        func refuse(_ status: StatusCode, _ reason: String, ak: [UInt8]? = nil) -> [UInt8] {
            refuseRelease(.keyRelease, status, reason, ak: ak, detail: detail, identity: identity, sequence: sequence)
        }
        let now = Date()
        let verified: VerifiedRelease
        switch verifyRelease(request, purposes: [.join, .rejoin], at: now, detail: &detail) {
        case .success(let value): verified = value
        case .failure(let refusal): return refuse(refusal.status, refusal.reason, ak: refusal.ak)
        }
        let (challenge, claims) = (verified.challenge, verified.claims)
        var certificate: [UInt8] = []
        if !request.kubeletCSR.isEmpty {
            guard let authority = settings.kubeletCA else {
                return refuse(.invalidArgument, "a kubelet CSR was sent but no Kubernetes CA is configured", ak: nil)
            }
            do {
                certificate = try authority.signKubeletCSR(request.kubeletCSR, nodeName: claims.nodeName, now: now)
            } catch {
                return refuse(.invalidArgument, error.message)
            }
            detail.add("kubeletCertificate", "issued")
        }
        let binding: EnvelopeBinding
        let envelope: [UInt8]
        do {
            binding = try EnvelopeBinding(
                purpose: challenge.purpose == .rejoin ? .rejoin : .join,
                challengeID: request.challengeID,
                diskUUID: claims.diskUUID,
                role: claims.role,
                nodeName: claims.nodeName
            )
            // The phase (holdingKEK) guarantees a KEK; the guard keeps the invariant local.
            guard let keys = kek?.releasedKeys(for: claims.diskUUID, includeKEK: claims.role == .controlPlane) else {
                return refuse(.kekAbsent, "keyd holds no KEK")
            }
            envelope = try KeyEnvelope.seal(keys, binding: binding, to: request.bootPublicKey)
        } catch {
            return refuse(.invalidArgument, error.message)
        }
        detail.add("purpose", binding.purpose == .rejoin ? "rejoin" : "join")
        auditRelease(.keyRelease, status: .ok, detail: detail, identity: identity)
        let answer = KeyReleaseAnswer(envelope: envelope, kubeletCertificate: certificate)
        return AnswerFrame.encode(
            answering: .keyRelease,
            sequence: sequence,
            status: .ok,
            capacity: envelope.count + certificate.count + 64,
            answer.write
        )
    }

    /// `compat.release` (Constellation compatibility only): the same checks on Constellation's
    /// evidence, then the keys in plain. Every use is audited as a compatibility release.
    func releaseCompatibilityKeys(
        _ request: CompatReleaseRequest,
        identity: ConnectionIdentity,
        sequence: UInt32
    ) -> [UInt8] {
        // `perform` answers `unsupported` before this unless `constellation-compatibility` is on.
        var detail = releaseDetail(
            challengeID: request.challengeID,
            diskUUID: request.diskUUID,
            role: request.role,
            nodeName: request.nodeName
        )
        detail.add("compatibility", "keys released in plain to trustd")
        func refuse(_ status: StatusCode, _ reason: String, ak: [UInt8]? = nil) -> [UInt8] {
            refuseRelease(
                .compatRelease,
                status,
                reason,
                ak: ak,
                detail: detail,
                identity: identity,
                sequence: sequence
            )
        }
        let (challenge, policy): (Challenge, MeasurementPolicy)
        switch startRelease(challengeID: request.challengeID) {
        case .success(let started): (challenge, policy) = started
        case .failure(let refusal): return refuse(refusal.status, refusal.reason)
        }
        let diskUUID: DiskUUID
        do {
            diskUUID = try DiskUUID(validating: request.diskUUID)
            _ = try KubernetesNodeName(validating: request.nodeName)
            guard request.certificateKeyHash.count == 32 else {
                return refuse(.invalidArgument, "certificateKeyHash is \(request.certificateKeyHash.count) bytes")
            }
        } catch {
            return refuse(.invalidArgument, error.message)
        }
        let verdict = KeyRelease.decideCompatibility(
            evidence: request.evidence,
            nonce: challenge.nonce,
            certificateKeyHash: request.certificateKeyHash,
            diskUUID: diskUUID,
            policy: policy,
            at: Date()
        )
        switch verdict {
        case .refused(let status, let reason, let ak):
            return refuse(status, reason, ak: ak)
        case .granted(let ak, _):
            detail.add("akDigest", lowercaseHex(ak))
            detail.add("policyVersion", "\(policy.version)")
        }
        guard let keys = kek?.releasedKeys(for: diskUUID, includeKEK: request.role == .controlPlane) else {
            return refuse(.kekAbsent, "keyd holds no KEK")
        }
        auditRelease(.compatRelease, status: .ok, detail: detail, identity: identity)
        return AnswerFrame.encode(answering: .compatRelease, sequence: sequence, status: .ok) { w in
            keys.writeCompatibilityAnswer(&w)
        }
    }

    // MARK: Envelopes and init

    /// Marks PCR 15 with `clusterID` unless this boot already did; the refusal, if the TPM failed.
    func markCluster(_ clusterID: [UInt8]) -> TPMRefusal? {
        guard !release.clusterMarked else { return nil }
        guard let tpm else { return TPMRefusal(status: .tpmUnavailable, reason: "keyd has no TPM") }
        switch tpm.markClusterID(clusterID) {
        case .success:
            release.clusterMarked = true
            return nil
        case .failure(let refusal):
            return refusal
        }
    }

    /// Unlocks the configured state disk with an envelope's `key` when its header names `uuid`.
    private func unlockStateDisk(expecting uuid: DiskUUID, key: borrowing SecretBytes) -> DiskOutcome {
        let (_, outcome) = onDevice("") { device in
            switch stateDisk.checkedHeader(device: device) {
            case .failure(let error):
                return error.outcome
            case .success(let checked) where checked.uuid != uuid:
                return .refused(.envelopeRejected, "the state disk is \(checked.uuid), not \(uuid)", uuid: checked.uuid)
            case .success(let checked):
                return bindAndOpen(device, checked: checked, key: key)
            }
        }
        return outcome
    }

    /// Unlocks the checked state disk with `key`: a disk this boot formatted is first re-keyed from its
    /// first-boot passphrase (``StateDisk/bind``), then it is opened under the configured mapping.
    private func bindAndOpen(_ device: DiskDevice, checked: CheckedHeader, key: borrowing SecretBytes) -> DiskOutcome {
        var checked = checked
        if stateDisk.holdsFirstBootKey(checked.uuid) {
            let bound = stateDisk.bind(device: device, checked: checked, newKey: key)
            guard bound.status == .ok else { return bound }
            // The re-key rewrote the header; open checks the one it now holds.
            switch stateDisk.checkedHeader(device: device) {
            case .success(let value): checked = value
            case .failure(let error): return error.outcome
            }
        }
        return stateDisk.open(device: device, mappingName: settings.stateDiskMapping, checked: checked, key: key)
    }

    /// Audits a refused `envelope.accept` or `init.accept` with `reason`, gives its once-per-boot use
    /// back (a refusal does not use it up), and answers `status`.
    private func refuseOncePerBoot(
        _ kind: RequestKind,
        _ status: StatusCode,
        _ reason: String,
        detail: ReleaseDetail,
        identity: ConnectionIdentity,
        sequence: UInt32
    ) -> [UInt8] {
        refundOnce(kind)
        audit(
            .request(kind),
            granted: false,
            status: status,
            peer: identity.auditPeer,
            detail: detail.fields + [("reason", reason)]
        )
        return AnswerFrame.encodeStatus(answering: kind, sequence: sequence, status: status)
    }

    /// `envelope.accept`: opens the envelope with the boot key, checks that it names this keyd's disk
    /// and a role and node keyd attested this boot, then unlocks the state disk, imports a control
    /// plane's KEK (sealed before PCR 15 changes) and marks PCR 15 with the cluster ID.
    func acceptEnvelope(
        _ purpose: EnvelopePurpose,
        envelope: [UInt8],
        identity: ConnectionIdentity,
        sequence: UInt32
    ) -> [UInt8] {
        let started = MonotonicClock.nowNanoseconds()
        var detail = ReleaseDetail()
        detail.add("purpose", purpose == .rejoin ? "rejoin" : "join")
        func refuse(_ status: StatusCode, _ reason: String) -> [UInt8] {
            refuseOncePerBoot(.envelopeAccept, status, reason, detail: detail, identity: identity, sequence: sequence)
        }
        let opened: OpenedEnvelope
        do {
            opened = try KeyEnvelope.open(envelope, with: release.bootKey)
        } catch {
            return refuse(.envelopeRejected, error.message)
        }
        let binding = opened.binding
        detail.add("challengeID", lowercaseHex(binding.challengeID))
        detail.add("nodeName", binding.nodeName.text)
        detail.add("diskUUID", binding.diskUUID.text)
        detail.add("role", binding.role == .controlPlane ? "control-plane" : "worker")
        guard binding.purpose == purpose else {
            return refuse(.envelopeRejected, "the envelope is for \(binding.purpose), not \(purpose)")
        }
        guard release.attested(binding.diskUUID, binding.role, binding.nodeName) else {
            return refuse(.envelopeRejected, "this keyd attested no join for this disk, role and node name this boot")
        }
        guard
            auditDurably(
                .request(.envelopeAccept),
                granted: true,
                status: .ok,
                peer: identity.auditPeer,
                detail: detail.fields + [("step", "opened; unlocking the state disk")]
            )
        else {
            refundOnce(.envelopeAccept)
            return AnswerFrame.encodeStatus(answering: .envelopeAccept, sequence: sequence, status: .auditFailure)
        }
        let clusterID = opened.keys.clusterID
        let outcome = unlockStateDisk(expecting: binding.diskUUID, key: opened.keys.diskKey)
        guard outcome.status == .ok else {
            return refuse(outcome.status, outcome.reason ?? "state disk refused")
        }
        var holdsKEK = false
        if let clusterKEK = opened.keys.clusterKEK?.copy() {
            kek = consume clusterKEK
            phase = .holdingKEK
            holdsKEK = true
            sealImportedKEK(identity: identity)
        }
        // PCR 15 changes only after the KEK is sealed (the sealing policy leaves PCR 15 out anyway).
        if let refusal = markCluster(clusterID) {
            audit(
                .request(.envelopeAccept),
                granted: false,
                status: refusal.status,
                peer: identity.auditPeer,
                detail: detail.fields + [("reason", "PCR 15 not marked: \(refusal.reason)")]
            )
            return AnswerFrame.encodeStatus(answering: .envelopeAccept, sequence: sequence, status: refusal.status)
        }
        audit(
            .request(.envelopeAccept),
            granted: true,
            status: .ok,
            peer: identity.auditPeer,
            detail: detail.fields + [
                ("step", "done"), ("activated", "\(outcome.activated)"), ("holdsKEK", "\(holdsKEK)"),
                ("clusterMarked", "true"),
            ]
        )
        let microseconds = (MonotonicClock.nowNanoseconds() - started) / 1000
        Log.notice(
            "Envelope accepted",
            [
                "node": binding.nodeName.text, "holdsKEK": "\(holdsKEK)", "activated": "\(outcome.activated)",
                "duration.us": "\(microseconds)",
            ]
        )
        let answer = EnvelopeAcceptAnswer(
            diskOpened: true,
            activated: outcome.activated,
            holdsKEK: holdsKEK,
            clusterID: clusterID
        )
        return AnswerFrame.encode(answering: .envelopeAccept, sequence: sequence, status: .ok, answer.write)
    }

    /// `init.accept`: the operator's key and first policy (signature checked), the init envelope
    /// opened with the boot key; then the key pinned and the policy stored, the KEK imported and
    /// sealed, the state disk bound or opened, PCR 15 marked.
    func acceptInit(_ request: InitAcceptRequest, identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        var detail = ReleaseDetail()
        func refuse(_ status: StatusCode, _ reason: String) -> [UInt8] {
            refuseOncePerBoot(.initAccept, status, reason, detail: detail, identity: identity, sequence: sequence)
        }
        let operatorKey: OperatorKey
        let signed: SignedPolicy
        let policy: MeasurementPolicy
        do {
            operatorKey = try OperatorKey(decoding: request.operatorKey)
            detail.add("operatorKey", lowercaseHex(operatorKey.digest))
            signed = try SignedPolicy(decoding: request.signedPolicy)
            policy = try signed.verified(by: operatorKey, above: nil)
        } catch {
            return refuse(.policyRejected, error.message)
        }
        detail.add("policyVersion", "\(policy.version)")
        detail.add("policyDigest", lowercaseHex(signed.digest))
        if let pinned = trust.operatorKey, pinned != operatorKey {
            return refuse(.policyRejected, "another operator key is pinned (\(lowercaseHex(pinned.digest)))")
        }
        // Recovery sends the policy in force or a newer one, never an older one the operator also signed.
        if let current = trust.policy, let currentSigned = trust.signedPolicy,
            policy.version < current.version || (policy.version == current.version && signed != currentSigned)
        {
            return refuse(
                .policyRejected,
                "policy version \(policy.version) is not the one in force (\(current.version)) or newer"
            )
        }
        let imported: KeyEncryptionKey
        do {
            imported = try InitEnvelope.open(
                request.envelope,
                with: release.bootKey,
                operatorKey: request.operatorKey,
                signedPolicy: request.signedPolicy
            )
        } catch {
            return refuse(.envelopeRejected, error.message)
        }
        guard
            auditDurably(
                .request(.initAccept),
                granted: true,
                status: .ok,
                peer: identity.auditPeer,
                detail: detail.fields
            )
        else {
            refundOnce(.initAccept)
            return AnswerFrame.encodeStatus(answering: .initAccept, sequence: sequence, status: .auditFailure)
        }
        do {
            try trust.replace(operatorKey: operatorKey, signedPolicy: signed, policy: policy)
        } catch {
            return refuse(.internal, "trust state not stored: \(error)")
        }
        let clusterID = imported.clusterID
        kek = consume imported
        phase = .holdingKEK
        sealImportedKEK(identity: identity)
        var diskDetail: [(key: String, value: String)] = []
        var diskStatus = StatusCode.ok
        if stateDisk.configuredDevice != nil {
            // The disk key derived from the KEK just imported, for the UUID of the header checked here.
            let (_, outcome) = onDevice("") { device in
                withDiskKey(device: device) { checked, key in bindAndOpen(device, checked: checked, key: key) }
            }
            diskStatus = outcome.status
            diskDetail = [("disk.status", outcome.status.description), ("disk.activated", "\(outcome.activated)")]
            if let reason = outcome.reason { diskDetail.append(("disk.reason", reason)) }
        }
        let marked = markCluster(clusterID)
        let status = diskStatus != .ok ? diskStatus : marked?.status ?? .ok
        audit(
            .request(.initAccept),
            granted: status == .ok,
            status: status,
            peer: identity.auditPeer,
            detail: detail.fields + diskDetail + [("clusterMarked", "\(marked == nil)")]
                + (marked.map { [("reason", "PCR 15 not marked: \($0.reason)")] } ?? [])
        )
        Log.notice("Cluster initialized", ["policy.version": "\(policy.version)", "status": status.description])
        // keyd holds the KEK either way; a disk or TPM status tells the operator what is left to do
        // (`disk.bind`/`disk.open` by the admin), since init.accept cannot be sent again this boot.
        guard status == .ok else {
            return AnswerFrame.encodeStatus(answering: .initAccept, sequence: sequence, status: status)
        }
        return AnswerFrame.encode(
            answering: .initAccept,
            sequence: sequence,
            status: .ok,
            InitAcceptAnswer(clusterID: clusterID).write
        )
    }

    // MARK: Signed policy

    /// `policy.set`: a policy signed by the pinned operator key with a higher version.
    func setPolicy(_ bytes: [UInt8], identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        var detail: [(key: String, value: String)] = [("previousVersion", "\(trust.policy?.version ?? 0)")]
        func refuse(_ status: StatusCode, _ reason: String) -> [UInt8] {
            audit(
                .request(.policySet),
                granted: false,
                status: status,
                peer: identity.auditPeer,
                detail: detail + [("reason", reason)]
            )
            return AnswerFrame.encodeStatus(answering: .policySet, sequence: sequence, status: status)
        }
        guard let operatorKey = trust.operatorKey else {
            return refuse(.policyRejected, "no operator key is pinned")
        }
        let signed: SignedPolicy
        let policy: MeasurementPolicy
        do {
            signed = try SignedPolicy(decoding: bytes)
            policy = try signed.verified(by: operatorKey, above: trust.policy?.version)
        } catch {
            return refuse(.policyRejected, "\(error.code): \(error.message)")
        }
        detail += [("version", "\(policy.version)"), ("digest", lowercaseHex(signed.digest))]
        guard auditDurably(.request(.policySet), granted: true, status: .ok, peer: identity.auditPeer, detail: detail)
        else {
            return AnswerFrame.encodeStatus(answering: .policySet, sequence: sequence, status: .auditFailure)
        }
        do {
            try trust.replace(operatorKey: operatorKey, signedPolicy: signed, policy: policy)
        } catch {
            return refuse(.internal, "trust state not stored: \(error)")
        }
        Log.notice("Measurement policy set", ["policy.version": "\(policy.version)"])
        return AnswerFrame.encodeStatus(answering: .policySet, sequence: sequence, status: .ok)
    }

    /// `policy.get`: the signed policy in force and the pinned key, as stored.
    func getPolicy(sequence: UInt32) -> [UInt8] {
        let answer = PolicyGetAnswer(
            signedPolicy: trust.signedPolicy?.encoded ?? [],
            operatorKey: trust.operatorKey?.encoded ?? []
        )
        return AnswerFrame.encode(answering: .policyGet, sequence: sequence, status: .ok, answer.write)
    }

    /// `operatorKey.pin`: pins the operator key once, before any KEK.
    func pinOperatorKey(_ bytes: [UInt8], identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        func refuse(_ status: StatusCode, _ reason: String) -> [UInt8] {
            audit(
                .request(.operatorKeyPin),
                granted: false,
                status: status,
                peer: identity.auditPeer,
                detail: [("reason", reason)]
            )
            return AnswerFrame.encodeStatus(answering: .operatorKeyPin, sequence: sequence, status: status)
        }
        if let pinned = trust.operatorKey {
            return refuse(.policyRejected, "an operator key is pinned already (\(lowercaseHex(pinned.digest)))")
        }
        let key: OperatorKey
        do {
            key = try OperatorKey(decoding: bytes)
        } catch {
            return refuse(.invalidArgument, error.message)
        }
        let detail = [("operatorKey", lowercaseHex(key.digest)), ("algorithm", "\(key.algorithm)")]
        guard
            auditDurably(
                .request(.operatorKeyPin),
                granted: true,
                status: .ok,
                peer: identity.auditPeer,
                detail: detail
            )
        else {
            return AnswerFrame.encodeStatus(answering: .operatorKeyPin, sequence: sequence, status: .auditFailure)
        }
        do {
            try trust.replace(operatorKey: key, signedPolicy: nil, policy: nil)
        } catch {
            return refuse(.internal, "trust state not stored: \(error)")
        }
        Log.notice("Operator key pinned", ["key": key.description])
        return AnswerFrame.encodeStatus(answering: .operatorKeyPin, sequence: sequence, status: .ok)
    }

    /// Records what the trust state's check at start found, when it refused the stored state.
    func auditTrustCheck() {
        guard let problem = trust.startProblem else { return }
        Log.error("Trust state refused at start; keyd holds no operator key or policy", ["reason": problem])
        audit(.trustCheck, granted: false, status: .stateRejected, peer: keydIdentity, detail: [("reason", problem)])
    }
}
