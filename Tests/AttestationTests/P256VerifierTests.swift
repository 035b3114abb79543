import Crypto
import Foundation
import Testing

@testable import Attestation

/// Attestation's pure-Swift ECDSA P-256 verifier against swift-crypto (BoringSSL) and published vectors,
/// its arithmetic against a slow reference, and its use for prepared AKs.
struct P256VerifierTests {
    typealias SeededGenerator = P384VerifierTests.SeededGenerator

    /// The group order n, big-endian.
    static let order = bytes(fromHex: "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")!
    /// The field prime p, big-endian.
    static let prime = bytes(fromHex: "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff")!

    /// A digest of arbitrary bytes, to have swift-crypto sign values no hash produces (zero, n, all ones).
    struct RawDigest: Digest {
        static let byteCount = 32
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
    /// attestation-bench --check-p256 N runs the same comparison in the release build.
    #if DEBUG
    static let rounds = 300
    #else
    static let rounds = 6000
    #endif

    @Test("random keys, messages and signatures: both verifiers accept, and both refuse every tampered variant")
    func differential() throws {
        var generator = SeededGenerator(state: 0x5EED_0256)
        var keys: [(P256.Signing.PrivateKey, P256Verifier)] = []
        for _ in 0..<12 {
            let key = P256.Signing.PrivateKey()
            keys.append((key, try P256Verifier(key.publicKey)))
        }
        for round in 0..<Self.rounds {
            let (key, verifier) = keys[round % keys.count]
            let message = Self.randomBytes(Int.random(in: 0...200, using: &generator), &generator)
            let signature = try key.signature(for: message)
            let raw = Array(signature.rawRepresentation)
            let digest = Array(SHA256.hash(data: message))
            #expect(key.publicKey.isValidSignature(signature, for: message))
            #expect(verifier.isValidSignature(rawRepresentation: raw, digest: digest), "round \(round)")

            // One tampered variant per round, cycling through r, s, message, digest and key.
            switch round % 5 {
            case 0, 1:
                var tampered = raw
                tampered[32 * (round % 5) + Int.random(in: 0..<32, using: &generator)] ^= 1 << UInt8.random(in: 0...7, using: &generator)
                let theirs = (try? P256.Signing.ECDSASignature(rawRepresentation: tampered)).map { key.publicKey.isValidSignature($0, for: message) } ?? false
                #expect(theirs == verifier.isValidSignature(rawRepresentation: tampered, digest: digest))
                #expect(!verifier.isValidSignature(rawRepresentation: tampered, digest: digest))
            case 2:
                let other = message + [UInt8.random(in: 0...255, using: &generator)]
                #expect(!key.publicKey.isValidSignature(signature, for: other))
                #expect(!verifier.isValidSignature(rawRepresentation: raw, digest: Array(SHA256.hash(data: other))))
            case 3:
                var tampered = digest
                tampered[Int.random(in: 0..<32, using: &generator)] ^= 1 << UInt8.random(in: 0...7, using: &generator)
                #expect(!key.publicKey.isValidSignature(signature, for: RawDigest(bytes: tampered)))
                #expect(!verifier.isValidSignature(rawRepresentation: raw, digest: tampered))
            default:
                let (otherKey, otherVerifier) = keys[(round + 1) % keys.count]
                #expect(!otherKey.publicKey.isValidSignature(signature, for: message))
                #expect(!otherVerifier.isValidSignature(rawRepresentation: raw, digest: digest))
            }
        }
    }

    /// RFC 6979 §A.2.5: the P-256 key and deterministic signatures over "sample" and "test".
    static let rfc6979Key = bytes(fromHex: "04"
        + "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"
        + "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299")!

    static let rfc6979Vectors: [(message: String, hash: String, r: String, s: String)] = [
        ("sample", "SHA-256", "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716",
         "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8"),
        ("test", "SHA-256", "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367",
         "019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083"),
        ("sample", "SHA-1", "61340c88c3aaebeb4f6d667f672ca9759a6ccaa9fa8811313039ee4a35471d32",
         "6d7f147dac089441bb2e2fe8f7a3fa264b9c475098fdcf6e00d7c996e1b8b7eb"),
        ("sample", "SHA-512", "8496a60b5e9b47c825488827e0495b0e3fa109ec4568fd3f8d1097678eb97f00",
         "2362ab1adbe2b8adf9cb9edab740ea6049c028114f2460f96554f61fae3302fe"),
    ]

