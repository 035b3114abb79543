import Crypto
import Foundation
import Testing

@testable import Attestation

/// Attestation's pure-Swift ECDSA P-384 verifier against swift-crypto (BoringSSL), plus its arithmetic
/// against a slow reference.
struct P384VerifierTests {
    /// The group order n, big-endian.
    static let order = bytes(fromHex: "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973")!
    /// The field prime p, big-endian.
    static let prime = bytes(fromHex: "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff")!

    /// A reproducible generator (SplitMix64), so a failure can be replayed.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// A digest of arbitrary bytes, to have swift-crypto sign values no hash produces (zero, n, all ones).
    struct RawDigest: Digest {
        static let byteCount = 48
        let bytes: [UInt8]
        func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try bytes.withUnsafeBytes(body) }
        func makeIterator() -> IndexingIterator<[UInt8]> { bytes.makeIterator() }
        var description: String { hexString(bytes) }
    }

    static func randomBytes(_ count: Int, _ generator: inout SeededGenerator) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// Rounds of the differential test: thousands in an optimized build
    /// (`swift build -c release --build-tests -Xswiftc -enable-testing`); a debug build is ~100 times slower.
    #if DEBUG
    static let rounds = 240
    #else
    static let rounds = 6000
    #endif

    @Test("random keys, messages and signatures: both verifiers accept, and both refuse every tampered variant")
    func differential() throws {
        var generator = SeededGenerator(state: 0x5EED_0384)
        var keys: [(P384.Signing.PrivateKey, P384Verifier)] = []
        for _ in 0..<40 {
            let key = P384.Signing.PrivateKey()
            keys.append((key, try P384Verifier(key.publicKey)))
        }
        for round in 0..<Self.rounds {
            let (key, verifier) = keys[round % keys.count]
            let message = Self.randomBytes(Int.random(in: 0...200, using: &generator), &generator)
            let signature = try key.signature(for: message)
            let raw = Array(signature.rawRepresentation)
            let digest = Array(SHA384.hash(data: message))
            #expect(key.publicKey.isValidSignature(signature, for: message))
            #expect(verifier.isValidSignature(rawRepresentation: raw, digest: digest), "round \(round)")

            // One tampered variant per round, cycling through signature bit, message, digest and key.
            switch round % 4 {
            case 0:
                var tampered = raw
                tampered[Int.random(in: 0..<96, using: &generator)] ^= 1 << UInt8.random(in: 0...7, using: &generator)
                let theirs = (try? P384.Signing.ECDSASignature(rawRepresentation: tampered)).map { key.publicKey.isValidSignature($0, for: message) } ?? false
                #expect(theirs == verifier.isValidSignature(rawRepresentation: tampered, digest: digest))
                #expect(!verifier.isValidSignature(rawRepresentation: tampered, digest: digest))
            case 1:
                let other = message + [UInt8.random(in: 0...255, using: &generator)]
                #expect(!key.publicKey.isValidSignature(signature, for: other))
                #expect(!verifier.isValidSignature(rawRepresentation: raw, digest: Array(SHA384.hash(data: other))))
            case 2:
                var tampered = digest
                tampered[Int.random(in: 0..<48, using: &generator)] ^= 0x80
                #expect(!verifier.isValidSignature(rawRepresentation: raw, digest: tampered))
            default:
                let (otherKey, otherVerifier) = keys[(round + 1) % keys.count]
                #expect(!otherKey.publicKey.isValidSignature(signature, for: message))
                #expect(!otherVerifier.isValidSignature(rawRepresentation: raw, digest: digest))
            }
        }
    }

    @Test("digests of other sizes and values no hash gives (0, n, 2^384 − 1) verify as in swift-crypto")
    func digestsLikeSwiftCrypto() throws {
        var generator = SeededGenerator(state: 42)
        let key = P384.Signing.PrivateKey()
        let verifier = try P384Verifier(key.publicKey)
        let message = Self.randomBytes(64, &generator)
        let sha256 = SHA256.hash(data: message)
        #expect(verifier.isValidSignature(rawRepresentation: try key.signature(for: sha256).rawRepresentation, digest: Array(sha256)))
        let sha512 = SHA512.hash(data: message)
        let signature512 = try key.signature(for: sha512)
        #expect(key.publicKey.isValidSignature(signature512, for: sha512))
        #expect(verifier.isValidSignature(rawRepresentation: signature512.rawRepresentation, digest: Array(sha512)))
        for value in [[UInt8](repeating: 0, count: 48), Self.order, [UInt8](repeating: 0xFF, count: 48), Self.prime] {
            let digest = RawDigest(bytes: value)
            let signature = try key.signature(for: digest)
            #expect(key.publicKey.isValidSignature(signature, for: digest))
            #expect(verifier.isValidSignature(rawRepresentation: signature.rawRepresentation, digest: value), "\(hexString(value))")
        }
    }

    @Test("(r, n − s) verifies in both, as ECDSA allows")
    func negatedS() throws {
        let key = P384.Signing.PrivateKey()
        let verifier = try P384Verifier(key.publicKey)
        let digest = SHA384.hash(data: Array("negated".utf8))
        let raw = Array(try key.signature(for: digest).rawRepresentation)
        let s = U384(bigEndian: raw[48...])!
        let negated = Array(raw[..<48]) + P384Curve.n.subtracting(s).difference.bigEndianBytes
        let theirs = try P384.Signing.ECDSASignature(rawRepresentation: negated)
        #expect(key.publicKey.isValidSignature(theirs, for: digest))
        #expect(verifier.isValidSignature(rawRepresentation: negated, digest: Array(digest)))
    }

    static func bigEndian(_ value: [UInt8], plus small: Int) -> [UInt8] {
        var out = value
        var carry = small
        for index in stride(from: out.count - 1, through: 0, by: -1) where carry != 0 {
            let sum = Int(out[index]) + carry
            out[index] = UInt8(sum & 0xFF)
            carry = sum >> 8
        }
        return out
    }

    @Test("r or s of 0, n, above n or longer than 48 bytes is refused by both", arguments: 0..<7)
    func scalarRange(kind: Int) throws {
        let key = P384.Signing.PrivateKey()
        let verifier = try P384Verifier(key.publicKey)
        let digest = SHA384.hash(data: Array("range".utf8))
        let raw = Array(try key.signature(for: digest).rawRepresentation)
        let (r, s) = (Array(raw[..<48]), Array(raw[48...]))
        let zero = [UInt8](repeating: 0, count: 48)
        let cases: [([UInt8], [UInt8])] = [
            (zero, s), (r, zero), (Self.order, s), (r, Self.order), (Self.bigEndian(Self.order, plus: 1), s),
            (r, [UInt8](repeating: 0xFF, count: 48)), ([0] + r, s),
        ]
        let (badR, badS) = cases[kind]
        #expect(!verifier.isValidSignature(r: badR, s: badS, digest: Array(digest)))
        if badR.count == 48, badS.count == 48, let theirs = try? P384.Signing.ECDSASignature(rawRepresentation: badR + badS) {
            #expect(!key.publicKey.isValidSignature(theirs, for: digest))
        }
        // Leading zeros alone do not change an integer: a short r or s is the same value.
        #expect(verifier.isValidSignature(r: r.drop { $0 == 0 }, s: s.drop { $0 == 0 }, digest: Array(digest)))
        #expect(!verifier.isValidSignature(rawRepresentation: raw.dropLast(), digest: Array(digest)))
    }

    @Test("keys off the curve, with x or y ≥ p, compressed or at infinity are refused by both")
    func invalidKeys() throws {
        let point = Array(P384.Signing.PrivateKey().publicKey.x963Representation)
        var offCurve = point
        offCurve[96] ^= 1
        let xAboveP = [0x04] + Self.bigEndian(Self.prime, plus: 1) + Array(point[49...])
        let xIsP = [0x04] + Self.prime + Array(point[49...])
        let yAboveP = Array(point[...48]) + Self.bigEndian(Self.prime, plus: 2)
        // y + p is the same point modulo p, but not a valid encoding.
        let (yPlusP, overflow) = U384(bigEndian: point[49...])!.adding(P384Curve.p)
        let aliased = overflow == 0 ? Array(point[...48]) + yPlusP.bigEndianBytes : offCurve
        let compressed = [0x02 | (point[96] & 1)] + Array(point[1...48])
        for (name, bytes) in [("off curve", offCurve), ("x above p", xAboveP), ("x = p", xIsP), ("y above p", yAboveP),
                              ("y + p", aliased), ("compressed", compressed), ("infinity", [0x00]), ("empty", [])] {
            #expect(throws: AttestationError.self, "\(name)") { try P384Verifier(x963Representation: bytes) }
            #expect(throws: (any Error).self, "\(name)") { try P384.Signing.PublicKey(x963Representation: bytes) }
        }
        #expect(throws: AttestationError.self) { try P384Verifier(x: [UInt8](repeating: 0, count: 48), y: [UInt8](repeating: 0, count: 48)) }
        #expect(throws: AttestationError.self) { try P384Verifier(x: [UInt8](repeating: 1, count: 49), y: point[49...]) }
        #expect(try P384Verifier(x: point[1...48], y: point[49...]) == P384Verifier(x963Representation: point))
    }

    @Test("the real SEV-SNP report's signature verifies with its VCEK, and flipped bytes fail")
    func realReport() throws {
        let report = try SNPReport(bytes: try TestVectors.bytes("sev-snp/report-milan-vcek.bin"))
        let vcek = try AMDCertificate(derEncoded: try TestVectors.bytes("sev-snp/vcek-milan.der"))
        let verifier = try P384Verifier(try #require(P384.Signing.PublicKey(vcek.publicKey)))
        let digest = Array(SHA384.hash(data: report.signedBytes))
        #expect(verifier.isValidSignature(rawRepresentation: report.signatureRS, digest: digest))
        for index in [0, 47, 48, 95] {
            var signature = report.signatureRS
            signature[index] ^= 0x01
            #expect(!verifier.isValidSignature(rawRepresentation: signature, digest: digest))
        }
    }

    // MARK: - Arithmetic against a slow reference

    /// Limb values that exercise carries: 0, 1, all ones, top bit, and the moduli's own limbs.
    static func edgeValue(_ generator: inout SeededGenerator, below modulus: U384) -> U384 {
        let special: [UInt64] = [0, 1, 2, .max, .max - 1, 1 << 63, (1 << 63) - 1, 0xFFFF_FFFF, 0xFFFF_FFFF_0000_0000]
        var value = U384.zero
        for limb in 0..<6 {
            switch UInt8.random(in: 0...3, using: &generator) {
            case 0: value[limb] = special.randomElement(using: &generator)!
            case 1: value[limb] = modulus[limb] &- UInt64.random(in: 0...2, using: &generator)
            default: value[limb] = UInt64.random(in: 0...UInt64.max, using: &generator)
            }
        }
        while !(value < modulus) { value = value.subtracting(modulus).difference }
        return value
    }

    /// (high·2^384 + low) mod modulus by shift and subtract, one bit at a time.
    static func referenceReduce(high: U384, low: U384, modulus: U384) -> U384 {
        var remainder = U384.zero
        for bit in stride(from: 767, through: 0, by: -1) {
            let word = bit >= 384 ? high : low
            let b = (word[(bit % 384) / 64] >> UInt64(bit % 64)) & 1
            let (doubled, carry) = remainder.adding(remainder)
            var next = doubled
            next.w0 |= b
            if carry != 0 || !(next < modulus) { next = next.subtracting(modulus).difference }
            remainder = next
        }
        return remainder
    }

    /// a·b as (high, low) halves, schoolbook.
    static func referenceProduct(_ a: U384, _ b: U384) -> (U384, U384) {
        var limbs = [UInt64](repeating: 0, count: 12)
        for i in 0..<6 {
            var carry: UInt64 = 0
            for j in 0..<6 {
                let (high, low) = a[i].multipliedFullWidth(by: b[j])
                let (sum1, o1) = limbs[i + j].addingReportingOverflow(low)
                let (sum2, o2) = sum1.addingReportingOverflow(carry)
                limbs[i + j] = sum2
                carry = high + (o1 ? 1 : 0) + (o2 ? 1 : 0)
            }
            limbs[i + 6] = carry
        }
        return (U384(w0: limbs[6], w1: limbs[7], w2: limbs[8], w3: limbs[9], w4: limbs[10], w5: limbs[11]),
                U384(w0: limbs[0], w1: limbs[1], w2: limbs[2], w3: limbs[3], w4: limbs[4], w5: limbs[5]))
    }

    @Test("Montgomery multiply, square, add, subtract and inverse match the reference modulo p and n", arguments: ["p", "n"])
    func montgomeryArithmetic(name: String) {
        let arithmetic = name == "p" ? P384Curve.field : P384Curve.order
        let modulus = arithmetic.modulus
        var generator = SeededGenerator(state: name == "p" ? 1 : 2)
        for _ in 0..<300 {
            let a = Self.edgeValue(&generator, below: modulus)
            let b = Self.edgeValue(&generator, below: modulus)
            // multiply(a, b) = a·b·R⁻¹, so multiply(a, b)·R ≡ a·b.
            let product = arithmetic.multiply(a, b)
            #expect(product < modulus)
            let (high, low) = Self.referenceProduct(a, b)
            #expect(Self.referenceReduce(high: product, low: .zero, modulus: modulus) == Self.referenceReduce(high: high, low: low, modulus: modulus))
            #expect(arithmetic.square(a) == arithmetic.multiply(a, a))
            let sum = arithmetic.add(a, b)
            #expect(sum < modulus)
            #expect(arithmetic.subtract(sum, b) == a)
            #expect(arithmetic.add(arithmetic.negate(a), a) == .zero)
            let one = U384(w0: 1, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)
            #expect(Self.referenceReduce(high: one, low: .zero, modulus: modulus) == arithmetic.toMontgomery(one))
            #expect(arithmetic.fromMontgomery(arithmetic.toMontgomery(a)) == a)
        }
        for _ in 0..<5 {
            let a = arithmetic.toMontgomery(Self.edgeValue(&generator, below: modulus))
            guard !a.isZero else { continue }
            #expect(arithmetic.multiply(arithmetic.inverse(a), a) == arithmetic.one)
        }
        // The binary inversion agrees with Fermat's, on edge values and on 1, 2 and modulus − 1.
        var values = (0..<100).map { _ in Self.edgeValue(&generator, below: modulus) }
        values += [U384(w0: 1, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0), U384(w0: 2, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0),
                   modulus.subtracting(U384(w0: 1, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)).difference]
        for value in values where !value.isZero {
            let inverse = arithmetic.inverseVariableTime(value)
            #expect(inverse < modulus)
            #expect(arithmetic.toMontgomery(inverse) == arithmetic.inverse(arithmetic.toMontgomery(value)))
        }
    }

    @Test("wNAF digits are odd, bounded, sparse and add up to the scalar", arguments: [5, 6, 7])
    func nonAdjacentForm(width: Int) {
        var generator = SeededGenerator(state: UInt64(width))
        var scalars = [P384Curve.n.subtracting(U384(w0: 1, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)).difference, .zero,
                       U384(w0: 1, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0), U384(w0: .max, w1: .max, w2: .max, w3: .max, w4: .max, w5: 0)]
        for _ in 0..<200 { scalars.append(Self.edgeValue(&generator, below: P384Curve.n)) }
        for scalar in scalars {
            let digits = P384Curve.nonAdjacentForm(scalar, width: width)
            var value = U384.zero
            var lastNonZero = Int.max
            for index in stride(from: digits.count - 1, through: 0, by: -1) {
                value = value.adding(value).sum
                let digit = Int(digits[index])
                if digit > 0 { value = value.adding(U384(w0: UInt64(digit), w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)).sum }
                if digit < 0 { value = value.subtracting(U384(w0: UInt64(-digit), w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)).difference }
                if digit != 0 {
                    #expect(digit & 1 == 1 && abs(digit) < 1 << (width - 1))
                    #expect(lastNonZero == .max || lastNonZero - index >= width)
                    lastNonZero = index
                }
            }
            #expect(value == scalar)
        }
    }

    @Test("group law: G's multiples agree however they are combined, and n·G is infinity")
    func groupLaw() throws {
        let g = P384Curve.generatorTable
        let one = U384(w0: 1, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)
        let two = U384(w0: 2, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)
        let nMinusOne = P384Curve.n.subtracting(one).difference
        func affine(_ point: P384JacobianPoint) -> P384AffinePoint? { P384JacobianPoint.affine([point])?.first }
        let generator = g.multiples[0][0]
        // 1·G + 1·G = 2·G (the doubling branch of the mixed addition).
        #expect(affine(P384Curve.linearCombination(one, g, one, g)) == affine(P384Curve.linearCombination(two, g, .zero, g)))
        // (n − 1)·G + 1·G = infinity, and (n − 1)·G = −G.
        #expect(P384Curve.linearCombination(nMinusOne, g, one, g).isInfinity)
        #expect(affine(P384Curve.linearCombination(nMinusOne, g, .zero, g)) == generator.negated)
        #expect(P384Curve.linearCombination(.zero, g, .zero, g).isInfinity)
        for table in g.multiples { for point in table { #expect(point.isOnCurve) } }
        // Each table holds B, 3B, 5B, …: 3B = 2B + B; and each base is 2^96 times the one before.
        for table in g.multiples {
            #expect(affine(P384JacobianPoint(table[0]).doubled().adding(table[0])) == table[1])
            #expect(affine(P384JacobianPoint(table[1]).adding(P384JacobianPoint(table[0]))) == affine(P384JacobianPoint(table[0]).doubled().doubled()))
        }
        for part in 1..<P384SplitTable.parts {
            var shifted = P384JacobianPoint(g.multiples[part - 1][0])
            for _ in 0..<96 { shifted = shifted.doubled() }
            #expect(affine(shifted) == g.multiples[part][0])
        }
    }

    @Test("split scalars: the four 96-bit parts add up to the scalar, and k·G + (n − k)·G is infinity for k in every part")
    func splitScalars() throws {
        var generator = SeededGenerator(state: 96)
        let g = P384Curve.generatorTable
        func affine(_ point: P384JacobianPoint) -> P384AffinePoint? { P384JacobianPoint.affine([point])?.first }
        var scalars = [P384Curve.n.subtracting(U384(w0: 1, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)).difference]
        for _ in 0..<12 { scalars.append(Self.edgeValue(&generator, below: P384Curve.n)) }
        for scalar in scalars {
            // Σ part_i · 2^(96·i) == scalar, shifting by 96 bits as 64 + 32 single-bit doublings' worth of adds.
            var rebuilt = U384.zero
            for part in stride(from: P384SplitTable.parts - 1, through: 0, by: -1) {
                for _ in 0..<96 { rebuilt = rebuilt.adding(rebuilt).sum }
                rebuilt = rebuilt.adding(scalar.part96(part)).sum
            }
            #expect(rebuilt == scalar)
            guard !scalar.isZero else { continue }
            let negated = P384Curve.n.subtracting(scalar).difference
            #expect(P384Curve.linearCombination(scalar, g, negated, g).isInfinity)
            // k·G through the generator's tables equals k·G through a key table built from G itself.
            let asKey = try #require(P384SplitTable(g.multiples[0][0], count: 16))
            #expect(affine(P384Curve.linearCombination(scalar, g, .zero, g)) == affine(P384Curve.linearCombination(.zero, g, scalar, asKey)))
        }
    }
}
