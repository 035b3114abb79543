import KeydCore
import KeydPlatform
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// A TPM request keyd refused: the status to answer and the reason for the log and audit record.
struct TPMRefusal: Error {
    /// The answer status (`tpmUnavailable`, `tpmFailure`, `internal`).
    let status: StatusCode
    /// What happened; never key material.
    let reason: String
}

/// keyd's TPM: the one ESAPI context (on keyd's one thread), the attestation key, the firmware
/// event log and the sealed KEK file. keyd starts without it when the TPM cannot be opened, and
/// says so in `tpm.status`, the audit log and every TPM answer (`tpmUnavailable`).
final class TPMService {
    /// The PCR that marks a node with its cluster ID (CONSTELLATION-WIRE.md).
    static let clusterIDPCR = 15
    /// The file that holds the sealed KEK.
    static let sealedKEKName = "kek.sealed"

    /// The configured TCTI.
    let tcti: String
    /// The PCRs quotes cover.
    let selection: PCRSelection
    /// The PCRs the sealed KEK's and audit key's policies bind: `selection` without PCR 15, which keyd
    /// itself extends with the cluster ID after it sealed (a restart in the same boot still unseals).
    let sealingSelection: PCRSelection
    /// The firmware event log read at start (empty when the file does not exist).
    let eventLog: [UInt8]
    /// Where the event log came from, or nil when none was found.
    let eventLogPath: String?
    private let device: TPMDevice?
    private let key: TPMAttestationKey?
    /// Why keyd has no TPM, or nil.
    let unavailableReason: String?
    /// The state directory that holds `kek.sealed`.
    private let state: StateDirectory
    /// The owner persistent handle of the sealed KEK's wrapping key.
    let kekHandle: UInt32
    /// The owner persistent handle of the audit chain's sealed HMAC key.
    let auditKeyHandle: UInt32
    /// The owner NV index of the audit record counter.
    let auditCounterIndex: UInt32
    /// The NV counter numbering changes of the trust state.
    let trustCounterIndex: UInt32
    /// The KEK at rest.
    private(set) var sealedState: SealedKEKStatus = .none
    /// Time the start-up unseal took, in milliseconds.
    private(set) var unsealMilliseconds: Double?
    /// Evidence documents issued since start.
    private(set) var evidenceIssued: UInt64 = 0

    /// Opens the TPM and loads or creates the attestation key; records the reason instead of failing.
    init(configuration: KeydConfiguration, tcti: String, state: StateDirectory) {
        self.tcti = tcti
        selection = PCRSelection(configuration.tpmPCRs) ?? .all
        sealingSelection = PCRSelection(selection.indices.filter { $0 != Self.clusterIDPCR }) ?? selection
        self.state = state
        kekHandle = configuration.tpmKEKHandle
        auditKeyHandle = configuration.tpmAuditKeyHandle
        auditCounterIndex = configuration.tpmAuditCounterIndex
        trustCounterIndex = configuration.tpmTrustCounterIndex
        if let log = try? readWholeFileIfPresent(path: configuration.tpmEventLog, limit: Limits.maxEventLog) {
            eventLog = log
            eventLogPath = configuration.tpmEventLog
        } else {
            eventLog = []
            eventLogPath = nil
        }
        let algorithm = TPMKeyAlgorithm(rawValue: configuration.tpmAKAlgorithm) ?? .eccP256
        do {
            let opened = try TPMDevice(tcti: tcti)
            key = try opened.attestationKey(persistentHandle: configuration.tpmAKHandle, algorithm: algorithm)
            device = opened
            unavailableReason = nil
        } catch {
            device = nil
            key = nil
            unavailableReason = "\(error)"
        }
        if (try? state.contains(Self.sealedKEKName)) == true { sealedState = .sealed }
    }

    /// Whether keyd has a working TPM and attestation key.
    var available: Bool { device != nil }

