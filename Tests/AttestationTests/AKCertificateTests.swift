import Attestation
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

/// AK trust through a certificate chain (swift-certificates' Verifier), with a CA made in the test.
@Suite(.needsSwtpm)
struct AKCertificateTests {
    struct CA {
        let key = P256.Signing.PrivateKey()
        let certificate: Certificate
        let name: DistinguishedName

        init(_ commonName: String) throws {
            name = try DistinguishedName { CommonName(commonName) }
            certificate = try Certificate(
                version: .v3,
                serialNumber: .init(),
                publicKey: .init(key.publicKey),
                notValidBefore: Date(timeIntervalSince1970: 1_700_000_000),
                notValidAfter: Date(timeIntervalSince1970: 2_000_000_000),
                issuer: name,
                subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                    KeyUsage(keyCertSign: true)
                },
                issuerPrivateKey: .init(key)
            )
        }

        /// An AK certificate for `spki`, valid 2023-11 to 2033-05.
        func issue(
            spki: [UInt8],
            notValidAfter: Date = Date(timeIntervalSince1970: 2_000_000_000)
        ) throws -> Certificate {
            try Certificate(
                version: .v3,
                serialNumber: .init(),
                publicKey: try Certificate.PublicKey(derEncoded: spki),
                notValidBefore: Date(timeIntervalSince1970: 1_700_000_000),
                notValidAfter: notValidAfter,
                issuer: name,
                subject: try DistinguishedName { CommonName("swtpm AK") },
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: Certificate.Extensions(),
                issuerPrivateKey: .init(key)
            )
        }
    }

    static let time = Date(timeIntervalSince1970: 1_800_000_000)

    enum Case: String, CaseIterable, Sendable { case valid, otherRoot, otherKey, expired }

    @Test(
        "an AK certified by a configured root is trusted; other roots, keys or times are not",
        arguments: Case.allCases
    )
    func chain(testCase: Case) async throws {
        let quotes = try SwtpmQuotes.get()
        let quote = quotes.ecc
        let ak = try TPMTPublic(bytes: quote.akPublic)
        let root = try CA("Asterism test AK root")
        let certifiedKey = testCase == .otherKey ? try TPMTPublic(bytes: quotes.ecc384.akPublic) : ak
        let certificate = try root.issue(
            spki: try certifiedKey.subjectPublicKeyInfo(),
            notValidAfter: testCase == .expired
                ? Date(timeIntervalSince1970: 1_750_000_000) : Date(timeIntervalSince1970: 2_000_000_000)
        )
        let roots = testCase == .otherRoot ? [try CA("another root").certificate] : [root.certificate]
        let result = await AKCertificateVerifier.verify(
            akCertificate: certificate,
            intermediates: [],
            roots: roots,
            akPublic: ak,
            at: Self.time
        )
        switch (testCase, result) {
        case (.valid, .success(let certified)):
            let policy = TPMQuotePolicy(
                akTrust: AKTrust(certifiedKeys: [certified]),
                expectedQualifyingData: quote.qualifyingData
            )
            let report = TPMQuoteValidator.validate(try quote.evidence, policy: policy, context: .init(time: Self.time))
            #expect(report.isValid, "\(report.failures)")
            #expect(report.result(of: "tpm.ak.trust")?.message == "the AK's certificate chains to a configured root")
        case (.valid, .failure(let failure)):
            Issue.record("valid chain refused: \(failure.result)")
        case (_, .success):
            Issue.record("\(testCase) accepted")
        case (_, .failure(let failure)):
            #expect(failure.result.policy == AKCertificateVerifier.policyName)
            #expect(failure.result.outcome == .failed)
        }
    }
}
