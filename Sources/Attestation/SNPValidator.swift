import Crypto
import FoundationEssentials

/// AMD root keys (ARKs) trusted for each product, by SHA-256 of their DER SubjectPublicKeyInfo.
public struct SNPTrustedRoots: Hashable, Sendable {
    public var arkKeyDigests: [SNPProduct: Set<[UInt8]>]

    public init(arkKeyDigests: [SNPProduct: Set<[UInt8]>]) { self.arkKeyDigests = arkKeyDigests }

    /// AMD's ARKs for Milan, Genoa and Turin (as served by AMD KDS).
    public static let amd = SNPTrustedRoots(arkKeyDigests: [
        .milan: [bytes(fromHex: "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9")!],
        .genoa: [bytes(fromHex: "429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831")!],
        .turin: [bytes(fromHex: "4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08")!],
    ])
}

/// A VCEK (or VLEK) whose chain to a trusted ARK verified; cache it to validate many reports.
public struct VerifiedSNPChain: Sendable {
    public let product: SNPProduct
    /// The VCEK's key, parsed once per chain; every report of the chain is verified with it.
    public let endorsementKey: P384.Signing.PublicKey
    /// The VCEK's certificate, for its TCB and hwID extensions.
    public let vcek: AMDCertificate
    /// The checks made on the chain, all passed.
    public let results: [PolicyResult]
    /// The TCB components the VCEK certifies (its 1.3.6.1.4.1.3704.1.3.x extensions), in ``SNPTCB/components`` order.
    let certifiedTCB: CertifiedTCB
    /// The VCEK's hwID extension.
    let hardwareID: [UInt8]?
}

/// The TCB components a VCEK certifies, read from its extensions once.
struct CertifiedTCB: Sendable, CustomStringConvertible {
    /// Component names and values (nil when the extension is absent), in ``SNPTCB/components`` order.
    let components: [(name: String, value: Int?)]

    init(_ vcek: AMDCertificate, product: SNPProduct) {
        let oids: [String: UInt] = ["bootloader": 1, "tee": 2, "snp": 3, "microcode": 8, "fmc": 9]
        components = SNPTCB(raw: 0, product: product).components.map { ($0.0, vcek.amdInteger(3, oids[$0.0]!)) }
    }

    /// The components that differ from `reported`'s.
    func mismatches(_ reported: SNPTCB) -> [String] {
        zip(components, reported.components).compactMap { certified, reported in
            certified.value == Int(reported.1) ? nil : certified.name
        }
    }

    /// As `bootloader=2 tee=0 …`; an absent extension shows as 255.
    var description: String {
        components.map { "\($0.name)=\(UInt8(truncatingIfNeeded: $0.value ?? -1))" }.joined(separator: " ")
    }
}

/// What an SEV-SNP report must satisfy.
public struct SNPPolicy: Hashable, Sendable {
    /// Every reported TCB component must be at least this (nil: no minimum).
    public var minimumTCB: SNPTCB?
    /// Accept guests whose policy allows debugging.
    public var allowDebug: Bool
    /// Allowed VMPLs (nil: any).
    public var allowedVMPLs: Set<UInt32>?
    /// The 64 bytes report_data must equal (nil: not checked).
    public var expectedReportData: [UInt8]?
    /// Allowed launch measurements (nil: not checked).
    public var allowedMeasurements: Set<[UInt8]>?
    /// Allowed ID-key digests (nil: not checked; a report without an ID block has zeros).
    public var allowedIDKeyDigests: Set<[UInt8]>?

    public init(
        minimumTCB: SNPTCB? = nil,
        allowDebug: Bool = false,
        allowedVMPLs: Set<UInt32>? = nil,
        expectedReportData: [UInt8]? = nil,
        allowedMeasurements: Set<[UInt8]>? = nil,
        allowedIDKeyDigests: Set<[UInt8]>? = nil
    ) {
        self.minimumTCB = minimumTCB
        self.allowDebug = allowDebug
        self.allowedVMPLs = allowedVMPLs
        self.expectedReportData = expectedReportData
        self.allowedMeasurements = allowedMeasurements
        self.allowedIDKeyDigests = allowedIDKeyDigests
    }
}

