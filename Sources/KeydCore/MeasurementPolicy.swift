import Attestation
import Crypto
import FoundationEssentials
import KeydProtocol
import SwiftASN1
import X509

/// The measurement policy keyd releases keys under. It changes only through a ``SignedPolicy`` signed
/// by the pinned ``OperatorKey`` with a higher version.
///
/// JSON form (at most 12,000 bytes, UTF-8, so that a signed policy fits `policy.set`):
/// ```json
/// {"version": 7,
///  "measurements": {"4": {"expected": "<hex of 32 bytes>", "warnOnly": false}, "15": "<hex of 32 bytes>"},
///  "akTrust": {"allowedDigests": ["<hex of SHA-256 of an AK's DER SubjectPublicKeyInfo>"],
///              "caCertificatesPEM": ["-----BEGIN CERTIFICATE-----\n…"], "insecureTrustAnyAK": false},
///  "snpMinimumTCB": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
///  "evidenceVariants": ["asterism-tpm"],
///  "challengeLifetimeSeconds": 60,
///  "revoked": {"diskUUIDs": ["<lowercase UUID>"], "akDigests": ["<hex of 32 bytes>"]}}
/// ```
/// - `version` (required): 1…2^63-1; a new policy must carry a higher one.
/// - `measurements` (required, may be `{}`): PCR index `"0"`…`"23"` → 32-byte SHA-256 value as hex (either
///   case), bare (enforced) or `{"expected", "warnOnly"}` (`warnOnly` optional, false by default); PCRs not
///   listed are not checked (Attestation's ``Measurements``).
/// - `akTrust` (required): `allowedDigests` (≤ 64), `caCertificatesPEM` (≤ 16 AK CA certificates),
///   `insecureTrustAnyAK` (development only: the AK the evidence carries is trusted; audited on every use).
///   Each member is optional (empty, empty, false).
/// - `snpMinimumTCB` (optional): the lowest SEV-SNP TCB accepted, each part 0…255; for SEV-SNP evidence
///   (the release path takes keyd's native TPM evidence only, which carries no SNP report).
/// - `evidenceVariants` (required, 1…16 distinct known names, e.g. `asterism-tpm`, `qemu-vtpm`): the
///   evidence formats a release may take; a native release needs `asterism-tpm`.
/// - `challengeLifetimeSeconds` (optional, 1…3600, default 60).
/// - `revoked` (optional): `diskUUIDs` and `akDigests` (each optional, ≤ 4096 distinct entries; the JSON
///   size bounds them first, at about 300 UUIDs) never get keys.
///
/// Every object refuses members not listed here; hex strings have exactly the lengths given; a list
/// with a repeated entry is refused. `JSONDecoder` reads the first occurrence of a member name repeated
/// in one object: ``canonicalJSON`` (what `keydctl policy show` prints) is the policy as keyd reads it.
public struct MeasurementPolicy: Sendable, Hashable {
    /// The largest policy JSON: its base64, a signature and the object around them fit ``SignedPolicy/maximumLength``.
    public static let maximumLength = 12_000
    /// The most AK digests on the allow-list.
    public static let maximumAKDigests = 64
    /// The most AK CA certificates.
    public static let maximumCACertificates = 16
    /// The most evidence variants.
    public static let maximumEvidenceVariants = 16
    /// The most entries in each revocation list.
    public static let maximumRevoked = 4096
    /// Accepted challenge lifetimes in seconds.
    public static let challengeLifetimes: ClosedRange<Int> = 1...3600
    /// The challenge lifetime when the policy names none.
    public static let defaultChallengeLifetimeSeconds = 60

    /// The lowest SEV-SNP TCB accepted, by part.
    public struct SNPMinimumTCB: Hashable, Sendable, Codable {
        public var bootloader: UInt8
        public var tee: UInt8
        public var snp: UInt8
        public var microcode: UInt8

        public init(bootloader: UInt8, tee: UInt8, snp: UInt8, microcode: UInt8) {
            self.bootloader = bootloader
            self.tee = tee
            self.snp = snp
            self.microcode = microcode
        }

