import KeydCore
import KeydPlatform
import KeydProtocol

/// What keyd trusts to decide releases: the pinned operator key and the signed measurement policy in
/// force, kept in `<state-dir>/trust.state` (``TrustStateFile``: MAC'd under the TPM-sealed audit key,
/// numbered by the TPM trust counter). Without a TPM keyd keeps both in memory only.
final class TrustStore {
    /// The file in the state directory.
    static let fileName = "trust.state"

    /// The pinned operator key.
    private(set) var operatorKey: OperatorKey?
    /// The signed policy in force, as accepted (its `encoded` form is what `policy.get` answers).
    private(set) var signedPolicy: SignedPolicy?
    /// The parsed policy in force.
    private(set) var policy: MeasurementPolicy?
    /// What the check at start found when the stored state was refused: the reason, for the audit log.
    let startProblem: String?

    private let state: StateDirectory
    private let tpm: TPMService?
    /// The MAC of the file, or nil when keyd cannot authenticate it (no TPM-sealed audit key).
    private let mac: (([UInt8]) -> [UInt8])?

    /// Loads the stored trust state, refusing a file the host made or put back; `link` is the audit
    /// chain's link, whose TPM-sealed key authenticates the file.
    init(state: StateDirectory, tpm: TPMService?, link: AuditLink) {
        self.state = state
        self.tpm = tpm
        if case .keyed = link, let tpm, tpm.available {
            mac = { link.mac($0[...]) }
        } else {
            mac = nil
        }
        guard let mac else {
            startProblem = nil
            return
        }
        do {
            let bytes = try state.read(Self.fileName, limit: TrustStateFile.maximumLength + 1)
            let file = try bytes.map { try TrustStateFile(decoding: $0, mac: mac) }
            switch TrustStateAnchor.compare(generation: file?.generation, counter: try tpm?.trustCounter()) {
            case .empty:
                startProblem = nil
            case .consistent:
                (operatorKey, signedPolicy, policy) = try Self.adopt(file)
                startProblem = nil
            case .lastChangeUncounted:
                try tpm?.countTrustChange()
                (operatorKey, signedPolicy, policy) = try Self.adopt(file)
                startProblem = nil
            case .rolledBack(let missing):
                startProblem =
                    "trust.state is \(missing) changes older than the TPM counter: an older copy was put back"
            case .removed:
                startProblem = "trust.state is missing but the TPM counter has counted changes: it was removed"
            case .counterBehind(let extra):
                startProblem =
                    "trust.state is \(extra) changes ahead of the TPM counter: another TPM, or its state rolled back"
            case .counterMissing:
                startProblem = "trust.state exists but the TPM trust counter does not: another TPM"
            }
        } catch {
            operatorKey = nil
            signedPolicy = nil
            policy = nil
            startProblem = "trust.state refused: \(error)"
        }
    }

    /// The key and policy of a file that passed its checks (none for a missing file).
    private static func adopt(
        _ file: TrustStateFile?
    ) throws -> (OperatorKey?, SignedPolicy?, MeasurementPolicy?) {
        guard let file else { return (nil, nil, nil) }
        let operatorKey = file.operatorKey.isEmpty ? nil : try OperatorKey(decoding: file.operatorKey)
        guard !file.signedPolicy.isEmpty else { return (operatorKey, nil, nil) }
        guard let operatorKey else { throw TrustStoreError("a policy without an operator key") }
        let signed = try SignedPolicy(decoding: file.signedPolicy)
        return (operatorKey, signed, try signed.verified(by: operatorKey, above: nil))
    }

    /// Whether the state survives a restart (a TPM authenticates and numbers it).
    var persistent: Bool { mac != nil }

    /// Makes `operatorKey` and `signedPolicy` (with its parsed `policy`) the trust state: written
    /// atomically and counted in the TPM before it is used, or kept in memory without a TPM.
    func replace(operatorKey: OperatorKey, signedPolicy: SignedPolicy?, policy: MeasurementPolicy?) throws {
        if let mac, let tpm {
            let generation = try tpm.nextTrustGeneration()
            let file = TrustStateFile(
                generation: generation,
                operatorKey: operatorKey.encoded,
                signedPolicy: signedPolicy?.encoded ?? []
            )
            try state.writeAtomically(Self.fileName, bytes: file.encoded(mac: mac), mode: 0o600)
            do {
                try tpm.countTrustChange()
            } catch {
                // The file is durable: the next start finds it one ahead and counts it.
                Log.error("Trust state change not counted in the TPM", ["error": "\(error)"])
            }
        }
        self.operatorKey = operatorKey
        self.signedPolicy = signedPolicy
        self.policy = policy
    }
}

/// A trust state that is inconsistent in itself.
struct TrustStoreError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
