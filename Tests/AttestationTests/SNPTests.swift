import Attestation
import Foundation
import Testing

/// The real Milan report, VCEK and AMD chains from Tests/TestVectors/sev-snp.
@Suite
struct SNPTests {
    /// Inside every certificate's validity (the VCEK runs 2022-09-24 to 2029-09-24).
    static let time = Date(timeIntervalSince1970: 1_735_689_600)  // 2025-01-01

    struct Inputs {
        let report: [UInt8]
        let vcek: [UInt8]
        let askArk: String
    }

    static func inputs(chain: String = "amd-ask-ark-milan.pem") throws -> Inputs {
        Inputs(
            report: try TestVectors.bytes("sev-snp/report-milan-vcek.bin"),
            vcek: try TestVectors.bytes("sev-snp/vcek-milan.der"),
            askArk: try TestVectors.text("sev-snp/" + chain)
        )
    }

    static let lenient = SNPPolicy(allowDebug: true)

    @Test("the real report verifies with its VCEK and the Milan chain")
    func realReportVerifies() throws {
        let input = try Self.inputs()
        let report = try SNPValidator.validate(
            report: input.report,
            vcek: input.vcek,
            askArk: input.askArk,
            policy: Self.lenient,
            at: Self.time
        )
        #expect(report.isValid, "\(report.failures)")
        for name in [
            "snp.chain.ark", "snp.chain.ark-signature", "snp.chain.ask-signature", "snp.chain.vcek-signature",
            "snp.signature", "snp.tcb.certificate", "snp.chip-id",
        ] {
            #expect(report.result(of: name)?.outcome == .passed, "\(name)")
        }
        #expect(report.result(of: "snp.report-data")?.outcome == .notChecked)
    }

    @Test("the parsed report holds the fields of the real machine")
    func parsedFields() throws {
        let report = try SNPReport(bytes: try Self.inputs().report)
        #expect(report.version == 2)
        #expect(report.signatureAlgorithm == 1)
        #expect(report.signingKey == 0)
        #expect(report.vmpl == 0)
        #expect(report.reportedTCB(.milan).components.map(\.1) == [2, 0, 5, 0x44])
        #expect(report.debugAllowed)
        #expect(report.reportData.prefix(5) == [1, 2, 3, 4, 5])
    }

    /// Offsets inside the signed area: version, policy, report_data, measurement, reported_tcb, chip_id, last signed byte.
    @Test("flipping any signed byte fails", arguments: [0x00, 0x08, 0x50, 0x90, 0x180, 0x1A0, 0x29F])
    func tamperedReport(offset: Int) throws {
        let input = try Self.inputs()
        var bytes = input.report
        bytes[offset] ^= 0x01
        let report = try SNPValidator.validate(
            report: bytes,
            vcek: input.vcek,
            askArk: input.askArk,
            policy: Self.lenient,
            at: Self.time
        )
        #expect(!report.isValid)
        #expect(report.result(of: "snp.signature")?.outcome == .failed)
    }

    /// Bytes inside the TBSCertificate or the signature of the VCEK.
    @Test("a changed VCEK fails", arguments: [200, 400, 700, 1000, 1300])
    func tamperedVCEK(offset: Int) throws {
        let input = try Self.inputs()
        var vcek = input.vcek
        vcek[offset] ^= 0x01
        guard
            let report = try? SNPValidator.validate(
                report: input.report,
                vcek: vcek,
                askArk: input.askArk,
                policy: Self.lenient,
                at: Self.time
            )
        else { return }  // no longer DER: refused before validation
        #expect(!report.isValid)
    }

    @Test("a changed ASK fails", arguments: [300, 900, 1500])
    func tamperedASK(offset: Int) throws {
        let input = try Self.inputs()
        let bundle = try AMDCertificate.pemBundle(input.askArk)
        var askDER = bundle[0].der
        askDER[offset] ^= 0x01
        guard let ask = try? AMDCertificate(derEncoded: askDER) else { return }
        let vcek = try AMDCertificate(derEncoded: input.vcek)
        let result = SNPValidator.verifyChain(vcek: vcek, ask: ask, ark: bundle[1], at: Self.time)
        guard case .failure(let failure) = result else {
            Issue.record("a changed ASK verified")
            return
        }
        #expect(failure.result.policy.hasPrefix("snp.chain."))
    }

    @Test(
        "another product's chain or an expired time fails",
        arguments: [
            ("amd-ask-ark-genoa.pem", 1_735_689_600.0, "snp.chain.ark"),
            ("amd-ask-ark-turin_vcek.pem", 1_735_689_600.0, "snp.chain.ark"),
            ("amd-ask-ark-milan_vlek.pem", 1_735_689_600.0, "snp.chain.vcek-signature"),
            ("amd-ask-ark-milan.pem", 1_900_000_000.0, "snp.chain.vcek-validity"),
        ]
    )
    func wrongChain(chain: String, time: Double, policy: String) throws {
        let input = try Self.inputs(chain: chain)
        let report = try SNPValidator.validate(
            report: input.report,
            vcek: input.vcek,
            askArk: input.askArk,
            policy: Self.lenient,
            at: Date(timeIntervalSince1970: time)
        )
        #expect(report.failures.map(\.policy) == [policy])
    }