        /// The minimum as Attestation's TCB of `product` (for ``SNPPolicy/minimumTCB``).
        public func tcb(for product: SNPProduct) -> SNPTCB {
            SNPTCB(bootloader: bootloader, tee: tee, snp: snp, microcode: microcode, product: product)
        }
    }

    /// The policy's version; every new policy must carry a higher one.
    public let version: UInt64
    /// Expected PCR values (SHA-256 bank).
    public let measurements: Measurements
    /// SHA-256 digests of the DER SubjectPublicKeyInfo of trusted AKs.
    public let allowedAKDigests: Set<[UInt8]>
    /// AK CA certificates (roots for ``certifyAK(certificate:intermediates:akPublic:at:)``).
    public let akCACertificates: [Certificate]
    /// Trusts the AK the evidence carries. - Important: Development only; anyone can make such evidence.
    public let insecureTrustAnyAK: Bool
    /// The lowest SEV-SNP TCB accepted, if any.
    public let snpMinimumTCB: SNPMinimumTCB?
    /// The evidence variants a release may take.
    public let evidenceVariants: [AttestationVariant]
    /// How long a challenge lives.
    public let challengeLifetimeSeconds: Int
    /// Disks that never get keys.
    public let revokedDiskUUIDs: Set<DiskUUID>
    /// AKs (by SubjectPublicKeyInfo digest) whose evidence never gets keys.
    public let revokedAKDigests: Set<[UInt8]>
    /// The policy's JSON bytes: exactly as signed when decoded, else ``canonicalJSON``.
    public let json: [UInt8]
    /// AK trust, built once so every release shares its prepared keys.
    private let akTrust: AKTrust

    /// SHA-256 of ``json``: how `status` and audit records name the policy.
    public var digest: [UInt8] { Array(SHA256.hash(data: json)) }

    /// Makes a policy (for the operator's tools and tests); its ``json`` is the canonical form.
    /// - Throws: ``CoreError/Code/invalidPolicy`` naming the value and the limit.
    public init(
        version: UInt64,
        measurements: Measurements,
        allowedAKDigests: Set<[UInt8]> = [],
        akCACertificates: [Certificate] = [],
        insecureTrustAnyAK: Bool = false,
        snpMinimumTCB: SNPMinimumTCB? = nil,
        evidenceVariants: [AttestationVariant] = [.asterismTPM],
        challengeLifetimeSeconds: Int = defaultChallengeLifetimeSeconds,
        revokedDiskUUIDs: Set<DiskUUID> = [],
        revokedAKDigests: Set<[UInt8]> = []
    ) throws(CoreError) {
        try self.init(
            checking: PolicyDocument(
                version: version,
                measurements: measurements,
                allowedAKDigests: allowedAKDigests,
                akCACertificates: akCACertificates,
                insecureTrustAnyAK: insecureTrustAnyAK,
                snpMinimumTCB: snpMinimumTCB,
                evidenceVariants: evidenceVariants,
                challengeLifetimeSeconds: challengeLifetimeSeconds,
                revokedDiskUUIDs: revokedDiskUUIDs,
                revokedAKDigests: revokedAKDigests
            ),
            json: nil
        )
    }

    /// Parses the JSON form strictly (see the type's documentation).
    /// - Throws: ``CoreError/Code/invalidPolicy`` naming the member and the limit, never quoting the document.
    public init(json: [UInt8]) throws(CoreError) {
        let document: PolicyDocument
        do throws(CoreError) {
            document = try KeydJSON.decode(PolicyDocument.self, from: json, limit: Self.maximumLength, what: "JSON")
        } catch {
            throw .invalidPolicy(error.message)
        }
        try self.init(checking: document, json: json)
    }

