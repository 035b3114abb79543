import KeydCore
import KeydPlatform
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Who sent a request: the class decided at accept time and the raw credentials, for audit only.
struct ConnectionIdentity {
    /// Class from `PeerClassifier`; the only thing permission decisions look at.
    let peerClass: PeerClass
    /// `SO_PEERCRED` as read once at accept.
    let credentials: PeerCredentials

    /// The audit log's view of this peer.
    var auditPeer: AuditPeer {
        let auditClass: AuditPeerClass =
            switch peerClass {
            case .trustd: .trustd
            case .admin: .admin
            case .stranger: .stranger
            }
        return AuditPeer(peerClass: auditClass, uid: credentials.uid, gid: credentials.gid, pid: credentials.pid)
    }
}

/// keyd's state and the requests it performs: phase, KEK custody, audit log, counters.
///
/// Single-threaded: only the event loop calls it.
public final class KeydService {
    /// keyd's release version, reported by `status`.
    public static let version = "0.1.0"

    var phase: Phase = .awaitingKEK
    private(set) var usedThisBoot: Set<RequestKind> = []
    var kek: KeyEncryptionKey?
    /// The state directory, open for the daemon's lifetime; every state file is opened through it.
    let state: StateDirectory
    /// The audit log: a keyed chain in segment files, anchored in the TPM's counter.
    let auditTrail: AuditTrail
    /// What reaches the log: routine trustd requests counted, repeated refusals folded.
    private var coalescer = AuditCoalescer()
    /// The LUKS2 state-disk operations and the first-boot passphrases they keep in memory.
    let stateDisk: StateDisk
    /// The TPM (nil, or unavailable inside: keyd answers TPM requests `tpmUnavailable`).
    let tpm: TPMService?
    private let startNanoseconds = MonotonicClock.nowNanoseconds()
    let keydIdentity = AuditPeer(
        peerClass: .keyd,
        uid: UInt32(geteuid()),
        gid: UInt32(getegid()),
        pid: getpid()
    )
    /// The boot key, the challenges and what keyd attested this boot.
    let release: ReleaseState
    /// Sealed release's configuration.
    let settings: ReleaseSettings
    /// The pinned operator key and the policy in force.
    let trust: TrustStore
    /// Requests dispatched so far.
    private(set) var requestsServed: UInt64 = 0
    /// Open connections, kept current by the event loop.
    var connectionCount = 0

    /// Opens the audit log in `state` (checking it against the TPM's audit key and counter) and makes
    /// the service; `diskAllowInitialize` lets `disk.format` initialize a device without a LUKS2 header, and
    /// `stateDiskDevice` is the device an empty device field names (trustd's only one).
    init(
        state: StateDirectory,
        tpm: TPMService?,
        diskAllowInitialize: Bool = false,
        diskProfile: DiskProfile = .asterism,
        stateDiskDevice: String? = nil,
        settings: ReleaseSettings = ReleaseSettings()
    ) throws(KeydError) {
        self.state = state
        self.tpm = tpm
        self.settings = settings
        release = ReleaseState(challengeCapacity: settings.challengeCapacity)
        let keyd = keydIdentity
        do {
            auditTrail = try AuditTrail(state: state, tpm: tpm, keyd: keyd, now: WallClock.nowSeconds)
        } catch {
            throw .startup("audit log in \(state.path): \(error)")
        }
        trust = TrustStore(state: state, tpm: tpm, link: auditTrail.chain.link)
        stateDisk = StateDisk(
            state: state,
            allowInitialize: diskAllowInitialize,
            formatProfile: diskProfile,
            configuredDevice: stateDiskDevice
        )
    }

    /// Makes a service over a fresh state directory at `path` without a TPM (tests and tools).
    convenience init(
        stateDirectory path: String,
        diskAllowInitialize: Bool = false,
        stateDiskDevice: String? = nil,
        settings: ReleaseSettings = ReleaseSettings()
    ) throws(KeydError) {
        let state: StateDirectory
        do {
            state = try StateDirectory(path: path, creatingWith: 0o700)
        } catch {
            throw .startup("state directory \(path): \(error)")
        }
        try self.init(
            state: state,
            tpm: nil,
            diskAllowInitialize: diskAllowInitialize,
            stateDiskDevice: stateDiskDevice,
            settings: settings
        )
    }

