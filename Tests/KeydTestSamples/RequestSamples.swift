import KeydProtocol

/// One well-formed request of each kind (paths point at nothing: the table, not the disk, is tested).
public enum RequestSamples {
    /// A request of `kind` with plausible fields.
    public static func request(_ kind: RequestKind) -> Request {
        let nonce = [UInt8](repeating: 1, count: 32)
        switch kind {
        case .hello: return .hello(minVersion: 1, maxVersion: 1)
        case .status: return .status
        case .bootKeyGet: return .bootKeyGet
        case .evidenceIssue:
            return .evidenceIssue(EvidenceRequest(variant: .native, nonce: nonce, userDataDigest: nonce))
        case .challengeIssue: return .challengeIssue(.join)
        case .keyRelease:
            return .keyRelease(
                KeyReleaseRequest(
                    challengeID: [UInt8](repeating: 2, count: 16),
                    evidence: [1],
                    certificateKeyHash: nonce,
                    bootPublicKey: nonce,
                    diskUUID: "00000000-0000-0000-0000-000000000000",
                    role: .worker
                )
            )
        case .envelopeAccept: return .envelopeAccept(.join, envelope: [1])
        case .initAccept: return .initAccept(InitAcceptRequest(envelope: [1], operatorKey: [1], signedPolicy: [1]))
        case .joinEvidenceIssue:
            return .joinEvidenceIssue(
                JoinEvidenceRequest(nonce: nonce, certificateKeyHash: nonce, role: .worker, nodeName: "node-1")
            )
        case .compatRelease:
            return .compatRelease(
                CompatReleaseRequest(
                    challengeID: [UInt8](repeating: 2, count: 16),
                    evidence: [1],
                    certificateKeyHash: nonce,
                    diskUUID: "00000000-0000-0000-0000-000000000000",
                    role: .worker,
                    nodeName: "node-1"
                )
            )
        case .dataKeyRelease:
            return .dataKeyRelease(
                DataKeyReleaseRequest(
                    challengeID: [UInt8](repeating: 2, count: 16),
                    evidence: [1],
                    certificateKeyHash: nonce,
                    bootPublicKey: nonce,
                    diskUUID: "00000000-0000-0000-0000-000000000000",
                    role: .worker,
                    nodeName: "node-1",
                    dataKeyID: "k8s-secrets",
                    length: 32
                )
            )
        case .dataKeyOpen: return .dataKeyOpen(DataKeyOpenRequest(dataKeyID: "k8s-secrets", length: 32, envelope: [1]))
        case .diskInspect: return .diskInspect(device: "/nonexistent/disk.img")
        case .diskFormat: return .diskFormat(device: "/nonexistent/disk.img")
        case .diskBind: return .diskBind(device: "/nonexistent/disk.img")
        case .diskOpen: return .diskOpen(device: "/nonexistent/disk.img", mappingName: "state")
        case .diskClose: return .diskClose(mappingName: "state")
        case .diskReset: return .diskReset(device: "/nonexistent/disk.img")
        case .kekImport: return .status  // travels by position: InProcessKeyd.importKEK
        case .kekLock: return .kekLock
        case .auditRead: return .auditRead(firstRecord: 0, maxRecords: 1)
        case .auditVerify: return .auditVerify
        case .tpmStatus: return .tpmStatus
        case .tpmEvidence: return .tpmEvidence(EvidenceRequest(variant: .native, nonce: nonce, userDataDigest: nonce))
        case .policySet: return .policySet(signedPolicy: [1])
        case .policyGet: return .policyGet
        case .operatorKeyPin: return .operatorKeyPin(operatorKey: [1])
        }
    }
}
