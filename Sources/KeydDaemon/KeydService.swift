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
    /// The audit log's name in the state directory.
    static let auditLogName = "audit.log"
    /// Largest audit log `audit.read`/`audit.verify` will load.
    static let auditReadLimit = 64 << 20

    var phase: Phase = .awaitingKEK
    private(set) var usedThisBoot: Set<RequestKind> = []
    var kek: KeyEncryptionKey?
    private var chain: AuditChain
    /// The state directory, open for the daemon's lifetime; every state file is opened through it.
    let state: StateDirectory
    private let auditFile: AppendOnlyFile
    private let auditIntactAtStart: Bool
    /// The LUKS2 state-disk operations and the first-boot passphrases they keep in memory.
    let stateDisk: StateDisk
    /// The TPM (attached after start-up; a keyd without one answers TPM requests `tpmUnavailable`).
    var tpm: TPMService?
    private let startNanoseconds = MonotonicClock.nowNanoseconds()
    let keydIdentity = AuditPeer(
        peerClass: .keyd,
        uid: UInt32(geteuid()),
        gid: UInt32(getegid()),
        pid: getpid()
    )
    /// Requests dispatched so far.
    private(set) var requestsServed: UInt64 = 0
    /// Open connections, kept current by the event loop.
    var connectionCount = 0

    /// Opens (or creates) the state directory and its audit log and resumes the chain;
    /// `diskAllowInitialize` lets `disk.format` initialize a device without a LUKS2 header, and
    /// `stateDiskDevice` is the device an empty device field names (trustd's only one).
    init(
        stateDirectory path: String,
        diskAllowInitialize: Bool = false,
        diskProfile: DiskProfile = .asterism,
        stateDiskDevice: String? = nil
    ) throws(KeydError) {
        do {
            state = try StateDirectory(path: path, creatingWith: 0o700)
            auditFile = try state.openLog(Self.auditLogName, mode: 0o600)
            let existing = try auditFile.readAll(limit: Self.auditReadLimit)
            let (chain, verification) = AuditChain.resume(from: existing)
            self.chain = chain
            auditIntactAtStart = verification.intact
            if !verification.intact {
                Log.error(
                    "Audit log chain is broken",
                    [
                        "audit.path": auditFile.path, "audit.first_bad": "\(verification.firstBadRecord)",
                        "audit.problem": "\(verification.problem)",
                    ]
                )
            }
            if verification.completeByteCount != existing.count {
                // A torn last line (crash mid-write) is cut so the next record starts on its own line.
                try auditFile.truncate(to: verification.completeByteCount)
                Log.warning("Audit log ended in a torn record; cut it", ["audit.path": auditFile.path])
            }
        } catch {
            throw .startup("audit log in \(path): \(error)")
        }
        stateDisk = StateDisk(
            state: state,
            allowInitialize: diskAllowInitialize,
            formatProfile: diskProfile,
            configuredDevice: stateDiskDevice
        )
    }

    /// Appends one record and fsyncs it; false when it could not be made durable.
    @discardableResult
    func audit(
        _ event: AuditEvent,
        granted: Bool,
        status: StatusCode,
        peer: AuditPeer,
        detail: [(key: String, value: String)] = []
    ) -> Bool {
        let (line, next) = chain.appending(
            event: event,
            decision: granted ? .granted : .refused,
            status: status.description,
            peer: peer,
            detail: detail,
            time: WallClock.nowSeconds()
        )
        do {
            try auditFile.append(line)
            try auditFile.sync()
            chain = next
            return true
        } catch {
            Log.error("Audit record not written", ["audit.event": event.description, "error": "\(error)"])
            return false
        }
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

    /// Records keyd's own start or stop.
    func auditLifecycle(_ event: AuditEvent, detail: [(key: String, value: String)]) {
        audit(event, granted: true, status: .ok, peer: keydIdentity, detail: detail)
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
        case .bootKeyGet, .challengeIssue, .keyRelease, .envelopeAccept, .initAccept, .policySet:
            // Sealed release and the signed policy come with their issue; `unsupported` uses nothing up.
            return AnswerFrame.encodeStatus(answering: kind, sequence: sequence, status: .unsupported)
        case .status:
            return serving(kind) {
                let answer = StatusAnswer(
                    protocolVersion: Limits.supportedVersions.upperBound,
                    phase: phase,
                    peerClass: identity.peerClass,
                    uptimeSeconds: (MonotonicClock.nowNanoseconds() - startNanoseconds) / 1_000_000_000,
                    requestsServed: requestsServed,
                    connections: UInt32(clamping: connectionCount),
                    auditRecords: chain.nextSequence,
                    auditHead: chain.headHash,
                    auditIntact: auditIntactAtStart,
                    keydVersion: Self.version,
                    tpmAvailable: tpm?.available ?? false,
                    sealedKEK: tpm?.sealedState ?? .none
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

    /// Runs `body` on the device a disk request names, opened and locked (``StateDisk/withDevice``):
    /// the configured state disk when `named` is empty (`diskMissing` when none is configured).
    /// Returns the path acted on, for the audit record, and the outcome.
    private func onDevice(
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
        guard audit(.request(.kekImport), granted: true, status: .ok, peer: identity.auditPeer, detail: lengths) else {
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
        if let tpm, case .failure(let error) = tpm.forgetSealedKEK() {
            Log.error("Sealed KEK not removed on lock", ["error": "\(error)"])
        }
        Log.notice(
            "KEK locked",
            ["peer.uid": "\(identity.credentials.uid)", "peer.pid": "\(identity.credentials.pid)"]
        )
        let recorded = audit(.request(.kekLock), granted: true, status: .ok, peer: identity.auditPeer)
        return AnswerFrame.encodeStatus(answering: .kekLock, sequence: sequence, status: recorded ? .ok : .auditFailure)
    }

    /// Reads the log file; nil (and a log line) when it cannot be read.
    private func loadAuditLog() -> [UInt8]? {
        do {
            return try auditFile.readAll(limit: Self.auditReadLimit)
        } catch {
            Log.error("Audit log unreadable", ["audit.path": auditFile.path, "error": "\(error)"])
            return nil
        }
    }

    private func readAudit(first: UInt64, maxRecords: UInt16, sequence: UInt32) -> [UInt8] {
        guard let log = loadAuditLog() else {
            return AnswerFrame.encodeStatus(answering: .auditRead, sequence: sequence, status: .internal)
        }
        var records: [String] = []
        var budget = Limits.maxFrameLength + Limits.lengthPrefixSize - AuditReadAnswer.overhead
        var index: UInt64 = 0
        var total: UInt64 = 0
        for line in log.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast() {
            defer { index += 1 }
            total += 1
            guard index >= first, records.count < Int(maxRecords) else { continue }
            var text = String(decoding: line, as: UTF8.self)
            let valid =
                line.count <= Limits.maxAuditRecord && !line.contains(where: { $0 < 0x20 || $0 == 0x7F })
                && String(validating: line, as: UTF8.self) != nil
            if !valid {
                text =
                    "{\"seq\":\(index),\"invalid\":\"record is not printable text of at most \(Limits.maxAuditRecord) bytes\"}"
            }
            let size = AuditReadAnswer.encodedSize(ofRecord: text.utf8.count)
            if size > budget {
                budget = 0
                continue
            }
            budget -= size
            records.append(text)
        }
        let answer = AuditReadAnswer(totalRecords: total, records: records)
        return AnswerFrame.encode(answering: .auditRead, sequence: sequence, status: .ok, answer.write)
    }

    private func verifyAudit(sequence: UInt32) -> [UInt8] {
        var verification: AuditVerification
        if let log = loadAuditLog() {
            verification = AuditVerifier.verify(log, expectedHead: (records: chain.nextSequence, hash: chain.headHash))
        } else {
            verification = .unreadable("audit log could not be read")
        }
        if verification.intact && verification.records > chain.nextSequence {
            // Lines keyd never wrote were appended after its head.
            verification.intact = false
            verification.problem = .edited
            verification.firstBadRecord = chain.nextSequence
        }
        let answer = AuditVerifyAnswer(
            intact: verification.intact,
            records: verification.records,
            firstBadRecord: verification.firstBadRecord,
            problem: verification.problem,
            headHash: verification.headHash.count == 32 ? verification.headHash : [UInt8](repeating: 0, count: 32)
        )
        return AnswerFrame.encode(answering: .auditVerify, sequence: sequence, status: .ok, answer.write)
    }

    /// Checks the header of `device`, derives its key from the KEK and lends both to `body`.
    private func withDiskKey(
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
        let recorded = audit(
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

    /// Zeroes the KEK and the first-boot passphrases at shutdown.
    func shutdown() {
        kek = nil
        stateDisk.forgetKeys()
    }
}

// MARK: - TPM

extension KeydService {
    /// Attaches the TPM after start-up and returns what was found, for the `keyd.start` record.
    func attach(_ tpm: TPMService) -> [(key: String, value: String)] {
        self.tpm = tpm
        if tpm.available {
            Log.info("TPM ready", ["tpm": tpm.keySummary.map { "\($0.key)=\($0.value)" }.joined(separator: " ")])
            return tpm.keySummary
        }
        Log.warning(
            "No TPM: evidence and sealing unavailable",
            ["tpm.tcti": tpm.tcti, "error": tpm.unavailableReason ?? ""]
        )
        return [("tpm.available", "false"), ("tpm.tcti", tpm.tcti), ("tpm.reason", tpm.unavailableReason ?? "")]
    }

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
                detail: [("pcrs", tpm.selection.indices.map(String.init).joined(separator: ","))]
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
            if kind == .tpmEvidence {
                audit(
                    .request(kind),
                    granted: true,
                    status: .ok,
                    peer: identity.auditPeer,
                    detail: [("variant", "\(request.variant.rawValue)"), ("bytes", "\(document.count)")]
                )
            }
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