    /// Whether the audit log passed its check at start.
    var auditIntactAtStart: Bool { auditTrail.startCheck.intact }

    /// Proposes one record: the coalescer decides whether it is written, counted or folded into a
    /// repeat. A record to write is staged for the next group commit: the event loop holds the answer
    /// of the request that staged it until ``commitAudit()`` made it durable.
    func audit(
        _ event: AuditEvent,
        granted: Bool,
        status: StatusCode,
        peer: AuditPeer,
        detail: [(key: String, value: String)] = []
    ) {
        let note = AuditNote(event: event, granted: granted, status: status, peer: peer, detail: detail)
        switch coalescer.disposition(of: note, now: MonotonicClock.nowNanoseconds()) {
        case .counted, .suppressed: return
        case .write: stage(note)
        }
    }

    /// Writes one record now (unless the coalescer counts it), with everything staged before it, for a
    /// request whose effect must not happen without its record (a KEK kept, a disk re-keyed): false
    /// when it could not be made durable.
    func auditDurably(
        _ event: AuditEvent,
        granted: Bool,
        status: StatusCode,
        peer: AuditPeer,
        detail: [(key: String, value: String)] = []
    ) -> Bool {
        audit(event, granted: granted, status: status, peer: peer, detail: detail)
        return commitAudit()
    }

    /// Stages `note` for the next group.
    private func stage(_ note: AuditNote) {
        auditTrail.stage(
            event: note.event,
            granted: note.granted,
            status: note.status,
            peer: note.peer,
            detail: note.detail,
            time: WallClock.nowSeconds()
        )
    }

    /// Makes the staged records durable as one group; false (a log line, and the group remembered as
    /// failed for the answers held on it) when they could not be.
    @discardableResult
    func commitAudit() -> Bool {
        guard auditTrail.stagedCount > 0 else { return true }
        let group = auditTrail.openGroup
        let count = auditTrail.stagedCount
        do {
            try auditTrail.commit()
            return true
        } catch {
            failedAuditGroups.insert(group)
            Log.error("Audit records not written", ["audit.records": "\(count)", "error": "\(error)"])
            return false
        }
    }

    /// Records staged for the next commit.
    var stagedAuditRecords: Int { auditTrail.stagedCount }
    /// The group records staged now belong to; groups below it are committed or failed.
    var openAuditGroup: UInt64 { auditTrail.openGroup }
    /// Groups whose commit failed, until the event loop answered the requests held on them.
    private(set) var failedAuditGroups: Set<UInt64> = []

    /// Whether `group` (below ``openAuditGroup``) failed to commit.
    func auditGroupFailed(_ group: UInt64) -> Bool { failedAuditGroups.contains(group) }

    /// Forgets failed groups once no held answer waits on them.
    func forgetFailedAuditGroups() { failedAuditGroups.removeAll(keepingCapacity: true) }

    /// trustd's routine requests counted since the last `audit.summary`, by kind.
    var routineCounts: [RequestKind: UInt64] { coalescer.pendingCounts }

    /// When the coalescer next has a record due (monotonic ns), for the event loop's poll timeout.
    var auditDeadline: UInt64? { coalescer.nextDeadline }

    /// Stages the summaries and repeat records that are due.
    func writeDueAuditRecords() {
        for note in coalescer.due(now: MonotonicClock.nowNanoseconds(), keyd: keydIdentity) { stage(note) }
    }

    /// Writes a session decision (violation, denial, wrong phase) to the audit log.
    func audit(_ note: SessionAudit, identity: ConnectionIdentity) {
        audit(
            note.event,
            granted: note.granted,
            status: note.status,
            peer: identity.auditPeer,
            detail: note.detail.map { (key: $0.key, value: $0.value) }
        )
    }

    /// Records keyd's own start or stop, durably.
    func auditLifecycle(_ event: AuditEvent, detail: [(key: String, value: String)]) {
        _ = auditDurably(event, granted: true, status: .ok, peer: keydIdentity, detail: detail)
    }

