import Attestation
import Crypto
import Foundation

/// One quote made by swtpm through tpm2-tools.
struct MadeQuote: Sendable {
    let akPublic: [UInt8]
    let attest: [UInt8]
    let signature: [UInt8]
    let bank: TPMAlgorithm
    let pcrs: [Int: [UInt8]]
    let qualifyingData: [UInt8]

    var evidence: TPMQuoteEvidence {
        get throws {
            TPMQuoteEvidence(
                akPublic: try TPMTPublic(bytes: akPublic),
                attest: try TPMSAttest(bytes: attest),
                signature: try TPMTSignature(bytes: signature),
                pcrValues: [bank: pcrs]
            )
        }
    }

    /// SHA-256 of the AK's DER SubjectPublicKeyInfo, from the AK's own bytes.
    var akDigest: [UInt8] {
        get throws { try TPMTPublic(bytes: akPublic).keyDigest() }
    }
}

/// Quotes made once per test process by a private swtpm on a free loopback port.
struct SwtpmQuotes: Sendable {
    /// The nonce and user data digest every native-bound quote uses.
    static let nonce = [UInt8](repeating: 0xA5, count: 32)
    static let userDataDigest = Array(SHA256.hash(data: Array("certificate key".utf8)))

    /// ECC P-256 AK, ECDSA/SHA-256, 24 SHA-256 PCRs, native binding.
    let ecc: MadeQuote
    /// ECC P-384 AK, ECDSA/SHA-384.
    let ecc384: MadeQuote
    /// RSA-2048 AK, RSASSA/SHA-256.
    let rsassa: MadeQuote
    /// RSA-2048 AK, RSASSA-PSS/SHA-256.
    let rsapss: MadeQuote
    /// The P-256 AK over the SHA-1 bank.
    let sha1Bank: MadeQuote
    /// The P-256 AK with Constellation's binding (user data = userDataDigest).
    let constellation: MadeQuote

    static let shared: Result<SwtpmQuotes, HarnessError> = {
        do { return .success(try make()) } catch let error as HarnessError { return .failure(error) } catch {
            return .failure(HarnessError("\(error)"))
        }
    }()

    static func get() throws -> SwtpmQuotes { try shared.get() }

    private static func make() throws -> SwtpmQuotes {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("attest-swtpm-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tpm = try SoftwareTPM()
        func tool(_ name: String, _ arguments: [String]) throws { try tpm.run(name, arguments) }
        func flush() throws {
            try tool("tpm2_flushcontext", ["-t"])
            try tool("tpm2_flushcontext", ["-s"])
        }
        let path = { (name: String) in directory + "/" + name }
        try tool("tpm2_createek", ["-c", path("ek.ctx"), "-G", "ecc", "-u", path("ek.pub")])
        // Measure something into PCRs 0-9 so the values are not the reset values.
        for pcr in 0...9 {
            let digest = hex(Array(SHA256.hash(data: Array("measurement \(pcr)".utf8))))
            try tool(
                "tpm2_pcrextend",
                ["\(pcr):sha256=\(digest),sha1=\(hex(Array(Insecure.SHA1.hash(data: [UInt8(pcr)]))))"]
            )
        }
        let nativeQualifying = NativeTPMEvidenceDocument.qualifyingData(nonce: nonce, userDataDigest: userDataDigest)
        let all24 = (0...23).map(String.init).joined(separator: ",")

        func quote(
            ak name: String,
            keyAlgorithm: String,
            hash: String,
            scheme: String,
            selection: String,
            bank: TPMAlgorithm,
            size: Int,
            qualifying: [UInt8]
        ) throws -> MadeQuote {
            try flush()
            if !FileManager.default.fileExists(atPath: path("\(name).ctx")) {
                try tool(
                    "tpm2_createak",
                    [
                        "-C", path("ek.ctx"), "-c", path("\(name).ctx"), "-G", keyAlgorithm, "-g", hash, "-s", scheme,
                        "-u", path("\(name).pub"), "-f", "tpmt",
                    ]
                )
                try flush()
            }
            let tag = "\(name)-\(bank)-\(hex(qualifying).prefix(8))"
            try tool(
                "tpm2_quote",
                [
                    "-c", path("\(name).ctx"), "-l", selection, "-q", hex(qualifying), "-m", path("\(tag).msg"),
                    "-s", path("\(tag).sig"), "-f", "tss", "-o", path("\(tag).pcrs"), "-F", "values",
                    "-g", hash, "--scheme", scheme,
                ]
            )
            let values = try read(path("\(tag).pcrs"))
            let indices = selection.split(separator: ":")[1].split(separator: ",").compactMap { Int($0) }
            guard values.count == indices.count * size else {
                throw HarnessError("pcr file \(values.count) bytes for \(indices.count) PCRs")
            }
            var pcrs: [Int: [UInt8]] = [:]
            for (position, index) in indices.enumerated() {
                pcrs[index] = Array(values[position * size..<(position + 1) * size])
            }
            return MadeQuote(
                akPublic: try read(path("\(name).pub")),
                attest: try read(path("\(tag).msg")),
                signature: try read(path("\(tag).sig")),
                bank: bank,
                pcrs: pcrs,
                qualifyingData: qualifying
            )
        }

        let ecc = try quote(
            ak: "ecc",
            keyAlgorithm: "ecc",
            hash: "sha256",
            scheme: "ecdsa",
            selection: "sha256:" + all24,
            bank: .sha256,
            size: 32,
            qualifying: nativeQualifying
        )
        let ecc384 = try quote(
            ak: "ecc384",
            keyAlgorithm: "ecc384",
            hash: "sha384",
            scheme: "ecdsa",
            selection: "sha256:0,1,2,3,4,5,6,7",
            bank: .sha256,
            size: 32,
            qualifying: nativeQualifying
        )
        let rsassa = try quote(
            ak: "rsassa",
            keyAlgorithm: "rsa",
            hash: "sha256",
            scheme: "rsassa",
            selection: "sha256:" + all24,
            bank: .sha256,
            size: 32,
            qualifying: nativeQualifying
        )
        let rsapss = try quote(
            ak: "rsapss",
            keyAlgorithm: "rsa",
            hash: "sha256",
            scheme: "rsapss",
            selection: "sha256:0,4,7,8,9,15",
            bank: .sha256,
            size: 32,
            qualifying: nativeQualifying
        )
        let sha1Bank = try quote(
            ak: "ecc",
            keyAlgorithm: "ecc",
            hash: "sha256",
            scheme: "ecdsa",
            selection: "sha1:0,1,2,3,4,5,6,7",
            bank: .sha1,
            size: 20,
            qualifying: nativeQualifying
        )
        let constellationQualifying = ConstellationVTPMDocument.qualifyingData(userData: userDataDigest, nonce: nonce)
        let constellation = try quote(
            ak: "ecc",
            keyAlgorithm: "ecc",
            hash: "sha256",
            scheme: "ecdsa",
            selection: "sha256:" + all24,
            bank: .sha256,
            size: 32,
            qualifying: constellationQualifying
        )
        return SwtpmQuotes(
            ecc: ecc,
            ecc384: ecc384,
            rsassa: rsassa,
            rsapss: rsapss,
            sha1Bank: sha1Bank,
            constellation: constellation
        )
    }

    private static func read(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else { throw HarnessError("cannot read \(path)") }
        return Array(data)
    }
}

func hex(_ bytes: [UInt8]) -> String { hexString(bytes) }