    /// The attestation key's facts for the start-up log and audit record.
    var keySummary: [(key: String, value: String)] {
        guard let key else { return [("tpm.available", "false")] }
        return [
            ("tpm.tcti", tcti), ("tpm.ak.algorithm", key.algorithm.rawValue),
            ("tpm.ak.handle", "0x" + String(key.persistentHandle, radix: 16)),
            ("tpm.ak.name", lowercaseHex(key.name)), ("tpm.ak.created", "\(key.created)"),
        ]
    }

    // MARK: Evidence

    /// A quote over the configured PCRs bound to `request`'s nonce and user-data digest, as the
    /// requested document. The qualifying data is computed here; callers never choose quote bytes.
    func evidence(_ request: EvidenceRequest) -> Result<[UInt8], TPMRefusal> {
        let qualifyingData: [UInt8]
        switch request.variant {
        case .native:
            qualifyingData = EvidenceBinding.nativeQualifyingData(
                nonce: request.nonce,
                userDataDigest: request.userDataDigest
            )
        case .constellationQEMUVTPM:
            qualifyingData = EvidenceBinding.constellationQualifyingData(
                nonce: request.nonce,
                userData: request.userDataDigest
            )
        }
        return quoteDocument(request.variant, qualifyingData: qualifyingData, userDataDigest: request.userDataDigest)
    }

    /// Join evidence: a native document whose quote carries `joinBinding` (``JoinBinding/qualifyingData(_:)``,
    /// computed by keyd over its own boot key and state disk) and whose user-data field is `certificateKeyHash`.
    func joinEvidence(joinBinding: [UInt8], certificateKeyHash: [UInt8]) -> Result<[UInt8], TPMRefusal> {
        quoteDocument(.native, qualifyingData: joinBinding, userDataDigest: certificateKeyHash)
    }

    /// A quote over the configured PCRs carrying `qualifyingData`, as a document of `variant`.
    private func quoteDocument(
        _ variant: EvidenceVariant,
        qualifyingData: [UInt8],
        userDataDigest: [UInt8]
    ) -> Result<[UInt8], TPMRefusal> {
        guard let device, let key else {
            return .failure(TPMRefusal(status: .tpmUnavailable, reason: unavailableReason ?? "no TPM"))
        }
        do {
            // The values are read after the quote and must hash to the quote's own PCR digest; an extend
            // in between makes them disagree, so quote again (an extend is rare; three tries are plenty).
            for _ in 0..<3 {
                let quote = try device.quote(key: key, qualifyingData: qualifyingData, selection: selection)
                let values = try device.readPCRs(selection)
                let pcrs = selection.indices.map { (index: $0, value: values[$0] ?? []) }
                guard Self.quotedPCRDigest(quote.attest) == EvidenceBinding.pcrDigest(pcrs.map(\.value)) else {
                    continue
                }
                evidenceIssued &+= 1
                let document: [UInt8]
                switch variant {
                case .native:
                    document =
                        NativeEvidenceDocument(
                            akPublic: key.publicArea,
                            attest: quote.attest,
                            signature: quote.signature,
                            pcrs: pcrs.map { (UInt8($0.index), $0.value) },
                            userDataDigest: userDataDigest,
                            eventLog: eventLog
                        ).encoded
                case .constellationQEMUVTPM:
                    document = ConstellationVTPMDocument.encode(
                        akPublic: key.publicArea,
                        attest: quote.attest,
                        signature: quote.signature,
                        pcrs: pcrs,
                        eventLog: eventLog,
                        userData: userDataDigest
                    )
                }
                guard document.count <= Limits.maxEvidenceDocument else {
                    return .failure(
                        TPMRefusal(
                            status: .internal,
                            reason: "document of \(document.count) bytes exceeds \(Limits.maxEvidenceDocument)"
                        )
                    )
                }
                return .success(document)
            }
            return .failure(TPMRefusal(status: .tpmFailure, reason: "PCRs kept changing during the quote"))
        } catch {
            return .failure(TPMRefusal(status: .tpmFailure, reason: "\(error)"))
        }
    }