    /// Performs one dispatched request and returns its answer frame.
    ///
    /// This switch is keyd's request table beside ``PermissionTable``: every kind has its case and
    /// there is no `default`, so a kind added to the protocol does not compile until it is served
    /// here or explicitly answered `unsupported`. `body` is the frame body the request was decoded
    /// from; secret fields are copied from it straight into key storage (the event loop wipes it).
    func perform(_ frame: RequestFrame, body: UnsafeRawBufferPointer, identity: ConnectionIdentity) -> [UInt8] {
        let kind = frame.request.kind
        let sequence = frame.sequence
        switch frame.request {
        case .hello:
            preconditionFailure("hello is answered by the session machine and never dispatched")
        case .bootKeyGet:
            return serving(kind) { answerBootKey(identity: identity, sequence: sequence) }
        case .challengeIssue(let purpose):
            return serving(kind) { issueChallenge(purpose, identity: identity, sequence: sequence) }
        case .joinEvidenceIssue(let request):
            return serving(kind) { issueJoinEvidence(request, identity: identity, sequence: sequence) }
        case .keyRelease(let request):
            return serving(kind) { releaseKeys(request, identity: identity, sequence: sequence) }
        case .compatRelease(let request):
            guard settings.constellationCompatibility else {
                // Not served by this keyd's configuration: `unsupported` uses nothing up.
                return AnswerFrame.encodeStatus(answering: kind, sequence: sequence, status: .unsupported)
            }
            return serving(kind) { releaseCompatibilityKeys(request, identity: identity, sequence: sequence) }
        case .dataKeyRelease(let request):
            return serving(kind) { releaseDataKey(request, identity: identity, sequence: sequence) }
        case .dataKeyOpen(let request):
            return serving(kind) { openDataKey(request, identity: identity, sequence: sequence) }
        case .envelopeAccept(let purpose, let envelope):
            return serving(kind) { acceptEnvelope(purpose, envelope: envelope, identity: identity, sequence: sequence) }
        case .initAccept(let request):
            return serving(kind) { acceptInit(request, identity: identity, sequence: sequence) }
        case .policySet(let signedPolicy):
            return serving(kind) { setPolicy(signedPolicy, identity: identity, sequence: sequence) }
        case .policyGet:
            return serving(kind) { getPolicy(sequence: sequence) }
        case .operatorKeyPin(let operatorKey):
            return serving(kind) { pinOperatorKey(operatorKey, identity: identity, sequence: sequence) }
        case .status:
            return serving(kind) {
                let answer = StatusAnswer(
                    protocolVersion: Limits.supportedVersions.upperBound,
                    phase: phase,
                    peerClass: identity.peerClass,
                    uptimeSeconds: (MonotonicClock.nowNanoseconds() - startNanoseconds) / 1_000_000_000,
                    requestsServed: requestsServed,
                    connections: UInt32(clamping: connectionCount),
                    auditRecords: auditTrail.chain.nextSequence,
                    auditHead: auditTrail.chain.headMAC,
                    auditIntact: auditIntactAtStart,
                    keydVersion: Self.version,
                    tpmAvailable: tpm?.available ?? false,
                    sealedKEK: tpm?.sealedState ?? .none,
                    policyVersion: trust.policy?.version ?? 0,
                    policyDigest: trust.signedPolicy?.digest ?? [UInt8](repeating: 0, count: 32),
                    operatorKeyPinned: trust.operatorKey != nil
                )
                return AnswerFrame.encode(answering: kind, sequence: sequence, status: .ok, answer.write)
            }
        case .kekImport(let fields):
            return serving(kind) { importKEK(fields, body: body, identity: identity, sequence: sequence) }
        case .evidenceIssue(let request), .tpmEvidence(let request):
            return serving(kind) { issueEvidence(kind, request, identity: identity, sequence: sequence) }
        case .tpmStatus:
            return serving(kind) {
                let report = tpm?.statusReport() ?? "{\"available\":false}"
                return AnswerFrame.encode(
                    answering: kind,
                    sequence: sequence,
                    status: .ok,
                    TPMStatusAnswer(report: Array(report.utf8)).write
                )
            }
        case .kekLock:
            return serving(kind) { lockKEK(identity: identity, sequence: sequence) }
        case .auditRead(let first, let maxRecords):
            return serving(kind) { readAudit(first: first, maxRecords: maxRecords, sequence: sequence) }
        case .auditVerify:
            return serving(kind) { verifyAudit(sequence: sequence) }
        case .diskInspect(let device):
            return serving(kind) { inspectDisk(device, identity: identity, sequence: sequence) }
        case .diskFormat(let device):
            return serving(kind) {
                let (path, outcome) = onDevice(device) { stateDisk.format(device: $0) }
                return answerDisk(kind, device: path, outcome, identity: identity, sequence: sequence)
            }
        case .diskBind(let device):
            return serving(kind) {
                let (path, outcome) = onDevice(device) { opened in
                    withDiskKey(device: opened) { checked, key in
                        stateDisk.bind(device: opened, checked: checked, newKey: key)
                    }
                }
                return answerDisk(kind, device: path, outcome, identity: identity, sequence: sequence)
            }
        case .diskOpen(let device, let mappingName):
            return serving(kind) { openDisk(device, mappingName: mappingName, identity: identity, sequence: sequence) }
        case .diskClose(let mappingName):
            return serving(kind) {
                let outcome = stateDisk.closeMapping(mappingName)
                return answerDisk(
                    kind,
                    device: "/dev/mapper/" + mappingName,
                    outcome,
                    identity: identity,
                    sequence: sequence
                )
            }
        case .diskReset(let device):
            return serving(kind) {
                let (path, outcome) = onDevice(device) { stateDisk.markForReset(device: $0) }
                return answerDisk(kind, device: path, outcome, identity: identity, sequence: sequence)
            }
        }
    }

