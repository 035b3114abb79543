import Attestation
import Crypto
import FoundationEssentials

/// Test and benchmark issuer: quotes in the TPM's own formats (TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE),
/// signed in process by an ECDSA P-256 key that stands in for a TPM's AK and lives in this process's
/// memory. It proves nothing about a machine: its evidence validates only where a verifier was told to
/// trust exactly its `akDigest` (or to trust document AKs, which is itself an insecure setting).
public struct SoftwareTPMEvidenceIssuer: EvidenceIssuer {
    /// The document format.
    public enum Format: Sendable {
        /// keyd's native document (variant `asterism-tpm`).
        case native
        /// Constellation's qemu-vtpm JSON document (variant `qemu-vtpm`).
        case constellation
    }

    /// The document format.
    public let format: Format
    /// The AK's TPMT_PUBLIC, marshaled.
    public let akPublic: [UInt8]
    /// SHA-256 of the AK's SubjectPublicKeyInfo: what a verifier allow-lists.
    public let akDigest: [UInt8]
    /// The PCR values every quote reports (SHA-256 bank).
    public let pcrs: [Int: [UInt8]]
    private let ak: P256.Signing.PrivateKey
    private let akName: [UInt8]
    private let pcrSelection: [UInt8]
    private let pcrDigest: [UInt8]

    /// An issuer with a new in-memory AK; `pcrs` defaults to 24 distinct SHA-256 values.
    public init(format: Format, pcrs: [Int: [UInt8]]? = nil) {
        self.format = format
        let pcrs =
            pcrs ?? Dictionary(uniqueKeysWithValues: (0..<24).map { ($0, Array(SHA256.hash(data: [UInt8($0)]))) })
        self.pcrs = pcrs
        ak = P256.Signing.PrivateKey(compactRepresentable: false)
        let point = Array(ak.publicKey.x963Representation)
        akPublic =
            [
                0x00, 0x23, 0x00, 0x0B, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x18, 0x00, 0x0B, 0x00,
                0x03, 0x00, 0x10,
            ]
            + Self.tpm2b(point[1...32]) + Self.tpm2b(point[33...64])
        akDigest = Array(SHA256.hash(data: ak.publicKey.derRepresentation))
        akName = [0x00, 0x0B] + Array(SHA256.hash(data: akPublic))
        var bitmap: [UInt8] = [0, 0, 0]
        for index in pcrs.keys where index < 24 { bitmap[index / 8] |= 1 << (index % 8) }
        pcrSelection = [0, 0, 0, 1, 0x00, 0x0B, 3] + bitmap
        pcrDigest = Array(SHA256.hash(data: pcrs.keys.sorted().flatMap { pcrs[$0]! }))
    }

    public var variant: AttestationVariant { format == .native ? .asterismTPM : .qemuVTPM }

    public func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
        switch format {
        case .native:
            return try issueNative(
                qualifyingData: NativeTPMEvidenceDocument.qualifyingData(nonce: nonce, userDataDigest: userData),
                userDataDigest: userData
            )
        case .constellation:
            let qualifying = ConstellationVTPMDocument.qualifyingData(userData: userData, nonce: nonce)
            let (attest, signature) = try signedQuote(qualifying: qualifying)
            let quote = ConstellationVTPMDocument.Quote(quote: attest, rawSignature: signature, hash: 11, pcrs: pcrs)
            return ConstellationVTPMDocument(akPublic: akPublic, quotes: [quote], userData: userData).jsonBytes()
        }
    }

    /// A native document whose quote carries exactly `qualifyingData` (as keyd's join evidence does, with
    /// a binding it computes itself) and `userDataDigest` in its user data field, whatever `format` is.
    public func issueNative(qualifyingData: [UInt8], userDataDigest: [UInt8]) throws -> [UInt8] {
        let (attest, signature) = try signedQuote(qualifying: qualifyingData)
        return NativeTPMEvidenceDocument(
            akPublic: akPublic,
            attest: attest,
            signature: signature,
            pcrs: pcrs,
            userDataDigest: userDataDigest
        )
        .serialized()
    }

    /// A quote carrying `qualifying` and the AK's TPMT_SIGNATURE over it.
    private func signedQuote(qualifying: [UInt8]) throws -> (attest: [UInt8], signature: [UInt8]) {
        let attest = quote(qualifying: qualifying)
        let rs = try ak.signature(for: SHA256.hash(data: attest)).rawRepresentation
        return (attest, [0x00, 0x18, 0x00, 0x0B] + Self.tpm2b(rs.prefix(32)) + Self.tpm2b(rs.suffix(32)))
    }

    /// A TPMS_ATTEST of type quote over the configured PCRs carrying `qualifying`.
    private func quote(qualifying: [UInt8]) -> [UInt8] {
        var attest: [UInt8] = [0xFF, 0x54, 0x43, 0x47, 0x80, 0x18]
        attest += Self.tpm2b(akName) + Self.tpm2b(qualifying)
        attest += [UInt8](repeating: 0, count: 16) + [1]  // clockInfo: clock, resetCount, restartCount, safe
        attest += [UInt8](repeating: 0, count: 8)  // firmwareVersion
        attest += pcrSelection + Self.tpm2b(pcrDigest)
        return attest
    }

    private static func tpm2b(_ bytes: some Collection<UInt8>) -> [UInt8] {
        [UInt8(bytes.count >> 8 & 0xFF), UInt8(bytes.count & 0xFF)] + bytes
    }
}