    @Test("RFC 6979 known answers (SHA-256, and SHA-1 and SHA-512 digests of other lengths) verify, and fail with a changed byte",
          arguments: 0..<4)
    func knownAnswers(index: Int) throws {
        let vector = Self.rfc6979Vectors[index]
        let verifier = try P256Verifier(x963Representation: Self.rfc6979Key)
        let message = Array(vector.message.utf8)
        let digest: [UInt8] = switch vector.hash {
        case "SHA-1": Array(Insecure.SHA1.hash(data: message))
        case "SHA-512": Array(SHA512.hash(data: message))
        default: Array(SHA256.hash(data: message))
        }
        let r = try #require(bytes(fromHex: vector.r))
        let s = try #require(bytes(fromHex: vector.s))
        #expect(verifier.isValidSignature(r: r, s: s, digest: digest))
        #expect(verifier.isValidSignature(rawRepresentation: r + s, digest: digest))
        var changed = r + s
        changed[63] ^= 1
        #expect(!verifier.isValidSignature(rawRepresentation: changed, digest: digest))
        var otherDigest = digest
        otherDigest[0] ^= 0x80
        #expect(!verifier.isValidSignature(r: r, s: s, digest: otherDigest))
        #expect(verifier.x + verifier.y == Array(Self.rfc6979Key.dropFirst()))
    }

    @Test("digests of other sizes and values no hash gives (0, n, p, 2^256 − 1) verify as in swift-crypto")
    func digestsLikeSwiftCrypto() throws {
        var generator = SeededGenerator(state: 42)
        let key = P256.Signing.PrivateKey()
        let verifier = try P256Verifier(key.publicKey)
        let message = Self.randomBytes(64, &generator)
        let sha384 = SHA384.hash(data: message)
        let signature384 = try key.signature(for: sha384)
        #expect(key.publicKey.isValidSignature(signature384, for: sha384))
        #expect(verifier.isValidSignature(rawRepresentation: signature384.rawRepresentation, digest: Array(sha384)))
        let sha1 = Insecure.SHA1.hash(data: message)
        let signature1 = try key.signature(for: sha1)
        #expect(key.publicKey.isValidSignature(signature1, for: sha1))
        #expect(verifier.isValidSignature(rawRepresentation: signature1.rawRepresentation, digest: Array(sha1)))
        for value in [[UInt8](repeating: 0, count: 32), Self.order, [UInt8](repeating: 0xFF, count: 32), Self.prime] {
            let digest = RawDigest(bytes: value)
            let signature = try key.signature(for: digest)
            #expect(key.publicKey.isValidSignature(signature, for: digest))
            #expect(verifier.isValidSignature(rawRepresentation: signature.rawRepresentation, digest: value), "\(hexString(value))")
        }
    }

    @Test("(r, n − s) verifies in both, as ECDSA allows")
    func negatedS() throws {
        let key = P256.Signing.PrivateKey()
        let verifier = try P256Verifier(key.publicKey)
        let digest = SHA256.hash(data: Array("negated".utf8))
        let raw = Array(try key.signature(for: digest).rawRepresentation)
        let s = U256(bigEndian: raw[32...])!
        let negated = Array(raw[..<32]) + P256Curve.n.subtracting(s).difference.bigEndianBytes
        let theirs = try P256.Signing.ECDSASignature(rawRepresentation: negated)
        #expect(key.publicKey.isValidSignature(theirs, for: digest))
        #expect(verifier.isValidSignature(rawRepresentation: negated, digest: Array(digest)))
    }