    /// Counts a request this keyd serves and spends a once-per-boot request, then answers it.
    private func serving(_ kind: RequestKind, _ answer: () -> [UInt8]) -> [UInt8] {
        requestsServed &+= 1
        if PermissionTable.permission(for: kind).once == .perBoot { usedThisBoot.insert(kind) }
        return answer()
    }

    /// Gives back a once-per-boot request whose use was refused: a refusal does not use it up.
    func refundOnce(_ kind: RequestKind) { usedThisBoot.remove(kind) }

    /// Runs `body` on the device a disk request names, opened and locked (``StateDisk/withDevice``):
    /// the configured state disk when `named` is empty (`diskMissing` when none is configured).
    /// Returns the path acted on, for the audit record, and the outcome.
    func onDevice(
        _ named: String,
        exclusive: Bool = true,
        _ body: (DiskDevice) -> DiskOutcome
    ) -> (path: String, outcome: DiskOutcome) {
        guard let path = DiskTarget.resolve(named, configured: stateDisk.configuredDevice) else {
            return ("", .refused(.diskMissing, "no state disk configured (state-disk-device)"))
        }
        return (path, stateDisk.withDevice(path, exclusive: exclusive, body))
    }

    /// `disk.inspect`: the header report under a shared device lock.
    private func inspectDisk(_ device: String, identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        let (path, outcome) = onDevice(device, exclusive: false) { stateDisk.inspect(device: $0) }
        return answerDisk(.diskInspect, device: path, outcome, identity: identity, sequence: sequence) { w in
            DiskInspectAnswer(report: Array((outcome.report ?? "").utf8)).write(&w)
        }
    }

    /// `disk.open`: checks the header, derives the key and opens (or verifies) the disk.
    private func openDisk(
        _ device: String,
        mappingName: String,
        identity: ConnectionIdentity,
        sequence: UInt32
    ) -> [UInt8] {
        let (path, outcome) = onDevice(device) { opened in
            withDiskKey(device: opened) { checked, key in
                stateDisk.open(device: opened, mappingName: mappingName, checked: checked, key: key)
            }
        }
        var detail: [(key: String, value: String)] = [("mappingName", mappingName)]
        if outcome.status == .ok { detail.append(("activated", "\(outcome.activated)")) }
        return answerDisk(.diskOpen, device: path, outcome, detail: detail, identity: identity, sequence: sequence) {
            w in
            DiskOpenAnswer(activated: outcome.activated).write(&w)
        }
    }

