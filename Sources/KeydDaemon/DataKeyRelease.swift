import FoundationEssentials
import KeydCore
import KeydPlatform
import KeydProtocol

extension KeydService {
    /// `dataKey.release`: `key.release`'s checks on a challenge of purpose dataKey (``verifyRelease``),
    /// then the data key `HKDF(master, salt, "key-dek/" + id, length)` sealed to the boot key the
    /// evidence bound. One audit record per decision, with the ID and length, never the key.
    func releaseDataKey(_ request: DataKeyReleaseRequest, identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        var detail = releaseDetail(
            challengeID: request.challengeID,
            diskUUID: request.diskUUID,
            role: request.role,
            nodeName: request.nodeName
        )
        detail.add("dataKeyID", Self.auditedDataKeyID(request.dataKeyID))
        detail.add("length", "\(request.length)")
        func refuse(_ status: StatusCode, _ reason: String, ak: [UInt8]? = nil) -> [UInt8] {
            refuseRelease(
                .dataKeyRelease,
                status,
                reason,
                ak: ak,
                detail: detail,
                identity: identity,
                sequence: sequence
            )
        }
        var dataKeyID: DataKeyID?
        var length = 0
        let checked = verifyRelease(request, purposes: [.dataKey], at: Date(), detail: &detail) {
            do throws(CoreError) {
                dataKeyID = try DataKeyID(validating: request.dataKeyID)
                length = try DataKeyID.checkedLength(Int(request.length))
                return nil
            } catch {
                return error.message
            }
        }
        let verified: VerifiedRelease
        switch checked {
        case .success(let value): verified = value
        case .failure(let refusal): return refuse(refusal.status, refusal.reason, ak: refusal.ak)
        }
        guard let dataKeyID else { return refuse(.internal, "the data key ID was not checked") }
        let claims = verified.claims
        let envelope: [UInt8]
        do {
            let binding = try DataKeyBinding(
                challengeID: request.challengeID,
                diskUUID: claims.diskUUID,
                role: claims.role,
                nodeName: claims.nodeName,
                dataKeyID: dataKeyID,
                length: length
            )
            // The phase (holdingKEK) guarantees a KEK; the guard keeps the invariant local.
            guard let key = kek?.dataKey(id: dataKeyID, length: length) else {
                return refuse(.kekAbsent, "keyd holds no KEK")
            }
            envelope = try DataKeyEnvelope.seal(key, binding: binding, to: request.bootPublicKey)
        } catch {
            return refuse(.invalidArgument, error.message)
        }
        auditRelease(.dataKeyRelease, status: .ok, detail: detail, identity: identity)
        return AnswerFrame.encode(
            answering: .dataKeyRelease,
            sequence: sequence,
            status: .ok,
            capacity: envelope.count + 64,
            DataKeyReleaseAnswer(envelope: envelope).write
        )
    }

    /// `dataKey.open`: opens a data-key envelope with the boot key, requires it to bind the ID and length
    /// asked for and a disk, role and node name this keyd bound into join evidence this boot, and answers
    /// the data key. The one answer that hands trustd key bytes: a data key for the node's own KMS plugin,
    /// never the KEK, a disk key or the measurement secret (their envelopes never open here).
    func openDataKey(_ request: DataKeyOpenRequest, identity: ConnectionIdentity, sequence: UInt32) -> [UInt8] {
        var detail = ReleaseDetail()
        detail.add("dataKeyID", Self.auditedDataKeyID(request.dataKeyID))
        detail.add("length", "\(request.length)")
        func refuse(_ status: StatusCode, _ reason: String) -> [UInt8] {
            detail.add("reason", reason)
            auditRelease(.dataKeyOpen, status: status, detail: detail, identity: identity)
            return AnswerFrame.encodeStatus(answering: .dataKeyOpen, sequence: sequence, status: status)
        }
        let dataKeyID: DataKeyID
        let length: Int
        do {
            dataKeyID = try DataKeyID(validating: request.dataKeyID)
            length = try DataKeyID.checkedLength(Int(request.length))
        } catch {
            return refuse(.invalidArgument, error.message)
        }
        let opened: OpenedDataKey
        do {
            opened = try DataKeyEnvelope.open(request.envelope, with: release.bootKey)
        } catch {
            return refuse(.envelopeRejected, error.message)
        }
        let binding = opened.binding
        detail.add("challengeID", lowercaseHex(binding.challengeID))
        detail.add("nodeName", binding.nodeName.text)
        detail.add("diskUUID", binding.diskUUID.text)
        detail.add("role", binding.role == .controlPlane ? "control-plane" : "worker")
        guard binding.dataKeyID == dataKeyID, binding.length == length else {
            return refuse(
                .envelopeRejected,
                "the envelope is for data key \(binding.dataKeyID) of \(binding.length) bytes, not \(dataKeyID) of \(length)"
            )
        }
        guard release.attested(binding.diskUUID, binding.role, binding.nodeName) else {
            return refuse(.envelopeRejected, "this keyd attested no join for this disk, role and node name this boot")
        }
        auditRelease(.dataKeyOpen, status: .ok, detail: detail, identity: identity)
        return opened.key.withUnsafeBytes { key in
            AnswerFrame.encode(answering: .dataKeyOpen, sequence: sequence, status: .ok) { w in w.secret(key) }
        }
    }

    /// A data key ID for an audit record: the ID when valid, else a fixed word (an invalid one may hold
    /// anything trustd sent).
    static func auditedDataKeyID(_ text: String) -> String {
        (try? DataKeyID(validating: text))?.text ?? "invalid"
    }
}