    @Test("r or s of 0, n, above n or longer than 32 bytes is refused by both", arguments: 0..<8)
    func scalarRange(kind: Int) throws {
        let key = P256.Signing.PrivateKey()
        let verifier = try P256Verifier(key.publicKey)
        let digest = SHA256.hash(data: Array("range".utf8))
        let raw = Array(try key.signature(for: digest).rawRepresentation)
        let (r, s) = (Array(raw[..<32]), Array(raw[32...]))
        let zero = [UInt8](repeating: 0, count: 32)
        let cases: [([UInt8], [UInt8])] = [
            (zero, s), (r, zero), (Self.order, s), (r, Self.order), (P384VerifierTests.bigEndian(Self.order, plus: 1), s),
            (r, [UInt8](repeating: 0xFF, count: 32)), ([0] + r, s), (r, [1] + s),
        ]
        let (badR, badS) = cases[kind]
        #expect(!verifier.isValidSignature(r: badR, s: badS, digest: Array(digest)))
        if badR.count == 32, badS.count == 32, let theirs = try? P256.Signing.ECDSASignature(rawRepresentation: badR + badS) {
            #expect(!key.publicKey.isValidSignature(theirs, for: digest))
        }
        // Leading zeros alone do not change an integer: a short r or s is the same value.
        #expect(verifier.isValidSignature(r: r.drop { $0 == 0 }, s: s.drop { $0 == 0 }, digest: Array(digest)))
        #expect(!verifier.isValidSignature(rawRepresentation: raw.dropLast(), digest: Array(digest)))
        #expect(!verifier.isValidSignature(rawRepresentation: raw + [0], digest: Array(digest)))
    }

    @Test("keys off the curve, with x or y ≥ p, of the wrong length, compressed or at infinity are refused by both")
    func invalidKeys() throws {
        let point = Array(P256.Signing.PrivateKey().publicKey.x963Representation)
        var offCurve = point
        offCurve[64] ^= 1
        let xAboveP = [0x04] + P384VerifierTests.bigEndian(Self.prime, plus: 1) + Array(point[33...])
        let xIsP = [0x04] + Self.prime + Array(point[33...])
        let yAboveP = Array(point[...32]) + P384VerifierTests.bigEndian(Self.prime, plus: 2)
        // y + p is the same point modulo p, but not a valid encoding.
        let (yPlusP, overflow) = U256(bigEndian: point[33...])!.adding(P256Field.p)
        let aliased = overflow == 0 ? Array(point[...32]) + yPlusP.bigEndianBytes : offCurve
        let compressed = [0x02 | (point[64] & 1)] + Array(point[1...32])
        var wrongPrefix = point
        wrongPrefix[0] = 0x06
        for (name, bytes) in [("off curve", offCurve), ("x above p", xAboveP), ("x = p", xIsP), ("y above p", yAboveP),
                              ("y + p", aliased), ("compressed", compressed), ("prefix 0x06", wrongPrefix), ("infinity", [0x00]),
                              ("empty", []), ("short", Array(point.dropLast())), ("long", point + [0])] {
            #expect(throws: AttestationError.self, "\(name)") { try P256Verifier(x963Representation: bytes) }
            #expect(throws: (any Error).self, "\(name)") { try P256.Signing.PublicKey(x963Representation: bytes) }
        }
        #expect(throws: AttestationError.self) { try P256Verifier(x: [UInt8](repeating: 0, count: 32), y: [UInt8](repeating: 0, count: 32)) }
        #expect(throws: AttestationError.self) { try P256Verifier(x: [UInt8](repeating: 1, count: 33), y: point[33...]) }
        #expect(try P256Verifier(x: point[1...32], y: point[33...]) == P256Verifier(x963Representation: point))
        // More than 32 bytes is refused even when the extra byte is a leading zero (as swift-crypto refuses 66-byte points).
        #expect(throws: AttestationError.self) { try P256Verifier(x: [0] + point[1...32], y: point[33...]) }
    }

    // MARK: - Arithmetic against a slow reference

    /// Limb values that exercise carries: 0, 1, all ones, top bit, and the moduli's own limbs.
    static func edgeValue(_ generator: inout SeededGenerator, below modulus: U256) -> U256 {
        let special: [UInt64] = [0, 1, 2, .max, .max - 1, 1 << 63, (1 << 63) - 1, 0xFFFF_FFFF, 0xFFFF_FFFF_0000_0000]
        var value = U256.zero
        for limb in 0..<4 {
            switch UInt8.random(in: 0...3, using: &generator) {
            case 0: value[limb] = special.randomElement(using: &generator)!
            case 1: value[limb] = modulus[limb] &- UInt64.random(in: 0...2, using: &generator)
            default: value[limb] = UInt64.random(in: 0...UInt64.max, using: &generator)
            }
        }
        while !(value < modulus) { value = value.subtracting(modulus).difference }
        return value
    }