    private func importKEK(
        _ fields: KEKImportFields,
        body: UnsafeRawBufferPointer,
        identity: ConnectionIdentity,
        sequence: UInt32
    ) -> [UInt8] {
        func slice(_ field: SecretField) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: body[field.offset..<(field.offset + field.count)])
        }
        let lengths: [(key: String, value: String)] = [
            ("masterSecret.length", "\(fields.masterSecret.count)"), ("salt.length", "\(fields.salt.count)"),
        ]
        let imported: KeyEncryptionKey
        do {
            imported = try KeyEncryptionKey(
                masterSecret: SecretBytes(copying: slice(fields.masterSecret)),
                salt: SecretBytes(copying: slice(fields.salt))
            )
        } catch {
            audit(
                .request(.kekImport),
                granted: false,
                status: .invalidArgument,
                peer: identity.auditPeer,
                detail: lengths + [("reason", error.description)]
            )
            return AnswerFrame.encodeStatus(answering: .kekImport, sequence: sequence, status: .invalidArgument)
        }
        // The record is durable before the KEK is kept: no audit, no key.
        guard auditDurably(.request(.kekImport), granted: true, status: .ok, peer: identity.auditPeer, detail: lengths)
        else {
            return AnswerFrame.encodeStatus(answering: .kekImport, sequence: sequence, status: .auditFailure)
        }
        kek = consume imported
        phase = .holdingKEK
        Log.notice(
            "KEK imported",
            ["peer.uid": "\(identity.credentials.uid)", "peer.pid": "\(identity.credentials.pid)"]
        )
        sealImportedKEK(identity: identity)
        return AnswerFrame.encodeStatus(answering: .kekImport, sequence: sequence, status: .ok)
    }

    private func lockKEK(identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        // Zeroing a key is always allowed, even when the record cannot be written.
        kek = nil
        phase = .locked
        var detail: [(key: String, value: String)] = []
        var status = StatusCode.ok
        if let tpm, case .failure(let error) = tpm.forgetSealedKEK() {
            // The KEK is gone from memory; its sealed copy may still open at the next start: say so.
            Log.error("Sealed KEK not fully removed on lock", ["error": "\(error)"])
            detail.append(("reason", "sealed KEK not fully removed: \(error)"))
            status = .tpmFailure
        }
        Log.notice(
            "KEK locked",
            ["peer.uid": "\(identity.credentials.uid)", "peer.pid": "\(identity.credentials.pid)"]
        )
        let recorded = auditDurably(
            .request(.kekLock),
            granted: true,
            status: status,
            peer: identity.auditPeer,
            detail: detail
        )
        return AnswerFrame.encodeStatus(
            answering: .kekLock,
            sequence: sequence,
            status: recorded ? status : .auditFailure
        )
    }

    private func readAudit(first: UInt64, maxRecords: UInt16, sequence: UInt32) -> [UInt8] {
        // Staged records are part of the log the admin reads; a failed commit fails their own requests.
        commitAudit()
        let budget = Limits.maxFrameLength + Limits.lengthPrefixSize - AuditReadAnswer.overhead
        guard let (records, total) = auditTrail.read(first: first, maxRecords: Int(maxRecords), budget: budget) else {
            return AnswerFrame.encodeStatus(answering: .auditRead, sequence: sequence, status: .internal)
        }
        let answer = AuditReadAnswer(totalRecords: total, records: records)
        return AnswerFrame.encode(answering: .auditRead, sequence: sequence, status: .ok, answer.write)
    }

    private func verifyAudit(sequence: UInt32) -> [UInt8] {
        commitAudit()
        let verification = auditTrail.verify()
        let answer = AuditVerifyAnswer(
            intact: verification.intact,
            records: verification.records,
            firstBadRecord: verification.firstBadRecord,
            problem: verification.problem,
            headHash: verification.headMAC
        )
        return AnswerFrame.encode(answering: .auditVerify, sequence: sequence, status: .ok, answer.write)
    }

    /// Checks the header of `device`, derives its key from the KEK and lends both to `body`.
    func withDiskKey(
        device: DiskDevice,
        _ body: (CheckedHeader, borrowing SecretBytes) -> DiskOutcome
    ) -> DiskOutcome {
        let checked: CheckedHeader
        switch stateDisk.checkedHeader(device: device) {
        case .success(let value): checked = value
        case .failure(let error): return error.outcome
        }
        // The session machine dispatches bind and open in holdingKEK only; this guards the invariant.
        let info = KeyDerivation.diskKeyInfo(uuid: checked.uuid)
        guard let key = kek?.deriveKey(info: info, byteCount: StateDisk.keyByteCount) else {
            return .refused(.kekAbsent, "keyd holds no KEK", uuid: checked.uuid)
        }
        return body(checked, key)
    }

    /// Audits a disk outcome (device, uuid, status, reason; never a key) and encodes the answer;
    /// `payload` writes the answer of an `ok` outcome.
    private func answerDisk(
        _ kind: RequestKind,
        device: String,
        _ outcome: DiskOutcome,
        detail extra: [(key: String, value: String)] = [],
        identity: ConnectionIdentity,
        sequence: UInt32,
        payload: ((inout WireWriter) -> Void)? = nil
    ) -> [UInt8] {
        var detail: [(key: String, value: String)] = [("device", device)]
        if let uuid = outcome.uuid { detail.append(("uuid", uuid.text)) }
        detail += extra
        if let reason = outcome.reason { detail.append(("reason", reason)) }
        let recorded = auditDurably(
            .request(kind),
            granted: outcome.status == .ok,
            status: outcome.status,
            peer: identity.auditPeer,
            detail: detail
        )
        if outcome.status != .ok {
            Log.warning(
                "State-disk request refused",
                ["request": kind.description, "disk.device": device, "status": outcome.status.description]
            )
        }
        guard recorded || outcome.status != .ok else {
            return AnswerFrame.encodeStatus(answering: kind, sequence: sequence, status: .auditFailure)
        }
        if outcome.status == .ok, let payload {
            return AnswerFrame.encode(answering: kind, sequence: sequence, status: .ok, payload)
        }
        return AnswerFrame.encodeStatus(answering: kind, sequence: sequence, status: outcome.status)
    }

    /// Writes what the coalescer still holds, and zeroes the KEK and the first-boot passphrases at shutdown.
    func shutdown() {
        for note in coalescer.flush(now: MonotonicClock.nowNanoseconds(), keyd: keydIdentity) { stage(note) }
        commitAudit()
        kek = nil
        stateDisk.forgetKeys()
    }

    /// Records keyd's start: version and TPM facts, then what the audit log's check at start found.
    func auditStart(socketActivated: Bool) {
        var detail: [(key: String, value: String)] = [
            ("version", Self.version), ("socketActivated", "\(socketActivated)"),
        ]
        if let tpm {
            if tpm.available {
                Log.info("TPM ready", ["tpm": tpm.keySummary.map { "\($0.key)=\($0.value)" }.joined(separator: " ")])
                detail += tpm.keySummary
            } else {
                Log.warning(
                    "No TPM: evidence and sealing unavailable",
                    ["tpm.tcti": tpm.tcti, "error": tpm.unavailableReason ?? ""]
                )
                detail += [
                    ("tpm.available", "false"), ("tpm.tcti", tpm.tcti), ("tpm.reason", tpm.unavailableReason ?? ""),
                ]
            }
        }
        detail += [("audit.link", auditTrail.chain.link.name), ("audit.anchored", "\(auditTrail.anchored)")]
        audit(.keydStart, granted: true, status: .ok, peer: keydIdentity, detail: detail)
        for note in auditTrail.startNotes {
            audit(note.event, granted: note.granted, status: note.status, peer: keydIdentity, detail: note.detail)
        }
        commitAudit()
    }
}

