import Crypto
import Foundation
import Testing

@testable import Attestation

/// ECDSA signatures of quotes (P-256 and P-384 AKs) and SEV-SNP reports, verified through swift-crypto
/// (BoringSSL): the hash each TPM scheme names, tampered signatures, r and s out of range, invalid keys,
/// and AKs prepared once against AKs parsed per quote.
struct ECDSASignatureTests {
    /// The group orders n, big-endian.
    static let p256Order = bytes(fromHex: "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")!
    static let p384Order = bytes(
        fromHex: "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973"
    )!
    /// The P-256 field prime p, big-endian.
    static let p256Prime = bytes(fromHex: "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff")!

    /// `a − b` for big-endian numbers of one length with a ≥ b.
    static func subtract(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
        var out = a
        var borrow = 0
        for index in stride(from: a.count - 1, through: 0, by: -1) {
            let value = Int(a[index]) - Int(b[index]) - borrow
            out[index] = UInt8((value + 256) % 256)
            borrow = value < 0 ? 1 : 0
        }
        return out
    }

    /// `value + small` for a big-endian number (no overflow out of its length in these tests).
    static func add(_ value: [UInt8], _ small: UInt8) -> [UInt8] {
        var out = value
        var carry = Int(small)
        for index in stride(from: out.count - 1, through: 0, by: -1) where carry > 0 {
            let sum = Int(out[index]) + carry
            out[index] = UInt8(sum & 0xFF)
            carry = sum >> 8
        }
        return out
    }

    /// A TPMT_PUBLIC of a restricted ECC signing key on `curve` (ECDSA with SHA-256 or SHA-384) with the point `x963`.
    static func akPublic(x963 point: [UInt8], curve: TPMECCCurve) -> [UInt8] {
        let size = (point.count - 1) / 2
        let (curveID, hashID): ([UInt8], [UInt8]) =
            curve == .nistP256 ? ([0x00, 0x03], [0x00, 0x0B]) : ([0x00, 0x04], [0x00, 0x0C])
        return [0x00, 0x23, 0x00, 0x0B, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x18] + hashID + curveID
            + [0x00, 0x10]
            + tpm2b(Array(point[1...size])) + tpm2b(Array(point[(size + 1)...]))
    }