    /// Checks the values every policy must satisfy, then keeps `json` (the canonical form when nil).
    private init(checking document: PolicyDocument, json: [UInt8]?) throws(CoreError) {
        let version = document.version
        let measurements = document.measurements
        let allowedAKDigests = document.allowedAKDigests
        let akCACertificates = document.akCACertificates
        let evidenceVariants = document.evidenceVariants
        let challengeLifetimeSeconds = document.challengeLifetimeSeconds
        let revokedDiskUUIDs = document.revokedDiskUUIDs
        let revokedAKDigests = document.revokedAKDigests
        guard (1...UInt64(Int64.max)).contains(version) else {
            throw .invalidPolicy("version \(version) is outside 1…\(Int64.max)")
        }
        for (index, expected) in measurements.entries {
            guard (0...23).contains(index), expected.value.count == 32 else {
                throw .invalidPolicy("measurement of PCR \(index) is not a 32-byte value of PCR 0…23")
            }
        }
        for (name, count, limit) in [
            ("akTrust.allowedDigests", allowedAKDigests.count, Self.maximumAKDigests),
            ("akTrust.caCertificatesPEM", akCACertificates.count, Self.maximumCACertificates),
            ("evidenceVariants", evidenceVariants.count, Self.maximumEvidenceVariants),
            ("revoked.diskUUIDs", revokedDiskUUIDs.count, Self.maximumRevoked),
            ("revoked.akDigests", revokedAKDigests.count, Self.maximumRevoked),
        ] where count > limit {
            throw .invalidPolicy("\(name) has \(count) entries, exceeds limit \(limit)")
        }
        guard allowedAKDigests.union(revokedAKDigests).allSatisfy({ $0.count == 32 }) else {
            throw .invalidPolicy("an AK digest is not 32 bytes")
        }
        guard !evidenceVariants.isEmpty, Set(evidenceVariants).count == evidenceVariants.count else {
            throw .invalidPolicy("evidenceVariants must name at least one variant, each once")
        }
        guard Self.challengeLifetimes.contains(challengeLifetimeSeconds) else {
            throw .invalidPolicy(
                "challengeLifetimeSeconds \(challengeLifetimeSeconds) is outside \(Self.challengeLifetimes.lowerBound)…\(Self.challengeLifetimes.upperBound)"
            )
        }
        self.version = version
        self.measurements = measurements
        self.allowedAKDigests = allowedAKDigests
        self.akCACertificates = akCACertificates
        insecureTrustAnyAK = document.insecureTrustAnyAK
        snpMinimumTCB = document.snpMinimumTCB
        self.evidenceVariants = evidenceVariants
        self.challengeLifetimeSeconds = challengeLifetimeSeconds
        self.revokedDiskUUIDs = revokedDiskUUIDs
        self.revokedAKDigests = revokedAKDigests
        akTrust = AKTrust(allowedKeyDigests: allowedAKDigests, insecureTrustDocumentAK: document.insecureTrustAnyAK)
        self.json = json ?? document.canonicalJSON
        guard self.json.count <= Self.maximumLength else {
            throw .invalidPolicy("policy JSON of \(self.json.count) bytes exceeds limit \(Self.maximumLength)")
        }
    }

    public static func == (lhs: MeasurementPolicy, rhs: MeasurementPolicy) -> Bool { lhs.json == rhs.json }

    public func hash(into hasher: inout Hasher) { hasher.combine(json) }

    /// The policy as keyd reads it: sorted members, every measurement as `{"expected", "warnOnly"}`,
    /// lowercase hex, sorted lists (what `keydctl policy show` prints, and the JSON of a policy made in code).
    public var canonicalJSON: [UInt8] { PolicyDocument(self).canonicalJSON }

    /// The quote policy of a release: this policy's AK trust (plus AKs whose certificates verified,
    /// ``certifyAK(certificate:intermediates:akPublic:at:)``), measurements, the event log enforced
    /// when present, SHA-256 only, and the qualifying data keyd computed (``JoinBinding``).
    public func quotePolicy(expectedQualifyingData: [UInt8], certifiedKeys: [CertifiedAK] = []) -> TPMQuotePolicy {
        var trust = akTrust
        trust.certifiedKeys = certifiedKeys
        return TPMQuotePolicy(
            akTrust: trust,
            expectedQualifyingData: expectedQualifyingData,
            allowSHA1: false,
            measurements: measurements,
            eventLogCheck: .enforce
        )
    }