// MARK: - TPM

extension KeydService {
    /// Unseals a stored KEK, which puts keyd in `holdingKEK`; a KEK that does not unseal leaves keyd
    /// in `awaitingKEK`, said in the log and the audit record.
    func unsealStoredKEK() {
        guard let tpm else { return }
        let reason = tpm.unsealAtStart { unsealed in
            kek = consume unsealed
            phase = .holdingKEK
        }
        if tpm.sealedState == .unsealed {
            let microseconds = Int((tpm.unsealMilliseconds ?? 0) * 1000)
            Log.notice("KEK unsealed from the TPM", ["duration.us": "\(microseconds)"])
            auditLifecycle(.kekUnseal, detail: [("durationMicroseconds", "\(microseconds)")])
            // The node holds its cluster's KEK again: PCR 15 names the cluster, as after init or join.
            if let clusterID = kek?.clusterID, let refusal = markCluster(clusterID) {
                Log.error("PCR 15 not marked with the cluster ID", ["reason": refusal.reason])
                audit(
                    .kekUnseal,
                    granted: false,
                    status: refusal.status,
                    peer: keydIdentity,
                    detail: [("reason", "PCR 15 not marked: \(refusal.reason)")]
                )
            }
        } else if let reason {
            Log.error("Sealed KEK did not unseal; starting without a KEK", ["reason": reason])
            audit(.kekUnseal, granted: false, status: .tpmFailure, peer: keydIdentity, detail: [("reason", reason)])
        }
    }

