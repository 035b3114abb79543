// attestation-bench: validations per second on one core for the three hot paths of issue 5.
//   attestation-bench [--testdata DIR] [--seconds S] [--only tpm|snp|event-log]... [--check-p384 N] [--check-p256 N]
// DIR defaults to ../shared/testdata (relative to the working directory). --check-p384 N (--check-p256 N)
// first checks P384Verifier (P256Verifier) against swift-crypto on N random keys, messages and signatures and
// their tampered variants, in the optimized build (the unit test runs a few hundred in a debug build), and
// exits 1 on any disagreement.
//
// Each validator is measured beside the bare signature verification it is built on, in alternating
// batches of 50, so that both see the same machine load and the difference is the validator's own cost.
import ArgumentParser
import Attestation
import BenchSupport
import Crypto
import Foundation

/// The command line.
struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attestation-bench",
        abstract: "TPM quote, SEV-SNP report and event-log validations per second (--seconds 2 by default).")

    @Option(help: ArgumentHelp("The shared test data (SEV-SNP reports and certificates, event logs).", valueName: "dir"))
    var testdata = "../shared/testdata"
    @OptionGroup var duration: SecondsOption
    @Option(help: ArgumentHelp("Run only this section: tpm, snp or event-log (repeatable).", valueName: "section"))
    var only: [String] = []
    @Option(name: .customLong("check-p384"), help: ArgumentHelp("Cross-check P384Verifier on N random triples first.", valueName: "n"))
    var p384Checks = 0
    @Option(name: .customLong("check-p256"), help: ArgumentHelp("Cross-check P256Verifier on N random triples first.", valueName: "n"))
    var p256Checks = 0
}

let options = Options.parseOrExit()
let testdata = options.testdata
let seconds = options.duration.seconds(default: 2.0)
let only = Set(options.only)
let p384Checks = options.p384Checks
let p256Checks = options.p256Checks

/// Whether the section `name` runs.
@MainActor func selected(_ name: String) -> Bool { only.isEmpty || only.contains(name) }

/// One measured operation: iterations and seconds spent in it.
struct Rate {
    var count = 0
    var seconds = 0.0
    var perSecond: Double { Double(count) / seconds }
    var microseconds: Double { seconds / Double(count) * 1e6 }
}

/// Runs the bodies in alternating batches of 50 for about `seconds` in all; each body must return true.
@MainActor func measure(_ bodies: [(String, () throws -> Bool)]) throws -> [Rate] {
    for (name, body) in bodies where try !body() {
        print("\(name): the validation did not succeed; no figure")
        exit(1)
    }
    var rates = [Rate](repeating: Rate(), count: bodies.count)
    let start = monotonicNanoseconds()
    repeat {
        for (index, (_, body)) in bodies.enumerated() {
            let batchStart = monotonicNanoseconds()
            for _ in 0..<50 { _ = try body() }
            rates[index].count += 50
            rates[index].seconds += elapsedSeconds(from: batchStart, to: monotonicNanoseconds())
        }
    } while elapsedSeconds(from: start, to: monotonicNanoseconds()) < seconds
    return rates
}

func line(_ text: String, _ arguments: any CVarArg...) { print(String(format: text, arguments: arguments)) }

@MainActor func read(_ name: String) -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: testdata + "/" + name) else {
        print("\(name): not found under \(testdata); pass --testdata DIR")
        exit(1)
    }
    return Array(data)
}

func be16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
func tpm2b(_ bytes: [UInt8]) -> [UInt8] { be16(bytes.count) + bytes }

/// One key of a cross-check: signs (raw r || s), and says whether swift-crypto and the pure-Swift
/// verifier accept a raw signature over a message.
struct CheckedKey {
    let sign: ([UInt8]) throws -> [UInt8]
    let swiftCrypto: ([UInt8], [UInt8]) -> Bool
    let ours: ([UInt8], [UInt8]) -> Bool
}

/// `name` against swift-crypto on `rounds` random triples: every valid signature accepted by both,
/// every tampered signature, other message and other key refused by both; exits 1 on any disagreement.
func crossCheck(_ name: String, label: String, rounds: Int, keys: [CheckedKey]) throws {
    var agreed = 0
    var disagreements: [String] = []
    for round in 0..<rounds {
        let key = keys[round % keys.count]
        let otherKey = keys[(round + 1) % keys.count]
        let message = (0..<Int.random(in: 0...256)).map { _ in UInt8.random(in: 0...255) }
        let raw = try key.sign(message)
        var tampered = raw
        tampered[Int.random(in: 0..<raw.count)] ^= 1 << UInt8.random(in: 0...7)
        let other = message + [UInt8.random(in: 0...255)]
        let cases: [(String, Bool, Bool)] = [
            ("valid", key.swiftCrypto(raw, message), key.ours(raw, message)),
            ("tampered signature", key.swiftCrypto(tampered, message), key.ours(tampered, message)),
            ("other message", key.swiftCrypto(raw, other), key.ours(raw, other)),
            ("other key", otherKey.swiftCrypto(raw, message), otherKey.ours(raw, message)),
        ]
        for (label, theirs, ours) in cases {
            if theirs == ours && ours == (label == "valid") {
                agreed += 1
            } else {
                disagreements.append("round \(round) \(label): swift-crypto \(theirs), \(name) \(ours)")
            }
        }
    }
    print("\(label)  \(rounds) random triples, \(agreed) verifications agreed with swift-crypto (valid accepted, tampered refused), \(disagreements.count) disagreed")
    for line in disagreements.prefix(10) { print("            " + line) }
    if !disagreements.isEmpty { exit(1) }
}