    /// Verifies an AK certificate chain against ``akCACertificates`` at `time` (swift-certificates'
    /// RFC 5280 verifier) and that it certifies `akPublic`: the ``CertifiedAK`` for ``quotePolicy(expectedQualifyingData:certifiedKeys:)``.
    public func certifyAK(
        certificate: Certificate,
        intermediates: [Certificate],
        akPublic: TPMTPublic,
        at time: Date
    ) async -> Result<CertifiedAK, PolicyFailureResult> {
        await AKCertificateVerifier.verify(
            akCertificate: certificate,
            intermediates: intermediates,
            roots: akCACertificates,
            akPublic: akPublic,
            at: time
        )
    }
}

/// The JSON document of a policy, member by member (see ``MeasurementPolicy``).
private struct PolicyDocument: Codable {
    var version: UInt64
    var measurements: Measurements
    var allowedAKDigests: Set<[UInt8]>
    var akCACertificates: [Certificate]
    var insecureTrustAnyAK: Bool
    var snpMinimumTCB: MeasurementPolicy.SNPMinimumTCB?
    var evidenceVariants: [AttestationVariant]
    var challengeLifetimeSeconds: Int
    var revokedDiskUUIDs: Set<DiskUUID>
    var revokedAKDigests: Set<[UInt8]>

    init(
        version: UInt64,
        measurements: Measurements,
        allowedAKDigests: Set<[UInt8]>,
        akCACertificates: [Certificate],
        insecureTrustAnyAK: Bool,
        snpMinimumTCB: MeasurementPolicy.SNPMinimumTCB?,
        evidenceVariants: [AttestationVariant],
        challengeLifetimeSeconds: Int,
        revokedDiskUUIDs: Set<DiskUUID>,
        revokedAKDigests: Set<[UInt8]>
    ) {
        self.version = version
        self.measurements = measurements
        self.allowedAKDigests = allowedAKDigests
        self.akCACertificates = akCACertificates
        self.insecureTrustAnyAK = insecureTrustAnyAK
        self.snpMinimumTCB = snpMinimumTCB
        self.evidenceVariants = evidenceVariants
        self.challengeLifetimeSeconds = challengeLifetimeSeconds
        self.revokedDiskUUIDs = revokedDiskUUIDs
        self.revokedAKDigests = revokedAKDigests
    }

    init(_ policy: MeasurementPolicy) {
        self.init(
            version: policy.version,
            measurements: policy.measurements,
            allowedAKDigests: policy.allowedAKDigests,
            akCACertificates: policy.akCACertificates,
            insecureTrustAnyAK: policy.insecureTrustAnyAK,
            snpMinimumTCB: policy.snpMinimumTCB,
            evidenceVariants: policy.evidenceVariants,
            challengeLifetimeSeconds: policy.challengeLifetimeSeconds,
            revokedDiskUUIDs: policy.revokedDiskUUIDs,
            revokedAKDigests: policy.revokedAKDigests
        )
    }