    /// Seals the KEK just imported; a KEK that cannot be sealed stays in memory only, and the audit
    /// record and `status` say so.
    func sealImportedKEK(identity: ConnectionIdentity) {
        guard let tpm, let outcome = kek?.sealed(by: tpm) else { return }
        switch outcome {
        case .success:
            audit(
                .kekSeal,
                granted: true,
                status: .ok,
                peer: identity.auditPeer,
                detail: [("pcrs", tpm.sealingSelection.indices.map(String.init).joined(separator: ","))]
            )
        case .failure(let refusal):
            Log.warning("KEK not sealed; held in memory only", ["reason": refusal.reason])
            audit(
                .kekSeal,
                granted: false,
                status: refusal.status,
                peer: identity.auditPeer,
                detail: [("reason", refusal.reason)]
            )
        }
    }

    /// `evidence.issue` (trustd) and `tpm.evidence` (admin): a quote document. Refusals are audited;
    /// trustd's routine evidence requests are counted in `tpm.status`, not audited one by one.
    func issueEvidence(
        _ kind: RequestKind,
        _ request: EvidenceRequest,
        identity: ConnectionIdentity,
        sequence: UInt32
    ) -> [UInt8] {
        guard let tpm else {
            return AnswerFrame.encodeStatus(answering: kind, sequence: sequence, status: .tpmUnavailable)
        }
        switch tpm.evidence(request) {
        case .success(let document):
            // trustd's evidence is routine: the coalescer counts it into the next audit.summary.
            audit(
                .request(kind),
                granted: true,
                status: .ok,
                peer: identity.auditPeer,
                detail: [("variant", "\(request.variant.rawValue)"), ("bytes", "\(document.count)")]
            )
            return AnswerFrame.encode(
                answering: kind,
                sequence: sequence,
                status: .ok,
                capacity: document.count + 32,
                EvidenceAnswer(document: document).write
            )
        case .failure(let refusal):
            Log.warning(
                "Evidence refused",
                ["request": kind.description, "status": refusal.status.description, "reason": refusal.reason]
            )
            audit(
                .request(kind),
                granted: false,
                status: refusal.status,
                peer: identity.auditPeer,
                detail: [("reason", refusal.reason)]
            )
            return AnswerFrame.encodeStatus(answering: kind, sequence: sequence, status: refusal.status)
        }
    }
}

extension KeyEncryptionKey {
    /// Seals this KEK with `tpm` (borrowed, so a held KEK can be sealed in place).
    borrowing func sealed(by tpm: TPMService) -> Result<SealedKEKStatus, TPMRefusal> { tpm.seal(self) }
}