    static func tpm2b(_ bytes: [UInt8]) -> [UInt8] { [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes }

    /// One AK of either curve: its key made usable both ways, a signer, and its sizes.
    struct Key {
        let curve: TPMECCCurve
        let prepared: TPMVerificationKey
        let plain: TPMVerificationKey
        let order: [UInt8]
        let sign: (_ message: [UInt8], _ hash: TPMAlgorithm) throws -> [UInt8]

        init(_ curve: TPMECCCurve) throws {
            self.curve = curve
            let point: [UInt8]
            if curve == .nistP256 {
                let key = P256.Signing.PrivateKey()
                point = Array(key.publicKey.x963Representation)
                order = ECDSASignatureTests.p256Order
                sign = { message, hash in
                    Array(try Key.digest(message, hash) { try key.signature(for: $0).rawRepresentation })
                }
            } else {
                let key = P384.Signing.PrivateKey()
                point = Array(key.publicKey.x963Representation)
                order = ECDSASignatureTests.p384Order
                sign = { message, hash in
                    Array(try Key.digest(message, hash) { try key.signature(for: $0).rawRepresentation })
                }
            }
            let akPublic = try TPMTPublic(bytes: ECDSASignatureTests.akPublic(x963: point, curve: curve))
            prepared = try PreparedAK(akPublic).verificationKey
            plain = try TPMVerificationKey(akPublic.key)
        }

        /// `body` applied to `message` hashed with `hash`.
        static func digest<R>(_ message: [UInt8], _ hash: TPMAlgorithm, _ body: (any Digest) throws -> R) throws -> R {
            switch hash {
            case .sha1: try body(Insecure.SHA1.hash(data: message))
            case .sha384: try body(SHA384.hash(data: message))
            case .sha512: try body(SHA512.hash(data: message))
            default: try body(SHA256.hash(data: message))
            }
        }
    }

    @Test(
        "P-256 and P-384 AKs verify every hash a TPM names, prepared or not, and refuse tampered signatures and r or s out of range",
        arguments: [TPMECCCurve.nistP256, .nistP384],
        [TPMAlgorithm.sha256, .sha384, .sha512, .sha1]
    )
    func quoteSignatures(curve: TPMECCCurve, hash: TPMAlgorithm) throws {
        let key = try Key(curve)
        #expect(
            key.prepared.subjectPublicKeyInfo == key.plain.subjectPublicKeyInfo
                && key.prepared.digest == key.plain.digest
        )
        let message = Array("quote".utf8)
        let raw = try key.sign(message, hash)
        let size = raw.count / 2
        let (r, s) = (Array(raw[..<size]), Array(raw[size...]))
        let valid = TPMTSignature.ecdsa(hash: hash, r: r, s: s)
        // Short r and s (leading zeros dropped, as a TPM may send them) are the same integers.
        let short = TPMTSignature.ecdsa(hash: hash, r: Array(r.drop { $0 == 0 }), s: Array(s.drop { $0 == 0 }))
        // (r, n − s) is also a valid signature: ECDSA is malleable, and a quote's signature is no identifier.
        let negated = TPMTSignature.ecdsa(hash: hash, r: r, s: Self.subtract(key.order, s))
        for signature in [valid, short, negated] {
            #expect(key.prepared.isValid(signature, over: message), "\(signature)")
            #expect(key.plain.isValid(signature, over: message), "\(signature)")
        }
        var flipped = r
        flipped[5] ^= 0x10
        let otherHash: TPMAlgorithm = hash == .sha256 ? .sha384 : .sha256
        let zero = [UInt8](repeating: 0, count: size)
        let invalid: [TPMTSignature] = [
            .ecdsa(hash: hash, r: flipped, s: s), .ecdsa(hash: hash, r: r, s: flipped),
            .ecdsa(hash: otherHash, r: r, s: s),
            .ecdsa(hash: hash, r: [0] + r, s: s), .ecdsa(hash: hash, r: r, s: [0] + s), .ecdsa(hash: hash, r: [], s: s),
            .ecdsa(hash: hash, r: zero, s: s), .ecdsa(hash: hash, r: r, s: zero),
            .ecdsa(hash: hash, r: key.order, s: s),
            .ecdsa(hash: hash, r: r, s: key.order), .ecdsa(hash: hash, r: Self.add(key.order, 1), s: s),
            .ecdsa(hash: hash, r: r, s: [UInt8](repeating: 0xFF, count: size)), .ecdsa(hash: .null, r: r, s: s),
            .rsassa(hash: hash, signature: raw), .rsapss(hash: hash, signature: raw),
        ]
        for signature in invalid {
            #expect(!key.prepared.isValid(signature, over: message), "\(signature)")
            #expect(!key.plain.isValid(signature, over: message), "\(signature)")
        }
        #expect(!key.prepared.isValid(valid, over: message + [0]))
        #expect(!(try Key(curve)).prepared.isValid(valid, over: message))
    }

    /// RFC 6979 §A.2.5: the P-256 key and deterministic signatures over "sample" and "test".
    static let rfc6979Key = bytes(
        fromHex: "04"
            + "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"
            + "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"
    )!

    static let rfc6979Vectors: [(message: String, hash: TPMAlgorithm, r: String, s: String)] = [
        (
            "sample", .sha256, "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716",
            "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8"
        ),
        (
            "test", .sha256, "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367",
            "019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083"
        ),
        (
            "sample", .sha1, "61340c88c3aaebeb4f6d667f672ca9759a6ccaa9fa8811313039ee4a35471d32",
            "6d7f147dac089441bb2e2fe8f7a3fa264b9c475098fdcf6e00d7c996e1b8b7eb"
        ),
        (
            "sample", .sha512, "8496a60b5e9b47c825488827e0495b0e3fa109ec4568fd3f8d1097678eb97f00",
            "2362ab1adbe2b8adf9cb9edab740ea6049c028114f2460f96554f61fae3302fe"
        ),
    ]