    /// The pcrDigest of a quote's TPMS_ATTEST: its last field, a TPM2B of 32 bytes for SHA-256.
    static func quotedPCRDigest(_ attest: [UInt8]) -> [UInt8]? {
        guard attest.count >= 34, attest[attest.count - 34] == 0, attest[attest.count - 33] == 32 else { return nil }
        return Array(attest.suffix(32))
    }

    /// Marks the node with its cluster ID: one TPM2_PCR_Event of the 32-byte ID into PCR 15, so that
    /// PCR 15 = SHA-256(0^32 ‖ SHA-256(clusterID)) on a fresh boot. Only the init, join and rejoin
    /// flows call this; no request extends a PCR with caller-chosen bytes.
    func markClusterID(_ clusterID: [UInt8]) -> Result<Void, TPMRefusal> {
        precondition(clusterID.count == 32, "cluster ID of \(clusterID.count) bytes")
        guard let device else {
            return .failure(TPMRefusal(status: .tpmUnavailable, reason: unavailableReason ?? "no TPM"))
        }
        do {
            // Once per boot, even across keyd restarts: PCR 15 is zero before the mark and
            // SHA-256(0^32 ‖ SHA-256(clusterID)) after it; any other value was not made by this flow.
            let marked = KeyDerivation.markedClusterPCR(clusterID: clusterID)
            let selection = PCRSelection([Self.clusterIDPCR]) ?? .all
            let current = try device.readPCRs(selection)[Self.clusterIDPCR] ?? []
            if current == marked { return .success(()) }
            guard current == [UInt8](repeating: 0, count: 32) else {
                return .failure(
                    TPMRefusal(
                        status: .tpmFailure,
                        reason: "PCR 15 was extended with something other than this cluster ID"
                    )
                )
            }
            try device.pcrEvent(index: Self.clusterIDPCR, data: clusterID)
            return .success(())
        } catch {
            return .failure(TPMRefusal(status: .tpmFailure, reason: "\(error)"))
        }
    }

    // MARK: Sealed KEK

    /// Seals `kek` to this TPM and writes it atomically to the state directory; the new state.
    func seal(_ kek: borrowing KeyEncryptionKey) -> Result<SealedKEKStatus, TPMRefusal> {
        guard let device else {
            sealedState = .notSealed
            return .failure(TPMRefusal(status: .tpmUnavailable, reason: unavailableReason ?? "no TPM"))
        }
        let wrappingKey = SecretBytes(randomByteCount: SealedKEKFile.wrappingKeyByteCount)
        do {
            let name = try wrappingKey.withUnsafeBytes {
                try device.sealPersistent($0, selection: sealingSelection, handle: kekHandle)
            }
            let file = try SealedKEKFile(
                sealing: kek,
                wrappingKey: wrappingKey,
                pcrs: sealingSelection.indices,
                handle: kekHandle,
                objectName: name
            )
            try state.writeAtomically(Self.sealedKEKName, bytes: file.encoded, mode: 0o600)
            sealedState = .sealed
            return .success(.sealed)
        } catch {
            sealedState = .notSealed
            return .failure(TPMRefusal(status: .tpmFailure, reason: "\(error)"))
        }
    }