// 0. The pure-Swift verifiers against swift-crypto, in this optimized build.
if p384Checks > 0 {
    let keys = try (0..<64).map { _ in
        let key = P384.Signing.PrivateKey()
        let verifier = try P384Verifier(key.publicKey)
        return CheckedKey(
            sign: { Array(try key.signature(for: $0).rawRepresentation) },
            swiftCrypto: { raw, message in
                (try? P384.Signing.ECDSASignature(rawRepresentation: raw)).map { key.publicKey.isValidSignature($0, for: message) } ?? false
            },
            ours: { raw, message in verifier.isValidSignature(rawRepresentation: raw, digest: Array(SHA384.hash(data: message))) }
        )
    }
    try crossCheck("P384Verifier", label: "p384-check", rounds: p384Checks, keys: keys)
}
if p256Checks > 0 {
    let keys = try (0..<64).map { _ in
        let key = P256.Signing.PrivateKey()
        let verifier = try P256Verifier(key.publicKey)
        return CheckedKey(
            sign: { Array(try key.signature(for: $0).rawRepresentation) },
            swiftCrypto: { raw, message in
                (try? P256.Signing.ECDSASignature(rawRepresentation: raw)).map { key.publicKey.isValidSignature($0, for: message) } ?? false
            },
            ours: { raw, message in verifier.isValidSignature(rawRepresentation: raw, digest: Array(SHA256.hash(data: message))) }
        )
    }
    try crossCheck("P256Verifier", label: "p256-check", rounds: p256Checks, keys: keys)
}

// 1. A native evidence document with an ECDSA P-256 AK quote over 24 SHA-256 PCRs, made in process
//    with the layout a TPM produces (the verifier's work is the same as for a real quote).
if selected("tpm") {
    let akKey = P256.Signing.PrivateKey()
    let akVerifyingKey = akKey.publicKey
    let point = Array(akVerifyingKey.x963Representation)
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
    let ecdsa = Array(try akKey.signature(for: SHA256.hash(data: attest)).rawRepresentation)
    let signature: [UInt8] = [0x00, 0x18, 0x00, 0x0B] + tpm2b(Array(ecdsa.prefix(32))) + tpm2b(Array(ecdsa.suffix(32)))
    let document = NativeTPMEvidenceDocument(akPublic: akPublic, attest: attest, signature: signature, pcrs: pcrs, userDataDigest: userData).serialized()
    let now = Date()
    // The AK allow-listed as a prepared key (parsed and made usable once, as a verifier holds its trusted AKs).
    let prepared = TPMQuotePolicy(akTrust: AKTrust(allowedKeys: [try PreparedAK(bytes: akPublic)]))
    // The AK allow-listed by digest only: its key is parsed and made usable for every quote.
    let byDigest = TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [try TPMTPublic(bytes: akPublic).keyDigest()]))
    // The same document with an RSASSA signature, which the P-256 AK cannot have made: every policy runs, the
    // signature policy refuses at once, so this is the validator's own work without the ECDSA verify.
    let unsigned = NativeTPMEvidenceDocument(akPublic: akPublic, attest: attest, signature: [0x00, 0x14, 0x00, 0x0B] + tpm2b([1, 2, 3]),
                                             pcrs: pcrs, userDataDigest: userData).serialized()
    // The AK as a bare P256Verifier: the key's table (per key), and the first verification of the process,
    // which builds the generator's table (once per process; --check-p256 would have built it already).
    let tableStart = ContinuousClock.now
    let tableRounds = 20
    for _ in 0..<tableRounds { _ = try P256Verifier(akVerifyingKey) }
    let tableDuration = (ContinuousClock.now - tableStart) / tableRounds
    let p256Verifier = try P256Verifier(akVerifyingKey)
    let attestDigest = Array(SHA256.hash(data: attest))
    let firstStart = ContinuousClock.now
    _ = p256Verifier.isValidSignature(rawRepresentation: ecdsa, digest: attestDigest)
    let firstDuration = ContinuousClock.now - firstStart
    let rates = try measure([
        ("tpm", { try TPMEvidenceValidator.validate(native: document, nonce: nonce, userDataDigest: userData, policy: prepared, at: now).isValid }),
        ("p256", { akVerifyingKey.isValidSignature(try P256.Signing.ECDSASignature(rawRepresentation: ecdsa), for: SHA256.hash(data: attest)) }),
        ("tpm by digest", { try TPMEvidenceValidator.validate(native: document, nonce: nonce, userDataDigest: userData, policy: byDigest, at: now).isValid }),
        ("tpm without verify", {
            let report = try TPMEvidenceValidator.validate(native: unsigned, nonce: nonce, userDataDigest: userData, policy: prepared, at: now)
            return report.failures.map(\.policy) == ["tpm.quote.signature"]
        }),
        ("p256 P256Verifier", { p256Verifier.isValidSignature(rawRepresentation: ecdsa, digest: attestDigest) }),
    ])
    line("tpm-quote   native document, ECDSA P-256 AK (prepared), 24 SHA-256 PCRs: %6.0f validations/s (%5.1f µs each; goal ≥ 15000/s)",
         rates[0].perSecond, rates[0].microseconds)
    line("            beside it, the bare P256Verifier verify the prepared AK uses: %6.0f/s             (%5.1f µs): the validator adds %.1f µs",
         rates[4].perSecond, rates[4].microseconds, rates[0].microseconds - rates[4].microseconds)
    line("            the bare swift-crypto (BoringSSL) P-256 verify of the quote:  %6.0f/s             (%5.1f µs)",
         rates[1].perSecond, rates[1].microseconds)
    line("            the same document, AK allow-listed by digest only:           %6.0f validations/s (%5.1f µs each)",
         rates[2].perSecond, rates[2].microseconds)
    line("            its own work, every policy but the ECDSA verify:                                  %5.1f µs",
         rates[3].microseconds)
    print("            P256Verifier per-key table: \(P256Verifier.tableBytes) bytes, built in \(tableDuration) (mean of \(tableRounds))"
          + (p256Checks > 0 ? "" : "; first verification of the process, with the generator's table: \(firstDuration)"))
}

