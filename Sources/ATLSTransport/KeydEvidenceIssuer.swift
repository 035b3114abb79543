import Attestation
import KeydClient
import KeydProtocol

/// Evidence from keyd's TPM: `evidence.issue` on keyd's trustd socket (or `tpm.evidence` on the admin
/// socket for operator tools). keyd computes the qualifying data itself from the nonce and the user
/// data digest, so this process never chooses what the TPM signs. Blocks for the quote (about 1.4 ms on
/// swtpm); the aTLS server runs it on its thread pool.
public struct KeydEvidenceIssuer: EvidenceIssuer {
    /// keyd's socket.
    public let socketPath: String
    /// The document format keyd makes.
    public let format: EvidenceVariant
    /// Sends `tpm.evidence` (admin socket) instead of `evidence.issue` (trustd socket).
    public let asAdmin: Bool

    public init(socketPath: String, format: EvidenceVariant = .native, asAdmin: Bool = false) {
        self.socketPath = socketPath
        self.format = format
        self.asAdmin = asAdmin
    }

    public var variant: AttestationVariant { format == .native ? .asterismTPM : .qemuVTPM }

    public func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
        let connection = try KeydConnection(path: socketPath)
        defer { connection.close() }
        return try connection.evidence(format, nonce: nonce, userDataDigest: userData, asAdmin: asAdmin).document
    }
}