    @Test(
        "every AMD chain in the test data verifies itself",
        arguments: [
            "amd-ask-ark-milan.pem", "amd-ask-ark-milan_vlek.pem", "amd-ask-ark-genoa.pem",
            "amd-ask-ark-genoa_vlek.pem",
            "amd-ask-ark-turin_vcek.pem", "amd-ask-ark-turin_vlek.pem",
        ]
    )
    func amdChains(chain: String) throws {
        let bundle = try AMDCertificate.pemBundle(try TestVectors.text("sev-snp/" + chain))
        #expect(bundle.count == 2)
        let product = SNPProduct.allCases.first { chain.contains($0.rawValue.lowercased()) }!
        #expect(SNPTrustedRoots.amd.arkKeyDigests[product]?.contains(bundle[1].keyDigest) == true)
    }

    /// Policy table: each row changes one rule and names the policy that must fail (nil: valid).
    static let policyCases: [(String, SNPPolicy, String?)] = [
        ("debug forbidden by default", SNPPolicy(), "snp.debug"),
        (
            "minimum TCB met",
            SNPPolicy(
                minimumTCB: SNPTCB(bootloader: 2, tee: 0, snp: 5, microcode: 0x44, product: .milan),
                allowDebug: true
            ), nil
        ),
        (
            "minimum TCB above",
            SNPPolicy(
                minimumTCB: SNPTCB(bootloader: 2, tee: 0, snp: 6, microcode: 0x44, product: .milan),
                allowDebug: true
            ), "snp.tcb.minimum"
        ),
        // A minimum is its components, whatever product's layout it was made in.
        (
            "minimum TCB in Turin's layout met",
            SNPPolicy(
                minimumTCB: SNPTCB(bootloader: 2, tee: 0, snp: 5, microcode: 0x44, product: .turin),
                allowDebug: true
            ), nil
        ),
        (
            "minimum TCB in Turin's layout above",
            SNPPolicy(
                minimumTCB: SNPTCB(bootloader: 2, tee: 1, snp: 5, microcode: 0x44, product: .turin),
                allowDebug: true
            ), "snp.tcb.minimum"
        ),
        ("VMPL 0 allowed", SNPPolicy(allowDebug: true, allowedVMPLs: [0]), nil),
        ("VMPL 1-3 only", SNPPolicy(allowDebug: true, allowedVMPLs: [1, 2, 3]), "snp.vmpl"),
        (
            "report data bound",
            SNPPolicy(allowDebug: true, expectedReportData: [1, 2, 3, 4, 5] + [UInt8](repeating: 0, count: 59)), nil
        ),
        (
            "report data differs", SNPPolicy(allowDebug: true, expectedReportData: [UInt8](repeating: 0, count: 64)),
            "snp.report-data"
        ),
        (
            "measurement allowed",
            SNPPolicy(
                allowDebug: true,
                allowedMeasurements: [
                    bytes(
                        fromHex:
                            "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
                    )!
                ]
            ), nil
        ),
        (
            "measurement unknown", SNPPolicy(allowDebug: true, allowedMeasurements: [[UInt8](repeating: 0, count: 48)]),
            "snp.measurement"
        ),
        (
            "no ID block allowed", SNPPolicy(allowDebug: true, allowedIDKeyDigests: [[UInt8](repeating: 0, count: 48)]),
            nil
        ),
        (
            "ID key required", SNPPolicy(allowDebug: true, allowedIDKeyDigests: [[UInt8](repeating: 1, count: 48)]),
            "snp.id-key"
        ),
    ]

    @Test("report policies", arguments: policyCases)
    func policies(name: String, policy: SNPPolicy, failing: String?) throws {
        let input = try Self.inputs()
        let report = try SNPValidator.validate(
            report: input.report,
            vcek: input.vcek,
            askArk: input.askArk,
            policy: policy,
            at: Self.time
        )
        #expect(report.failures.map(\.policy) == (failing.map { [$0] } ?? []), "\(name)")
    }

    @Test("short, long and old reports are refused with typed errors")
    func malformed() throws {
        let report = try Self.inputs().report
        #expect(
            (#expect(throws: AttestationError.self) { try SNPReport(bytes: report.prefix(1183)) })?.code == .truncated
        )
        #expect((#expect(throws: AttestationError.self) { try SNPReport(bytes: report + [0]) })?.code == .trailingBytes)
        var old = report
        old[0] = 1
        #expect((#expect(throws: AttestationError.self) { try SNPReport(bytes: old) })?.code == .unsupported)
    }
}
