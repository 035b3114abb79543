// attestation-bench: validations per second on one core for the three hot paths of issue 5.
//   attestation-bench [--testdata DIR] [--seconds S]
// DIR defaults to ../shared/testdata (relative to the working directory).
import Attestation
import Crypto
import Foundation

var testdata = "../shared/testdata"
var seconds = 2.0
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--testdata": testdata = arguments.popFirst() ?? testdata
    case "--seconds": seconds = Double(arguments.popFirst() ?? "") ?? seconds
    default:
        FileHandle.standardError.write(Data("usage: attestation-bench [--testdata DIR] [--seconds S]\n".utf8))
        exit(2)
    }
}

/// Runs `body` repeatedly for about `seconds` and returns (iterations, seconds elapsed).
@MainActor func measure(_ name: String, _ body: () throws -> Bool) rethrows -> (Int, Double) {
    guard try body() else {
        print("\(name): the validation did not succeed; no figure")
        exit(1)
    }
    let clock = ContinuousClock()
    let start = clock.now
    var count = 0
    var elapsed = 0.0
    repeat {
        for _ in 0..<50 { _ = try body() }
        count += 50
        let duration = clock.now - start
        elapsed = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    } while elapsed < seconds
    return (count, elapsed)
}

func be16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
func tpm2b(_ bytes: [UInt8]) -> [UInt8] { be16(bytes.count) + bytes }

// 1. A native evidence document with an ECDSA P-256 AK quote over 24 SHA-256 PCRs, made in process
//    with the layout a TPM produces (the verifier's work is the same as for a real quote).
let akKey = P256.Signing.PrivateKey()
let point = Array(akKey.publicKey.x963Representation)
let akPublic: [UInt8] = [0x00, 0x23, 0x00, 0x0B, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x18, 0x00, 0x0B, 0x00, 0x03, 0x00, 0x10]
    + tpm2b(Array(point[1...32])) + tpm2b(Array(point[33...64]))
var pcrs: [Int: [UInt8]] = [:]
for index in 0..<24 { pcrs[index] = Array(SHA256.hash(data: [UInt8(index)])) }
let nonce = [UInt8](repeating: 0x42, count: 32)
let userData = Array(SHA256.hash(data: Array("bench".utf8)))
let qualifying = NativeTPMEvidenceDocument.qualifyingData(nonce: nonce, userDataDigest: userData)
let pcrDigest = Array(SHA256.hash(data: (0..<24).flatMap { pcrs[$0]! }))
let attest: [UInt8] = [0xFF, 0x54, 0x43, 0x47, 0x80, 0x18] + tpm2b([0x00, 0x0B] + [UInt8](repeating: 0xAB, count: 32)) + tpm2b(qualifying)
    + [UInt8](repeating: 0, count: 17) + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 1, 0x00, 0x0B, 3, 0xFF, 0xFF, 0xFF] + tpm2b(pcrDigest)
let ecdsa = try akKey.signature(for: SHA256.hash(data: attest)).rawRepresentation
let signature: [UInt8] = [0x00, 0x18, 0x00, 0x0B] + tpm2b(Array(ecdsa.prefix(32))) + tpm2b(Array(ecdsa.suffix(32)))
let document = NativeTPMEvidenceDocument(akPublic: akPublic, attest: attest, signature: signature, pcrs: pcrs, userDataDigest: userData).serialized()
let akDigest = try TPMTPublic(bytes: akPublic).keyDigest()
let quotePolicy = TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [akDigest]))
let now = Date()
let (quotes, quoteSeconds) = try measure("tpm") {
    try TPMEvidenceValidator.validate(native: document, nonce: nonce, userDataDigest: userData, policy: quotePolicy, at: now).isValid
}
print(String(format: "tpm-quote      native document, ECDSA P-256 AK, 24 SHA-256 PCRs: %8.0f validations/s (%.1f µs each, goal ≥ 15000/s)",
             Double(quotes) / quoteSeconds, quoteSeconds / Double(quotes) * 1e6))

// 2. The real SEV-SNP report with its chain verified once and cached.
@MainActor func read(_ name: String) -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: testdata + "/" + name) else {
        print("\(name): not found under \(testdata); pass --testdata DIR")
        exit(1)
    }
    return Array(data)
}
let reportBytes = read("sev-snp/report-milan-vcek.bin")
let bundle = try AMDCertificate.pemBundle(String(decoding: read("sev-snp/amd-ask-ark-milan.pem"), as: UTF8.self))
let vcek = try AMDCertificate(derEncoded: read("sev-snp/vcek-milan.der"))
let snpTime = Date(timeIntervalSince1970: 1_735_689_600)
let chainStart = ContinuousClock.now
guard case .success(let chain) = SNPValidator.verifyChain(vcek: vcek, ask: bundle[0], ark: bundle[1], at: snpTime) else {
    print("sev-snp: the chain did not verify")
    exit(1)
}
let chainDuration = ContinuousClock.now - chainStart
let snpPolicy = SNPPolicy(allowDebug: true, expectedReportData: Array(reportBytes[0x50..<0x90]))
let (reports, snpSeconds) = try measure("snp") {
    SNPValidator.validate(report: try SNPReport(bytes: reportBytes), chain: chain, policy: snpPolicy, context: ValidationContext(time: snpTime)).isValid
}
print(String(format: "sev-snp        report with cached VCEK<-ASK<-ARK chain:      %8.0f validations/s (%.1f µs each, goal ≥ 2000/s)",
             Double(reports) / snpSeconds, snpSeconds / Double(reports) * 1e6))
print("sev-snp        chain verification once (3 RSA-PSS 4096):      \(chainDuration)")

// 3. Parse and replay of the largest event log in the test data.
let logs = (try? FileManager.default.contentsOfDirectory(atPath: testdata + "/tpm-eventlogs")) ?? []
let largest = logs.filter { $0.hasSuffix("eventlog") }.max { read("tpm-eventlogs/" + $0).count < read("tpm-eventlogs/" + $1).count } ?? ""
let logBytes = read("tpm-eventlogs/" + largest)
let parsed = try TCGEventLog(bytes: logBytes)
let bank: TPMAlgorithm = parsed.algorithms[.sha256] != nil ? .sha256 : .sha1
let (replays, replaySeconds) = try measure("event log") { !(try TCGEventLog(bytes: logBytes).replay(bank: bank)).isEmpty }
print(String(format: "event-log      parse + %@ replay of %@ (%d bytes, %d events): %.3f ms each (goal ≤ 2 ms)",
             bank.description, largest, logBytes.count, parsed.events.count, replaySeconds / Double(replays) * 1e3))

// Baselines: the signature verifications alone, to show what the validators add.
let p256Signature = try akKey.signature(for: SHA256.hash(data: attest))
let (p256, p256Seconds) = measure("p256") { akKey.publicKey.isValidSignature(p256Signature, for: SHA256.hash(data: attest)) }
let p384Key = P384.Signing.PrivateKey()
let p384Signature = try p384Key.signature(for: SHA384.hash(data: reportBytes[0..<0x2A0]))
let (p384, p384Seconds) = measure("p384") { p384Key.publicKey.isValidSignature(p384Signature, for: SHA384.hash(data: reportBytes[0..<0x2A0])) }
print(String(format: "baseline       bare ECDSA P-256 verify: %8.0f/s; bare ECDSA P-384 verify: %8.0f/s (swift-crypto/BoringSSL)",
             Double(p256) / p256Seconds, Double(p384) / p384Seconds))