    @Test(
        "RFC 6979 known answers verify through a prepared AK (the TPM scheme's hash, digests longer and shorter than 256 bits)",
        arguments: 0..<4
    )
    func knownAnswers(index: Int) throws {
        let vector = Self.rfc6979Vectors[index]
        let key = try PreparedAK(bytes: Self.akPublic(x963: Self.rfc6979Key, curve: .nistP256)).verificationKey
        let message = Array(vector.message.utf8)
        let r = try #require(bytes(fromHex: vector.r))
        let s = try #require(bytes(fromHex: vector.s))
        #expect(key.isValid(.ecdsa(hash: vector.hash, r: r, s: s), over: message))
        var changed = s
        changed[31] ^= 1
        #expect(!key.isValid(.ecdsa(hash: vector.hash, r: r, s: changed), over: message))
        #expect(!key.isValid(.ecdsa(hash: vector.hash, r: r, s: s), over: message + [0]))
    }

    @Test("AK points off the curve, with a coordinate ≥ p, longer than the curve's size or at zero are refused")
    func invalidKeys() throws {
        let point = Array(P256.Signing.PrivateKey().publicKey.x963Representation)
        let (x, y) = (Array(point[1...32]), Array(point[33...]))
        var offCurve = y
        offCurve[31] ^= 1
        let cases: [(String, [UInt8], [UInt8])] = [
            ("off curve", x, offCurve), ("x above p", Self.add(Self.p256Prime, 1), y), ("x = p", Self.p256Prime, y),
            ("y above p", x, Self.add(Self.p256Prime, 2)), ("x of 33 bytes", [1] + x, y), ("zero", [], []),
        ]
        for (name, badX, badY) in cases {
            #expect(throws: AttestationError.self, "\(name)") {
                try TPMVerificationKey(.ecc(curve: .nistP256, x: badX, y: badY))
            }
        }
        // Leading zeros are padding: a short coordinate is the same number.
        let short = try TPMVerificationKey(
            .ecc(curve: .nistP256, x: Array(x.drop { $0 == 0 }), y: Array(y.drop { $0 == 0 }))
        )
        #expect(short.digest == (try TPMVerificationKey(.ecc(curve: .nistP256, x: x, y: y))).digest)
    }

    @Test(
        "a quote made in process validates with its prepared P-256 AK like with its digest, and a forged one fails its signature only"
    )
    func preparedQuote() throws {
        let key = P256.Signing.PrivateKey()
        let akPublic = Self.akPublic(x963: Array(key.publicKey.x963Representation), curve: .nistP256)
        var pcrs: [Int: [UInt8]] = [:]
        for index in 0..<24 { pcrs[index] = Array(SHA256.hash(data: [UInt8(index)])) }
        let nonce = [UInt8](repeating: 0x42, count: 32)
        let userData = Array(SHA256.hash(data: Array("p256".utf8)))
        let qualifying = NativeTPMEvidenceDocument.qualifyingData(nonce: nonce, userDataDigest: userData)
        let pcrDigest = Array(SHA256.hash(data: (0..<24).flatMap { pcrs[$0]! }))
        let attest: [UInt8] =
            [0xFF, 0x54, 0x43, 0x47, 0x80, 0x18] + Self.tpm2b([0x00, 0x0B] + [UInt8](repeating: 0xAB, count: 32))
            + Self.tpm2b(qualifying) + [UInt8](repeating: 0, count: 17) + [UInt8](repeating: 0, count: 8)
            + [0, 0, 0, 1, 0x00, 0x0B, 3, 0xFF, 0xFF, 0xFF] + Self.tpm2b(pcrDigest)
        func document(signedOver signed: [UInt8]) throws -> [UInt8] {
            let ecdsa = Array(try key.signature(for: SHA256.hash(data: signed)).rawRepresentation)
            let signature: [UInt8] =
                [0x00, 0x18, 0x00, 0x0B] + Self.tpm2b(Array(ecdsa.prefix(32))) + Self.tpm2b(Array(ecdsa.suffix(32)))
            return NativeTPMEvidenceDocument(
                akPublic: akPublic,
                attest: attest,
                signature: signature,
                pcrs: pcrs,
                userDataDigest: userData
            ).serialized()
        }
        let prepared = TPMQuotePolicy(akTrust: AKTrust(allowedKeys: [try PreparedAK(bytes: akPublic)]))
        let byDigest = TPMQuotePolicy(
            akTrust: AKTrust(allowedKeyDigests: [try TPMTPublic(bytes: akPublic).keyDigest()])
        )
        let now = Date()
        let good = try document(signedOver: attest)
        let report = try TPMEvidenceValidator.validate(
            native: good,
            nonce: nonce,
            userDataDigest: userData,
            policy: prepared,
            at: now
        )
        #expect(report.isValid, "\(report.failures)")
        #expect(
            report
                == (try TPMEvidenceValidator.validate(
                    native: good,
                    nonce: nonce,
                    userDataDigest: userData,
                    policy: byDigest,
                    at: now
                ))
        )

        var other = attest
        other[8] ^= 1
        let forged = try document(signedOver: other)
        let refused = try TPMEvidenceValidator.validate(
            native: forged,
            nonce: nonce,
            userDataDigest: userData,
            policy: prepared,
            at: now
        )
        #expect(refused.failures.map(\.policy) == ["tpm.quote.signature"])
        #expect(
            refused
                == (try TPMEvidenceValidator.validate(
                    native: forged,
                    nonce: nonce,
                    userDataDigest: userData,
                    policy: byDigest,
                    at: now
                ))
        )
    }

    @Test("swtpm's P-256 and P-384 quotes verify with their prepared AKs, and fail once tampered", .needsSwtpm)
    func swtpmQuotes() throws {
        let quotes = try SwtpmQuotes.get()
        for quote in [quotes.ecc, quotes.ecc384] {
            let prepared = try PreparedAK(bytes: quote.akPublic)
            let evidence = try quote.evidence
            #expect(prepared.verificationKey.isValid(evidence.signature, over: evidence.attest.bytes))
            var attest = evidence.attest.bytes
            attest[attest.count - 1] ^= 1
            #expect(!prepared.verificationKey.isValid(evidence.signature, over: attest))
        }
    }

    @Test(
        "the real SEV-SNP report's signature verifies with its cached VCEK key; a changed r or s fails it",
        arguments: [0, 47, 48, 95]
    )
    func snpSignature(index: Int) throws {
        let bundle = try AMDCertificate.pemBundle(try TestVectors.text("sev-snp/amd-ask-ark-milan.pem"))
        let vcek = try AMDCertificate(derEncoded: try TestVectors.bytes("sev-snp/vcek-milan.der"))
        let time = Date(timeIntervalSince1970: 1_735_689_600)
        guard case .success(let chain) = SNPValidator.verifyChain(vcek: vcek, ask: bundle[0], ark: bundle[1], at: time)
        else {
            Issue.record("the Milan chain did not verify")
            return
        }
        let bytes = try TestVectors.bytes("sev-snp/report-milan-vcek.bin")
        let policy = SNPPolicy(allowDebug: true)
        let report = SNPValidator.validate(
            report: try SNPReport(bytes: bytes),
            chain: chain,
            policy: policy,
            context: ValidationContext(time: time)
        )
        #expect(report.result(of: "snp.signature")?.outcome == .passed)
        // r and s are 72-byte little-endian fields from 0x2A0; index 0…47 is r's low bytes, 48…95 s's.
        var changed = bytes
        changed[SNPReport.signedSize + (index < 48 ? index : 72 + index - 48)] ^= 0x01
        let refused = SNPValidator.validate(
            report: try SNPReport(bytes: changed),
            chain: chain,
            policy: policy,
            context: ValidationContext(time: time)
        )
        #expect(refused.result(of: "snp.signature")?.outcome == .failed)
    }
}