    /// (high·2^256 + low) mod modulus by shift and subtract, one bit at a time.
    static func referenceReduce(high: U256, low: U256, modulus: U256) -> U256 {
        var remainder = U256.zero
        for bit in stride(from: 511, through: 0, by: -1) {
            let word = bit >= 256 ? high : low
            let b = (word[(bit % 256) / 64] >> UInt64(bit % 64)) & 1
            let (doubled, carry) = remainder.adding(remainder)
            var next = doubled
            next.w0 |= b
            if carry != 0 || !(next < modulus) { next = next.subtracting(modulus).difference }
            remainder = next
        }
        return remainder
    }

    /// a·b as (high, low) halves, schoolbook.
    static func referenceProduct(_ a: U256, _ b: U256) -> (U256, U256) {
        var limbs = [UInt64](repeating: 0, count: 8)
        for i in 0..<4 {
            var carry: UInt64 = 0
            for j in 0..<4 {
                let (high, low) = a[i].multipliedFullWidth(by: b[j])
                let (sum1, o1) = limbs[i + j].addingReportingOverflow(low)
                let (sum2, o2) = sum1.addingReportingOverflow(carry)
                limbs[i + j] = sum2
                carry = high + (o1 ? 1 : 0) + (o2 ? 1 : 0)
            }
            limbs[i + 4] = carry
        }
        return (U256(w0: limbs[4], w1: limbs[5], w2: limbs[6], w3: limbs[7]), U256(w0: limbs[0], w1: limbs[1], w2: limbs[2], w3: limbs[3]))
    }

    @Test("the field arithmetic modulo p (special reduction) matches the reference and generic Montgomery arithmetic")
    func fieldArithmetic() {
        let modulus = P256Field.p
        let generic = Montgomery256(modulus: modulus, k: 1, rSquared: P256Field.rSquared)
        var generator = SeededGenerator(state: 1)
        var values = [U256.zero, .one, modulus.subtracting(.one).difference, modulus.subtracting(U256(w0: 2, w1: 0, w2: 0, w3: 0)).difference]
        for _ in 0..<400 { values.append(Self.edgeValue(&generator, below: modulus)) }
        for (index, a) in values.enumerated() {
            let b = values[(index * 7 + 3) % values.count]
            // multiply(a, b) = a·b·R⁻¹, so multiply(a, b)·R ≡ a·b.
            let product = P256Field.multiply(a, b)
            #expect(product < modulus)
            #expect(product == generic.multiply(a, b))
            let (high, low) = Self.referenceProduct(a, b)
            #expect(Self.referenceReduce(high: product, low: .zero, modulus: modulus) == Self.referenceReduce(high: high, low: low, modulus: modulus))
            #expect(P256Field.square(a) == P256Field.multiply(a, a))
            let sum = P256Field.add(a, b)
            #expect(sum < modulus)
            #expect(P256Field.subtract(sum, b) == a)
            #expect(P256Field.add(P256Field.negate(a), a) == .zero)
            #expect(P256Field.fromMontgomery(P256Field.toMontgomery(a)) == a)
        }
        #expect(Self.referenceReduce(high: .one, low: .zero, modulus: modulus) == P256Field.one)
        #expect(P256Field.toMontgomery(.one) == P256Field.one)
        for _ in 0..<5 {
            let a = P256Field.toMontgomery(Self.edgeValue(&generator, below: modulus))
            guard !a.isZero else { continue }
            #expect(P256Field.multiply(P256Field.inverse(a), a) == P256Field.one)
        }
    }

    @Test("Montgomery arithmetic modulo n and the binary inversion match the reference")
    func orderArithmetic() {
        let arithmetic = P256Curve.order
        let modulus = arithmetic.modulus
        var generator = SeededGenerator(state: 2)
        for _ in 0..<300 {
            let a = Self.edgeValue(&generator, below: modulus)
            let b = Self.edgeValue(&generator, below: modulus)
            let product = arithmetic.multiply(a, b)
            #expect(product < modulus)
            let (high, low) = Self.referenceProduct(a, b)
            #expect(Self.referenceReduce(high: product, low: .zero, modulus: modulus) == Self.referenceReduce(high: high, low: low, modulus: modulus))
            #expect(arithmetic.fromMontgomery(arithmetic.toMontgomery(a)) == a)
        }
        #expect(Self.referenceReduce(high: .one, low: .zero, modulus: modulus) == arithmetic.one)
        // The binary inversion agrees with Fermat's, on edge values and on 1, 2 and n − 1.
        var values = (0..<100).map { _ in Self.edgeValue(&generator, below: modulus) }
        values += [.one, U256(w0: 2, w1: 0, w2: 0, w3: 0), modulus.subtracting(.one).difference]
        for value in values where !value.isZero {
            let inverse = arithmetic.inverseVariableTime(value)
            #expect(inverse < modulus)
            #expect(arithmetic.toMontgomery(inverse) == arithmetic.inverse(arithmetic.toMontgomery(value)))
        }
    }