/// Verifies SEV-SNP reports and AMD certificate chains.
public enum SNPValidator {
    /// Verifies VCEK ← ASK ← ARK: RSASSA-PSS signatures, names, validity at `time`, ARK pinned in `roots`.
    /// Returns the verified chain, or the failed results naming the link that broke.
    public static func verifyChain(
        vcek: AMDCertificate,
        ask: AMDCertificate,
        ark: AMDCertificate,
        roots: SNPTrustedRoots = .amd,
        at time: Date
    ) -> Result<VerifiedSNPChain, PolicyFailureResult> {
        var results: [PolicyResult] = []
        func fail(
            _ policy: String,
            _ message: String,
            _ values: [(String, String)]
        ) -> Result<VerifiedSNPChain, PolicyFailureResult> {
            .failure(PolicyFailureResult(.failed(policy, message, values)))
        }
        let productName = vcek.productName ?? ""
        guard
            let product = SNPProduct(productName: productName)
                ?? SNPProduct.allCases.first(where: { ark.subject.description.contains($0.rawValue) })
        else {
            return fail("snp.chain.product", "the VCEK names no known product", [("productName", productName)])
        }
        let arkDigest = ark.keyDigest
        guard roots.arkKeyDigests[product]?.contains(arkDigest) == true else {
            return fail(
                "snp.chain.ark",
                "the ARK is not a trusted AMD root for \(product.rawValue)",
                [("arkDigest", hexString(arkDigest)), ("product", product.rawValue)]
            )
        }
        results.append(
            .passed("snp.chain.ark", "the ARK is AMD's \(product.rawValue) root", [("arkDigest", hexString(arkDigest))])
        )
        for (name, certificate, issuer) in [("ark", ark, ark), ("ask", ask, ark), ("vcek", vcek, ask)] {
            let policy = "snp.chain.\(name)-signature"
            let values = [("subject", certificate.subject.description), ("issuer", issuer.subject.description)]
            guard certificate.issuer == issuer.subject else {
                return fail(policy, "the \(name.uppercased()) is not issued by its parent", values)
            }
            guard certificate.isSigned(by: issuer) else {
                return fail(policy, "the \(name.uppercased())'s RSASSA-PSS signature does not verify", values)
            }
            results.append(.passed(policy, "the \(name.uppercased()) is signed by \(issuer.subject)", values))
            let validity = [
                ("notBefore", "\(certificate.notValidBefore)"), ("notAfter", "\(certificate.notValidAfter)"),
                ("at", "\(time)"),
            ]
            guard certificate.notValidBefore <= time, time <= certificate.notValidAfter else {
                return fail(
                    "snp.chain.\(name)-validity",
                    "the \(name.uppercased()) is not valid at the validation time",
                    validity
                )
            }
        }
        guard let key = P384.Signing.PublicKey(vcek.publicKey) else {
            return fail(
                "snp.chain.vcek-key",
                "the VCEK's key is not ECDSA P-384",
                [("subject", vcek.subject.description)]
            )
        }
        return .success(
            VerifiedSNPChain(
                product: product,
                endorsementKey: key,
                vcek: vcek,
                results: results,
                certifiedTCB: CertifiedTCB(vcek, product: product),
                hardwareID: vcek.hardwareID
            )
        )
    }

    /// Validates a report with an already verified chain (the cached path).
    public static func validate(
        report: SNPReport,
        chain: VerifiedSNPChain,
        policy: SNPPolicy,
        context: ValidationContext
    ) -> AttestationReport {
        var results: [PolicyResult] = []
        results.reserveCapacity(chain.results.count + 10)
        results.append(contentsOf: chain.results)
        SNPPolicySet(policy: policy, chain: chain).evaluate(report, into: &results)
        return AttestationReport(evidence: "sev-snp", results: results)
    }

    /// Parses the certificates, verifies the chain, then validates the report.
    public static func validate(
        report: [UInt8],
        vcek: [UInt8],
        askArk: String,
        policy: SNPPolicy,
        roots: SNPTrustedRoots = .amd,
        at time: Date
    ) throws(AttestationError) -> AttestationReport {
        let parsed = try SNPReport(bytes: report)
        let vcekCertificate = try AMDCertificate.derOrPEM(vcek)
        let bundle = try AMDCertificate.pemBundle(askArk)
        guard bundle.count == 2 else {
            throw .invalidCertificate("ASK/ARK bundle", "\(bundle.count) certificates, expected ASK then ARK")
        }
        switch verifyChain(vcek: vcekCertificate, ask: bundle[0], ark: bundle[1], roots: roots, at: time) {
        case .success(let chain):
            return validate(report: parsed, chain: chain, policy: policy, context: ValidationContext(time: time))
        case .failure(let failure):
            return AttestationReport(evidence: "sev-snp", results: [failure.result])
        }
    }
}

/// The report policies, each pure.
struct SNPPolicySet {
    let policy: SNPPolicy
    let chain: VerifiedSNPChain