    /// Sorted members, every measurement as `{"expected", "warnOnly"}`, lowercase hex, sorted lists.
    var canonicalJSON: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Strings, numbers, booleans and lists of them (PEM of parsed certificates): encoding does not fail.
        guard let data = try? encoder.encode(self) else { preconditionFailure("policy encoding") }
        return Array(data)
    }

    typealias Name = KeydJSON.Name

    init(from decoder: any Decoder) throws {
        let top = try decoder.container(keyedBy: Name.self)
        try top.refuseMembers(
            except: [
                "version", "measurements", "akTrust", "snpMinimumTCB", "evidenceVariants", "challengeLifetimeSeconds",
                "revoked",
            ]
        )
        version = try top.decode(UInt64.self, forKey: Name("version"))
        measurements = try Self.measurements(top.nestedContainer(keyedBy: Name.self, forKey: Name("measurements")))

        let trust = try top.nestedContainer(keyedBy: Name.self, forKey: Name("akTrust"))
        try trust.refuseMembers(except: ["allowedDigests", "caCertificatesPEM", "insecureTrustAnyAK"])
        allowedAKDigests = try trust.distinct([String].self, "allowedDigests") { try $0.hex(32, $1) }
        let pems = try trust.optional([String].self, "caCertificatesPEM") ?? []
        akCACertificates = try pems.enumerated().map { index, pem in
            do {
                return try Certificate(pemEncoded: pem)
            } catch {
                throw KeydJSON.MemberError(
                    path: trust.codingPath + [Name("caCertificatesPEM"), Name(String(index))],
                    problem: "not a PEM certificate"
                )
            }
        }
        insecureTrustAnyAK = try trust.optional(Bool.self, "insecureTrustAnyAK") ?? false

        if top.contains(Name("snpMinimumTCB")) {
            let tcb = try top.nestedContainer(keyedBy: Name.self, forKey: Name("snpMinimumTCB"))
            try tcb.refuseMembers(except: ["bootloader", "tee", "snp", "microcode"])
            snpMinimumTCB = try top.decode(MeasurementPolicy.SNPMinimumTCB.self, forKey: Name("snpMinimumTCB"))
        } else {
            snpMinimumTCB = nil
        }
        let variantNames = try top.decode([String].self, forKey: Name("evidenceVariants"))
        evidenceVariants = try variantNames.enumerated().map { index, name in
            guard let variant = AttestationVariant.named(name) else {
                throw KeydJSON.MemberError(
                    path: top.codingPath + [Name("evidenceVariants"), Name(String(index))],
                    problem: "\(quotedForMessage(name)) is not a known evidence variant"
                )
            }
            return variant
        }
        challengeLifetimeSeconds =
            try top.optional(Int.self, "challengeLifetimeSeconds") ?? MeasurementPolicy.defaultChallengeLifetimeSeconds

        if top.contains(Name("revoked")) {
            let revoked = try top.nestedContainer(keyedBy: Name.self, forKey: Name("revoked"))
            try revoked.refuseMembers(except: ["diskUUIDs", "akDigests"])
            revokedDiskUUIDs = try revoked.distinct([String].self, "diskUUIDs") { path, text in
                guard let uuid = try? DiskUUID(validating: text) else {
                    throw KeydJSON.MemberError(path: path, problem: "not a lowercase 8-4-4-4-12 UUID")
                }
                return uuid
            }
            revokedAKDigests = try revoked.distinct([String].self, "akDigests") { try $0.hex(32, $1) }
        } else {
            revokedDiskUUIDs = []
            revokedAKDigests = []
        }
    }

    /// PCR index → bare hex (enforced) or `{"expected", "warnOnly"}`.
    private static func measurements(_ container: KeyedDecodingContainer<Name>) throws -> Measurements {
        var entries: [Int: Measurements.Expected] = [:]
        for key in container.allKeys {
            let path = container.codingPath + [key]
            guard let index = Int(key.stringValue), (0...23).contains(index), String(index) == key.stringValue else {
                throw KeydJSON.MemberError(path: path, problem: "not a PCR index 0…23")
            }
            if let text = try? container.decode(String.self, forKey: key) {
                entries[index] = Measurements.Expected(value: try path.hex(32, text), warnOnly: false)
                continue
            }
            let entry = try container.nestedContainer(keyedBy: Name.self, forKey: key)
            try entry.refuseMembers(except: ["expected", "warnOnly"])
            let expected = try entry.decode(String.self, forKey: Name("expected"))
            entries[index] = Measurements.Expected(
                value: try (path + [Name("expected")]).hex(32, expected),
                warnOnly: try entry.optional(Bool.self, "warnOnly") ?? false
            )
        }
        return Measurements(entries)
    }

    func encode(to encoder: any Encoder) throws {
        var top = encoder.container(keyedBy: Name.self)
        try top.encode(version, forKey: Name("version"))
        var pcrs = top.nestedContainer(keyedBy: Name.self, forKey: Name("measurements"))
        for (index, expected) in measurements.entries {
            var entry = pcrs.nestedContainer(keyedBy: Name.self, forKey: Name(String(index)))
            try entry.encode(hexString(expected.value), forKey: Name("expected"))
            try entry.encode(expected.warnOnly, forKey: Name("warnOnly"))
        }
        var trust = top.nestedContainer(keyedBy: Name.self, forKey: Name("akTrust"))
        try trust.encode(allowedAKDigests.map { hexString($0) }.sorted(), forKey: Name("allowedDigests"))
        try trust.encode(
            try akCACertificates.map { try $0.serializeAsPEM().pemString },
            forKey: Name("caCertificatesPEM")
        )
        try trust.encode(insecureTrustAnyAK, forKey: Name("insecureTrustAnyAK"))
        try top.encodeIfPresent(snpMinimumTCB, forKey: Name("snpMinimumTCB"))
        try top.encode(evidenceVariants.map(\.name), forKey: Name("evidenceVariants"))
        try top.encode(challengeLifetimeSeconds, forKey: Name("challengeLifetimeSeconds"))
        var revoked = top.nestedContainer(keyedBy: Name.self, forKey: Name("revoked"))
        try revoked.encode(revokedDiskUUIDs.map(\.text).sorted(), forKey: Name("diskUUIDs"))
        try revoked.encode(revokedAKDigests.map { hexString($0) }.sorted(), forKey: Name("akDigests"))
    }
}