    @Test("signed comb digits are bounded and add up to the scalar", arguments: [5, 6, 7, 8])
    func signedDigits(width: Int) {
        var generator = SeededGenerator(state: UInt64(width))
        let windows = (257 + width - 1) / width
        var scalars = [P256Curve.n.subtracting(.one).difference, .zero, .one,
                       U256(w0: .max, w1: .max, w2: .max, w3: .max)]
        for _ in 0..<200 { scalars.append(Self.edgeValue(&generator, below: P256Curve.n)) }
        for scalar in scalars {
            let digits = P256Curve.signedDigits(scalar, width: width, windows: windows)
            var value = U256.zero
            for digit in digits.reversed() {
                for _ in 0..<width { value = value.adding(value).sum }
                #expect(abs(digit) <= 1 << (width - 1))
                if digit > 0 { value = value.adding(U256(w0: UInt64(digit), w1: 0, w2: 0, w3: 0)).sum }
                if digit < 0 { value = value.subtracting(U256(w0: UInt64(-digit), w1: 0, w2: 0, w3: 0)).difference }
            }
            #expect(value == scalar)
        }
    }

    @Test("group law: the comb's sums agree with doublings, equal points double, and n·G is infinity")
    func groupLaw() throws {
        let g = P256Curve.generatorTable
        let two = U256(w0: 2, w1: 0, w2: 0, w3: 0)
        let nMinusOne = P256Curve.n.subtracting(.one).difference
        func affine(_ point: P256JacobianPoint) -> P256AffinePoint? { P256JacobianPoint.affine([point])?.first }
        let generator = P256Curve.generator
        #expect(generator.isOnCurve)
        #expect(g.points[0] == generator)
        // 1·G + 1·G = 2·G (the doubling branch of the mixed addition).
        #expect(affine(P256Curve.linearCombination(.one, g, .one, g)) == affine(P256JacobianPoint(generator).doubled()))
        #expect(affine(P256Curve.linearCombination(two, g, .zero, g)) == affine(P256JacobianPoint(generator).doubled()))
        // (n − 1)·G + 1·G = infinity, and (n − 1)·G = −G.
        #expect(P256Curve.linearCombination(nMinusOne, g, .one, g).isInfinity)
        #expect(affine(P256Curve.linearCombination(nMinusOne, g, .zero, g)) == generator.negated)
        #expect(P256Curve.linearCombination(.zero, g, .zero, g).isInfinity)
        #expect(g.width == P256CombTable.generatorWidth)
        #expect(g.points.count == g.windows * g.entries)
        for point in g.points { #expect(point.isOnCurve) }
        // Entry j of window i is (j + 1)·2^(w·i)·G: consecutive entries differ by the window's base, and
        // each base is 2^w times the one before.
        let entries = g.entries
        for window in [0, 1, g.windows / 2, g.windows - 1] {
            let base = g.points[window * entries]
            for j in [1, 2, entries / 2, entries - 1] {
                #expect(affine(P256JacobianPoint(g.points[window * entries + j - 1]).adding(base)) == g.points[window * entries + j])
            }
            if window > 0 {
                var shifted = P256JacobianPoint(g.points[(window - 1) * entries])
                for _ in 0..<g.width { shifted = shifted.doubled() }
                #expect(affine(shifted) == base)
            }
        }
    }

    @Test("k·G through the comb equals k·G by double-and-add, and k·G + (n − k)·G is infinity")
    func combAgainstDoubleAndAdd() throws {
        var generator = SeededGenerator(state: 256)
        let g = P256Curve.generatorTable
        let asKey = try #require(P256CombTable(P256Curve.generator, width: P256CombTable.keyWidth))
        #expect(P256Verifier.tableBytes == asKey.points.count * MemoryLayout<P256AffinePoint>.stride)
        func affine(_ point: P256JacobianPoint) -> P256AffinePoint? { P256JacobianPoint.affine([point])?.first }
        var scalars = [P256Curve.n.subtracting(.one).difference, U256(w0: 64, w1: 0, w2: 0, w3: 0), U256(w0: 65, w1: 0, w2: 0, w3: 0)]
        for _ in 0..<8 { scalars.append(Self.edgeValue(&generator, below: P256Curve.n)) }
        for scalar in scalars {
            var expected = P256JacobianPoint.infinity
            for bit in stride(from: 255, through: 0, by: -1) {
                expected = expected.doubled()
                if scalar.bits(at: bit, width: 1) == 1 { expected = expected.adding(P256Curve.generator) }
            }
            #expect(affine(P256Curve.linearCombination(scalar, g, .zero, g)) == affine(expected))
            #expect(affine(P256Curve.linearCombination(.zero, g, scalar, asKey)) == affine(expected))
            let negated = P256Curve.n.subtracting(scalar).difference
            #expect(P256Curve.linearCombination(scalar, g, negated, asKey).isInfinity)
        }
    }

    // MARK: - Prepared AKs

    /// A TPMT_PUBLIC of an ECC P-256 signing key (ECDSA with SHA-256) with the given point.
    static func akPublic(_ key: P256.Signing.PublicKey) -> [UInt8] {
        let point = Array(key.x963Representation)
        return [0x00, 0x23, 0x00, 0x0B, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x18, 0x00, 0x0B, 0x00, 0x03, 0x00, 0x10]
            + tpm2b(Array(point[1...32])) + tpm2b(Array(point[33...64]))
    }

    static func tpm2b(_ bytes: [UInt8]) -> [UInt8] { [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes }

    @Test("a prepared P-256 AK verifies with P256Verifier and agrees with swift-crypto for every hash, tampered or not",
          arguments: [TPMAlgorithm.sha256, .sha384, .sha512, .sha1])
    func preparedKeyBacking(hash: TPMAlgorithm) throws {
        let key = P256.Signing.PrivateKey()
        let akPublic = try TPMTPublic(bytes: Self.akPublic(key.publicKey))
        let prepared = try PreparedAK(akPublic).verificationKey
        let plain = try TPMVerificationKey(akPublic.key)
        guard case .p256Prepared = prepared.backing, case .p256 = plain.backing else {
            Issue.record("expected a prepared and a swift-crypto backing")
            return
        }
        #expect(prepared.subjectPublicKeyInfo == plain.subjectPublicKeyInfo)
        #expect(prepared.digest == plain.digest)
        let message = Array("quote".utf8)
        let raw: [UInt8] = switch hash {
        case .sha384: Array(try key.signature(for: SHA384.hash(data: message)).rawRepresentation)
        case .sha512: Array(try key.signature(for: SHA512.hash(data: message)).rawRepresentation)
        case .sha1: Array(try key.signature(for: Insecure.SHA1.hash(data: message)).rawRepresentation)
        default: Array(try key.signature(for: SHA256.hash(data: message)).rawRepresentation)
        }
        let (r, s) = (Array(raw[..<32]), Array(raw[32...]))
        let valid = TPMTSignature.ecdsa(hash: hash, r: r, s: s)
        #expect(prepared.isValid(valid, over: message))
        #expect(plain.isValid(valid, over: message))
        // Short r and s (leading zeros dropped) are the same integers.
        let short = TPMTSignature.ecdsa(hash: hash, r: r.drop { $0 == 0 }.map { $0 }, s: s.drop { $0 == 0 }.map { $0 })
        #expect(prepared.isValid(short, over: message) && plain.isValid(short, over: message))
        var flipped = r
        flipped[5] ^= 0x10
        let otherHash: TPMAlgorithm = hash == .sha256 ? .sha384 : .sha256
        let invalid: [TPMTSignature] = [
            .ecdsa(hash: hash, r: flipped, s: s), .ecdsa(hash: hash, r: r, s: flipped), .ecdsa(hash: otherHash, r: r, s: s),
            .ecdsa(hash: hash, r: [0] + r, s: s), .ecdsa(hash: hash, r: r, s: [0] + s), .ecdsa(hash: hash, r: [], s: s),
            .ecdsa(hash: hash, r: Self.order, s: s), .ecdsa(hash: hash, r: r, s: [UInt8](repeating: 0, count: 32)),
            .ecdsa(hash: .null, r: r, s: s), .rsassa(hash: hash, signature: raw),
        ]
        for signature in invalid {
            #expect(!prepared.isValid(signature, over: message), "\(signature)")
            #expect(!plain.isValid(signature, over: message), "\(signature)")
        }
        #expect(!prepared.isValid(valid, over: message + [0]))
    }

    @Test("a quote made in process validates with its prepared P-256 AK like with its digest, and a tampered one fails")
    func preparedQuote() throws {
        let key = P256.Signing.PrivateKey()
        let akPublic = Self.akPublic(key.publicKey)
        var pcrs: [Int: [UInt8]] = [:]
        for index in 0..<24 { pcrs[index] = Array(SHA256.hash(data: [UInt8(index)])) }
        let nonce = [UInt8](repeating: 0x42, count: 32)
        let userData = Array(SHA256.hash(data: Array("p256".utf8)))
        let qualifying = NativeTPMEvidenceDocument.qualifyingData(nonce: nonce, userDataDigest: userData)
        let pcrDigest = Array(SHA256.hash(data: (0..<24).flatMap { pcrs[$0]! }))
        let attest: [UInt8] = [0xFF, 0x54, 0x43, 0x47, 0x80, 0x18] + Self.tpm2b([0x00, 0x0B] + [UInt8](repeating: 0xAB, count: 32))
            + Self.tpm2b(qualifying) + [UInt8](repeating: 0, count: 17) + [UInt8](repeating: 0, count: 8)
            + [0, 0, 0, 1, 0x00, 0x0B, 3, 0xFF, 0xFF, 0xFF] + Self.tpm2b(pcrDigest)
        func document(attest: [UInt8], signedOver signed: [UInt8]) throws -> [UInt8] {
            let ecdsa = Array(try key.signature(for: SHA256.hash(data: signed)).rawRepresentation)
            let signature: [UInt8] = [0x00, 0x18, 0x00, 0x0B] + Self.tpm2b(Array(ecdsa.prefix(32))) + Self.tpm2b(Array(ecdsa.suffix(32)))
            return NativeTPMEvidenceDocument(akPublic: akPublic, attest: attest, signature: signature, pcrs: pcrs, userDataDigest: userData).serialized()
        }
        let prepared = TPMQuotePolicy(akTrust: AKTrust(allowedKeys: [try PreparedAK(bytes: akPublic)]))
        let byDigest = TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [try TPMTPublic(bytes: akPublic).keyDigest()]))
        let now = Date()
        let good = try document(attest: attest, signedOver: attest)
        let report = try TPMEvidenceValidator.validate(native: good, nonce: nonce, userDataDigest: userData, policy: prepared, at: now)
        #expect(report.isValid, "\(report.failures)")
        #expect(report == (try TPMEvidenceValidator.validate(native: good, nonce: nonce, userDataDigest: userData, policy: byDigest, at: now)))

        // Signed over other bytes than the attest it carries: only the signature fails.
        var other = attest
        other[8] ^= 1
        let forged = try document(attest: attest, signedOver: other)
        let refused = try TPMEvidenceValidator.validate(native: forged, nonce: nonce, userDataDigest: userData, policy: prepared, at: now)
        #expect(refused.failures.map(\.policy) == ["tpm.quote.signature"])
        #expect(refused == (try TPMEvidenceValidator.validate(native: forged, nonce: nonce, userDataDigest: userData, policy: byDigest, at: now)))
    }

    @Test("the swtpm ECC quote validates with its prepared AK through P256Verifier, and fails once tampered", .needsSwtpm)
    func swtpmQuote() throws {
        let quote = try SwtpmQuotes.get().ecc
        let prepared = try PreparedAK(bytes: quote.akPublic)
        guard case .p256Prepared = prepared.verificationKey.backing else {
            Issue.record("the swtpm ECC AK is not a prepared P-256 key")
            return
        }
        let evidence = try quote.evidence
        #expect(prepared.verificationKey.isValid(evidence.signature, over: evidence.attest.bytes))
        var attest = evidence.attest.bytes
        attest[attest.count - 1] ^= 1
        #expect(!prepared.verificationKey.isValid(evidence.signature, over: attest))
    }
}
