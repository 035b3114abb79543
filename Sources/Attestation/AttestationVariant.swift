import FoundationEssentials

/// An evidence format and the X.509 extension OID that carries it in an attested certificate.
/// Constellation's variants keep Constellation's names and OIDs; Asterism's own sit under 1.3.9900.77.
public struct AttestationVariant: Hashable, Sendable, CustomStringConvertible {
    /// The variant's name, as Constellation's configuration spells it.
    public let name: String
    /// The OID's arcs.
    public let oid: [UInt]

    public init(name: String, oid: [UInt]) {
        self.name = name
        self.oid = oid
    }

    /// The OID in dotted form.
    public var dottedOID: String { oid.map(String.init).joined(separator: ".") }

    public var description: String { "\(name) (\(dottedOID))" }

    /// Constellation's test variant: the document proves nothing.
    public static let dummy = AttestationVariant(name: "dummy", oid: [1, 3, 9900, 1, 1])
    public static let awsNitroTPM = AttestationVariant(name: "aws-nitro-tpm", oid: [1, 3, 9900, 2, 1])
    public static let awsSEVSNP = AttestationVariant(name: "aws-sev-snp", oid: [1, 3, 9900, 2, 2])
    public static let gcpSEVES = AttestationVariant(name: "gcp-sev-es", oid: [1, 3, 9900, 3, 1])
    public static let gcpSEVSNP = AttestationVariant(name: "gcp-sev-snp", oid: [1, 3, 9900, 3, 2])
    public static let azureSEVSNP = AttestationVariant(name: "azure-sev-snp", oid: [1, 3, 9900, 4, 1])
    public static let azureTrustedLaunch = AttestationVariant(name: "azure-trustedlaunch", oid: [1, 3, 9900, 4, 2])
    public static let azureTDX = AttestationVariant(name: "azure-tdx", oid: [1, 3, 9900, 4, 3])
    /// Constellation's QEMU vTPM variant: the go-tpm-tools JSON document (``ConstellationVTPMDocument``).
    public static let qemuVTPM = AttestationVariant(name: "qemu-vtpm", oid: [1, 3, 9900, 5, 1])
    public static let qemuTDX = AttestationVariant(name: "qemu-tdx", oid: [1, 3, 9900, 5, 99])
    /// Asterism's TPM variant: keyd's native evidence document (``NativeTPMEvidenceDocument``).
    public static let asterismTPM = AttestationVariant(name: "asterism-tpm", oid: [1, 3, 9900, 77, 1])

    /// Every variant this build knows by name (not every one has a validator).
    public static let known: [AttestationVariant] = [
        .dummy, .awsNitroTPM, .awsSEVSNP, .gcpSEVES, .gcpSEVSNP, .azureSEVSNP, .azureTrustedLaunch, .azureTDX,
        .qemuVTPM, .qemuTDX, .asterismTPM,
    ]

    /// The known variant called `name`, or nil.
    public static func named(_ name: String) -> AttestationVariant? { known.first { $0.name == name } }
}

/// Makes evidence documents that bind user data and a nonce. Issuing may block (a TPM quote takes
/// milliseconds), so callers run it off any event loop.
public protocol EvidenceIssuer: Sendable {
    /// The variant of the documents this issuer makes.
    var variant: AttestationVariant { get }
    /// A document binding `userData` (32 bytes, for aTLS the certificate key's hash) and `nonce`.
    func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8]
}

/// What a validator proved about a document.
public struct ValidatedEvidence: Sendable {
    /// The document's variant.
    public let variant: AttestationVariant
    /// The user data the document is bound to (for aTLS: SHA-256 of the certificate's SubjectPublicKeyInfo).
    public let userData: [UInt8]
    /// Every policy's result; `report.isValid` is true for a returned value.
    public let report: AttestationReport
    /// True when the proof rests on an insecure development setting (dummy variant, document AK trusted).
    public let isInsecure: Bool

    public init(variant: AttestationVariant, userData: [UInt8], report: AttestationReport, isInsecure: Bool) {
        self.variant = variant
        self.userData = userData
        self.report = report
        self.isInsecure = isInsecure
    }
}

/// Why a validator refused a document.
public enum EvidenceRejection: Error, Sendable, CustomStringConvertible {
    /// The document does not parse as this variant's format.
    case malformed(AttestationVariant, AttestationError)
    /// The document parsed, but a policy failed; the report names it.
    case refused(AttestationVariant, AttestationReport)

    public var description: String {
        switch self {
        case .malformed(let variant, let error): "\(variant.name) document does not parse: \(error)"
        case .refused(let variant, let report):
            "\(variant.name) evidence refused: "
                + report.failures.map { "\($0.policy): \($0.message)" }.joined(separator: "; ")
        }
    }
}

/// Checks evidence documents of one variant. Pure: no I/O, so keyd and trustd can both run it.
public protocol EvidenceValidator: Sendable {
    /// The variant this validator reads.
    var variant: AttestationVariant { get }
    /// Validates `document` against the verifier's own `nonce` at `time`; the caller compares the
    /// returned user data with what it expects.
    func validate(document: [UInt8], nonce: [UInt8], at time: Date) throws(EvidenceRejection) -> ValidatedEvidence
}