extension KeyedDecodingContainer where Key == KeydJSON.Name {
    /// Throws naming the first member (in sorted order) not in `known`.
    func refuseMembers(except known: Set<String>) throws {
        if let unknown = allKeys.map(\.stringValue).filter({ !known.contains($0) }).sorted().first {
            throw KeydJSON.MemberError(
                path: codingPath + [KeydJSON.Name(unknown)],
                problem: "unknown member (known: \(known.sorted().joined(separator: ", ")))"
            )
        }
    }

    /// The member `name` if present (`null` is refused as the wrong type).
    func optional<T: Decodable>(_ type: T.Type, _ name: String) throws -> T? {
        contains(KeydJSON.Name(name)) ? try decode(type, forKey: KeydJSON.Name(name)) : nil
    }

    /// The strings of the optional list `name`, each converted by `convert(path, text)`; a repeated entry is refused.
    func distinct<Element: Hashable>(
        _ type: [String].Type,
        _ name: String,
        _ convert: ([any CodingKey], String) throws -> Element
    ) throws -> Set<Element> {
        var result: Set<Element> = []
        for (index, text) in (try optional(type, name) ?? []).enumerated() {
            let path = codingPath + [KeydJSON.Name(name), KeydJSON.Name(String(index))]
            guard result.insert(try convert(path, text)).inserted else {
                throw KeydJSON.MemberError(path: path, problem: "repeats an earlier entry")
            }
        }
        return result
    }
}

extension Array where Element == any CodingKey {
    /// The bytes of `text`, hex of exactly `byteCount` bytes (either case), or a ``KeydJSON/MemberError`` at this path.
    func hex(_ byteCount: Int, _ text: String) throws -> [UInt8] {
        guard let bytes = hexBytes(text), bytes.count == byteCount else {
            throw KeydJSON.MemberError(path: self, problem: "not hex of exactly \(byteCount) bytes")
        }
        return bytes
    }
}

/// The bytes of hex `text` (digits and either case of `a-f`, nothing else), or nil.
func hexBytes(_ text: String) -> [UInt8]? {
    let digits = Array(text.utf8)
    guard digits.count.isMultiple(of: 2) else { return nil }
    func value(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(digits.count / 2)
    for pair in stride(from: 0, to: digits.count, by: 2) {
        guard let high = value(digits[pair]), let low = value(digits[pair + 1]) else { return nil }
        bytes.append(high << 4 | low)
    }
    return bytes
}

extension CoreError.Code {
    /// A measurement policy does not decode or breaks a limit.
    public static let invalidPolicy = CoreError.Code("invalidPolicy")
}

extension CoreError {
    /// A policy is malformed; `reason` names the member and the limit.
    static func invalidPolicy(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidPolicy, reason: "policy: \(reason)", file: file, line: line)
    }
}