    /// Unseals the KEK stored at start and hands it to `keep`; returns why it did not unseal, or nil
    /// (unsealed, or nothing stored: ``sealedState`` tells which).
    func unsealAtStart(_ keep: (consuming KeyEncryptionKey) -> Void) -> String? {
        let stored: [UInt8]
        do {
            guard let bytes = try state.read(Self.sealedKEKName, limit: SealedKEKFile.maximumLength) else { return nil }
            stored = bytes
        } catch {
            sealedState = .unsealFailed
            return "\(error)"
        }
        guard let device else {
            sealedState = .unsealFailed
            return "no TPM: \(unavailableReason ?? "")"
        }
        let started = MonotonicClock.nowNanoseconds()
        do {
            let file = try SealedKEKFile(decoding: stored)
            guard let pcrs = PCRSelection(file.pcrs) else { throw TPMRefusal(status: .internal, reason: "PCR list") }
            guard file.handle == kekHandle else {
                throw TPMRefusal(
                    status: .tpmFailure,
                    reason:
                        "sealed at handle 0x\(String(file.handle, radix: 16)), configured 0x\(String(kekHandle, radix: 16))"
                )
            }
            guard try device.persistentName(handle: kekHandle) != nil else {
                throw TPMRefusal(
                    status: .tpmFailure,
                    reason:
                        "no wrapping key at persistent handle 0x\(String(kekHandle, radix: 16)): the KEK was locked (kek.lock evicts it) or the TPM was cleared"
                )
            }
            try device.unsealPersistent(handle: kekHandle, expectedName: file.objectName, selection: pcrs) { bytes in
                let wrappingKey = SecretBytes(copying: bytes)
                keep(try file.open(wrappingKey: wrappingKey))
            }
            unsealMilliseconds = Double(MonotonicClock.nowNanoseconds() - started) / 1e6
            sealedState = .unsealed
            return nil
        } catch let error as SystemError {
            sealedState = .unsealFailed
            if let code = error.tpmResponseCode, TPMResponse.isPolicyFailure(code) {
                return "the PCR policy does not hold (PCR values changed since sealing): \(error)"
            }
            return "\(error)"
        } catch let refusal as TPMRefusal {
            sealedState = .unsealFailed
            return refusal.reason
        } catch {
            sealedState = .unsealFailed
            return "\(error)"
        }
    }

    /// Removes the KEK at rest (`kek.lock`): evicts the wrapping key from the TPM, so that no copy of
    /// `kek.sealed` opens again, then removes the file. A restart must not bring a locked KEK back.
    func forgetSealedKEK() -> Result<Void, SystemError> {
        // Both steps run whatever the other did: each alone already keeps a stored copy from opening.
        var failure: SystemError?
        do {
            if let device { try device.evictPersistent(handle: kekHandle) }
        } catch {
            failure =
                error as? SystemError
                ?? .errno(EIO, call: "evictPersistent", context: "0x" + String(kekHandle, radix: 16))
        }
        do {
            try state.remove(Self.sealedKEKName)
        } catch {
            failure = failure ?? (error as? SystemError ?? .errno(EIO, call: "unlinkat", context: Self.sealedKEKName))
        }
        if let failure { return .failure(failure) }
        sealedState = .none
        return .success(())
    }

    // MARK: Audit anchor

    /// The audit chain's link: HMAC under the key sealed at ``auditKeyHandle``, unsealed here; when
    /// there is none, or it no longer unseals, a new key replaces it and `newKeyReason` says why.
    /// Without a TPM the link is unkeyed.
    func auditLink() -> (link: AuditLink, newKeyReason: String?) {
        guard let device else { return (.unkeyed, nil) }
        var reason = "no audit key in the TPM yet"
        do {
            if let name = try device.persistentName(handle: auditKeyHandle) {
                let link = try device.unsealPersistent(
                    handle: auditKeyHandle,
                    expectedName: name,
                    selection: sealingSelection
                ) { key in
                    AuditLink.keyed(keyBytes: key, keyName: name)
                }
                return (link, nil)
            }
        } catch let error as SystemError {
            reason =
                if let code = error.tpmResponseCode, TPMResponse.isPolicyFailure(code) {
                    "the audit key no longer unseals: PCR values changed since it was sealed"
                } else {
                    "the audit key did not unseal: \(error)"
                }
        } catch {
            reason = "the audit key did not unseal: \(error)"
        }
        do {
            let key = SecretBytes(randomByteCount: 32)
            let name = try key.withUnsafeBytes {
                try device.sealPersistent($0, selection: sealingSelection, handle: auditKeyHandle)
            }
            return (key.withUnsafeBytes { AuditLink.keyed(keyBytes: $0, keyName: name) }, reason)
        } catch {
            return (.unkeyed, reason + "; a new one could not be sealed either: \(error)")
        }
    }