// 2. The real SEV-SNP report with its chain verified once and cached.
if selected("snp") {
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
    let policy = SNPPolicy(allowDebug: true, expectedReportData: Array(reportBytes[0x50..<0x90]))
    let context = ValidationContext(time: snpTime)
    // The report's own signature, verified bare by swift-crypto (BoringSSL) and by Attestation's P384Verifier.
    let report = try SNPReport(bytes: reportBytes)
    let signature = try P384.Signing.ECDSASignature(rawRepresentation: report.signatureRS)
    let verifier = try P384Verifier(chain.endorsementKey)
    let rates = try measure([
        ("snp", { SNPValidator.validate(report: try SNPReport(bytes: reportBytes), chain: chain, policy: policy, context: context).isValid }),
        ("p384 swift-crypto", { chain.endorsementKey.isValidSignature(signature, for: SHA384.hash(data: reportBytes[0..<SNPReport.signedSize])) }),
        ("p384 P384Verifier", {
            SHA384.hash(data: reportBytes[0..<SNPReport.signedSize]).withUnsafeBytes {
                verifier.isValidSignature(rawRepresentation: report.signatureRS, digest: $0)
            }
        }),
    ])
    line("sev-snp     report with cached VCEK<-ASK<-ARK chain:                      %6.0f validations/s (%5.1f µs each; goal ≥ 2000/s)",
         rates[0].perSecond, rates[0].microseconds)
    line("            beside it, bare P-384 verify of the report: swift-crypto (BoringSSL) %6.0f/s (%5.1f µs), Attestation's P384Verifier %6.0f/s (%5.1f µs)",
         rates[1].perSecond, rates[1].microseconds, rates[2].perSecond, rates[2].microseconds)
    print("            chain verification once (3 RSA-PSS 4096 and the VCEK key prepared): \(chainDuration)")
}

// 3. Parse and replay of the largest event log in the test data.
if selected("event-log") {
    let logs = (try? FileManager.default.contentsOfDirectory(atPath: testdata + "/tpm-eventlogs")) ?? []
    let largest = logs.filter { $0.hasSuffix("eventlog") }.max { read("tpm-eventlogs/" + $0).count < read("tpm-eventlogs/" + $1).count } ?? ""
    let logBytes = read("tpm-eventlogs/" + largest)
    let parsed = try TCGEventLog(bytes: logBytes)
    let bank: TPMAlgorithm = parsed.algorithms[.sha256] != nil ? .sha256 : .sha1
    let rates = try measure([("event log", { !(try TCGEventLog(bytes: logBytes).replay(bank: bank)).isEmpty })])
    line("event-log   parse + %@ replay of %@ (%d bytes, %d events): %.3f ms each (goal ≤ 2 ms)",
         bank.description, largest, logBytes.count, parsed.events.count, rates[0].microseconds / 1e3)
}