    func evaluate(_ report: SNPReport, into results: inout [PolicyResult]) {
        let product = chain.product
        // Signature first: nothing else in the report means anything without it.
        let signatureValues: [PolicyResult.Value] = [
            .described("algorithm", report.signatureAlgorithm),
            .text("signingKey", report.signingKey == 1 ? "VLEK" : "VCEK"),
        ]
        if report.signatureAlgorithm == 1,
            let signature = try? P384.Signing.ECDSASignature(rawRepresentation: report.signatureRS),
            chain.endorsementKey.isValidSignature(signature, for: SHA384.hash(data: report.signedBytes))
        {
            results.append(.passed("snp.signature", "the report is signed by the VCEK", signatureValues))
        } else {
            results.append(
                .failed(
                    "snp.signature",
                    "the report's ECDSA P-384 signature does not verify with the VCEK",
                    signatureValues
                )
            )
        }
        if let cpuidProduct = report.cpuidProduct, cpuidProduct != product {
            results.append(
                .failed(
                    "snp.product",
                    "the report's CPUID names another product than the VCEK",
                    [("report", cpuidProduct.rawValue), ("vcek", product.rawValue)]
                )
            )
        }
        // The VCEK is issued for one TCB: its extensions must equal the reported TCB.
        let reported = report.reportedTCB(product)
        let tcbMismatch = chain.certifiedTCB.mismatches(reported)
        let tcbValues: [PolicyResult.Value] = [
            .described("reported", reported), .described("vcek", chain.certifiedTCB),
        ]
        results.append(
            tcbMismatch.isEmpty
                ? .passed("snp.tcb.certificate", "the VCEK certifies the reported TCB", tcbValues)
                : .failed(
                    "snp.tcb.certificate",
                    "the VCEK was issued for another TCB (\(tcbMismatch.joined(separator: ",")))",
                    tcbValues
                )
        )
        if report.chipIDMasked {
            results.append(.notChecked("snp.chip-id", "the report masks its chip ID"))
        } else if let hwid = chain.hardwareID {
            let values = [PolicyResult.Value.hex("report", report.chipID), .hex("vcek", hwid)]
            results.append(
                hwid == report.chipID
                    ? .passed("snp.chip-id", "the VCEK belongs to the reporting chip", values)
                    : .failed("snp.chip-id", "the VCEK belongs to another chip", values)
            )
        }
        if let minimum = policy.minimumTCB {
            // The minimum is its components: re-encode them for this product (Turin lays the bytes out differently).
            let floor =
                minimum.product == product
                ? minimum
                : SNPTCB(
                    bootloader: minimum.bootloader,
                    tee: minimum.tee,
                    snp: minimum.snp,
                    microcode: minimum.microcode,
                    fmc: minimum.fmc,
                    product: product
                )
            let values: [PolicyResult.Value] = [.described("reported", reported), .described("minimum", floor)]
            results.append(
                reported.meets(floor)
                    ? .passed("snp.tcb.minimum", "the reported TCB meets the minimum", values)
                    : .failed("snp.tcb.minimum", "the reported TCB is below the minimum", values)
            )
        }
        let policyHex = PolicyResult.Value.hex("policy", report.policy)
        if report.debugAllowed && !policy.allowDebug {
            results.append(.failed("snp.debug", "the guest policy allows debugging", [policyHex]))
        } else {
            results.append(
                .passed(
                    "snp.debug",
                    report.debugAllowed ? "debugging allowed by the policy" : "debugging is off",
                    [policyHex]
                )
            )
        }
        if let vmpls = policy.allowedVMPLs {
            let values = [
                ("vmpl", String(report.vmpl)), ("allowed", vmpls.sorted().map(String.init).joined(separator: ",")),
            ]
            results.append(
                vmpls.contains(report.vmpl)
                    ? .passed("snp.vmpl", "the report comes from an allowed VMPL", values)
                    : .failed("snp.vmpl", "the report comes from a VMPL that is not allowed", values)
            )
        }
        if let expected = policy.expectedReportData {
            let values = [PolicyResult.Value.hex("expected", expected), .hex("actual", report.reportData)]
            results.append(
                expected == report.reportData
                    ? .passed("snp.report-data", "report_data carries the expected binding", values)
                    : .failed("snp.report-data", "report_data is not the expected binding", values)
            )
        } else {
            results.append(
                .notChecked(
                    "snp.report-data",
                    "no report_data expected: freshness and binding not checked",
                    [.hex("actual", report.reportData)]
                )
            )
        }
        if let measurements = policy.allowedMeasurements {
            let values = [PolicyResult.Value.hex("measurement", report.measurement)]
            results.append(
                measurements.contains(report.measurement)
                    ? .passed("snp.measurement", "the launch measurement is allowed", values)
                    : .failed("snp.measurement", "the launch measurement is not allowed", values)
            )
        }
        if let digests = policy.allowedIDKeyDigests {
            let values = [PolicyResult.Value.hex("idKeyDigest", report.idKeyDigest)]
            results.append(
                digests.contains(report.idKeyDigest)
                    ? .passed("snp.id-key", "the ID key is allowed", values)
                    : .failed("snp.id-key", "the ID key is not allowed", values)
            )
        }
    }
}