    /// The audit counter's value, or nil when it is not defined yet.
    func auditCounter() throws -> UInt64? {
        guard let device else { return nil }
        return try device.readCounter(index: auditCounterIndex)
    }

    /// The audit counter's value, defining the counter first when it does not exist.
    func definedAuditCounter() throws -> UInt64 {
        guard let device else { throw TPMRefusal(status: .tpmUnavailable, reason: unavailableReason ?? "no TPM") }
        if let value = try device.readCounter(index: auditCounterIndex) { return value }
        return try device.defineCounter(index: auditCounterIndex)
    }

    /// Counts one audit record that is on disk.
    func countAuditRecord() throws {
        guard let device else { throw TPMRefusal(status: .tpmUnavailable, reason: unavailableReason ?? "no TPM") }
        try device.incrementCounter(index: auditCounterIndex)
    }

    // MARK: Trust state counter

    /// The trust counter's value, or nil when it is not defined (or there is no TPM).
    func trustCounter() throws -> UInt64? {
        guard let device else { return nil }
        return try device.readCounter(index: trustCounterIndex)
    }

    /// The value the trust counter holds once the next change is counted, defining the counter first
    /// when it does not exist.
    func nextTrustGeneration() throws -> UInt64 {
        guard let device else { throw TPMRefusal(status: .tpmUnavailable, reason: unavailableReason ?? "no TPM") }
        let value = try device.readCounter(index: trustCounterIndex) ?? device.defineCounter(index: trustCounterIndex)
        return value + 1
    }

    /// Counts one change of the trust state that is on disk.
    func countTrustChange() throws {
        guard let device else { throw TPMRefusal(status: .tpmUnavailable, reason: unavailableReason ?? "no TPM") }
        try device.incrementCounter(index: trustCounterIndex)
    }

    // MARK: Status

    /// The `tpm.status` report: one JSON object (PROTOCOL.md).
    func statusReport() -> String {
        var members = ["\"tcti\":\(AuditJSON.quoted(tcti))", "\"available\":\(available)"]
        if let unavailableReason { members.append("\"unavailableReason\":\(AuditJSON.quoted(unavailableReason))") }
        if let device, let key {
            let spki: [UInt8] =
                switch key.algorithm {
                case .eccP256: SubjectPublicKeyInfo.der(p256Point: key.publicKey)
                case .rsa2048: SubjectPublicKeyInfo.der(rsaModulus: key.publicKey, exponent: key.rsaExponent)
                }
            members.append(
                "\"attestationKey\":{\"algorithm\":\"\(key.algorithm.rawValue)\",\"handle\":\"0x\(String(key.persistentHandle, radix: 16))\","
                    + "\"name\":\"\(lowercaseHex(key.name))\",\"publicKeyPEM\":\(AuditJSON.quoted(SubjectPublicKeyInfo.pem(spki)))}"
            )
            if let values = try? device.readPCRs(selection) {
                let pcrs = selection.indices.map { "\"\($0)\":\"\(lowercaseHex(values[$0] ?? []))\"" }.joined(
                    separator: ","
                )
                members.append("\"pcrs\":{\"sha256\":{\(pcrs)}}")
            }
            if let counts = try? device.loadedHandleCounts() {
                members.append("\"transientObjects\":\(counts.transientObjects),\"loadedSessions\":\(counts.sessions)")
            }
        }
        members.append("\"sealedKEK\":\"\(sealedState.description)\"")
        if let unsealMilliseconds { members.append("\"unsealMicroseconds\":\(Int(unsealMilliseconds * 1000))") }
        members.append(
            "\"eventLog\":\(eventLogPath.map { "{\"path\":\(AuditJSON.quoted($0)),\"bytes\":\(eventLog.count)}" } ?? "null")"
        )
        members.append("\"evidenceIssued\":\(evidenceIssued)")
        return "{" + members.joined(separator: ",") + "}"
    }
}
