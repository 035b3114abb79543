import Crypto

// ECDSA P-384 verification in pure Swift (FIPS 186-5 §6.4.2, SEC 1 §4.1.4).
//
// Only verification: every input (key, digest, signature) is public, so the arithmetic is variable
// time. Field and scalar elements are six 64-bit limbs in Montgomery form (R = 2^384); points are
// Jacobian (X/Z², Y/Z³, Z = 0 is the point at infinity); u1·G + u2·Q is one interleaved wNAF pass
// over precomputed affine odd multiples of G (width 7, built once per process) and of Q (width 6,
// built once per key). Each scalar is split into four 96-bit parts against tables of P, 2^96·P,
// 2^192·P and 2^288·P, so one pass of 96 doublings serves all eight parts. s⁻¹ mod n comes from the
// binary extended Euclidean algorithm; x(R) is compared with r without inverting Z.

/// An ECDSA P-384 public key prepared for fast signature verification. Build it once per key
/// (it precomputes multiples of the key) and reuse it; it is an immutable value.
/// - Important: Verification only, not constant time: never feed it secret scalars.
public struct P384Verifier: Sendable, Hashable {
    /// The key's affine x coordinate, big-endian, 48 bytes.
    public let x: [UInt8]
    /// The key's affine y coordinate, big-endian, 48 bytes.
    public let y: [UInt8]
    /// Odd multiples of Q, 2^96·Q, 2^192·Q and 2^288·Q (up to 31 times each), affine, Montgomery form.
    let table: P384SplitTable

    /// The key from `0x04 || X || Y` (97 bytes). Compressed points are not accepted.
    /// - Throws: ``AttestationError`` when the bytes are not an uncompressed point on P-384.
    public init(x963Representation bytes: some Collection<UInt8>) throws(AttestationError) {
        let all = Array(bytes)
        guard all.count == 97, all[0] == 0x04 else {
            throw .invalidKey("P-384 public key", "\(all.count) bytes starting 0x\(hexString(all.prefix(1))); expected 97 starting 0x04")
        }
        try self.init(x: all[1...48], y: all[49...96])
    }

    /// The key from its big-endian coordinates (up to 48 bytes each, leading zeros optional).
    /// - Throws: ``AttestationError`` when a coordinate is not below p or the point is not on the curve.
    public init(x xBytes: some Collection<UInt8>, y yBytes: some Collection<UInt8>) throws(AttestationError) {
        guard let x = U384(bigEndian: xBytes), let y = U384(bigEndian: yBytes) else {
            throw .invalidKey("P-384 public key", "a coordinate is longer than 48 bytes")
        }
        guard x < P384Curve.p, y < P384Curve.p else { throw .invalidKey("P-384 public key", "a coordinate is not below the field prime") }
        let point = P384AffinePoint(x: P384Curve.field.toMontgomery(x), y: P384Curve.field.toMontgomery(y))
        guard point.isOnCurve else { throw .invalidKey("P-384 public key", "the point is not on the curve") }
        self.x = x.bigEndianBytes
        self.y = y.bigEndianBytes
        // A point on P-384 other than infinity has prime order n, so none of the multiples in the table is infinity.
        guard let table = P384SplitTable(point, count: 16) else {
            throw .invalidKey("P-384 public key", "the point has small order")
        }
        self.table = table
    }

    /// The key of a swift-crypto public key.
    public init(_ key: P384.Signing.PublicKey) throws(AttestationError) {
        try self.init(x963Representation: key.x963Representation)
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.x == rhs.x && lhs.y == rhs.y }
    public func hash(into hasher: inout Hasher) { hasher.combine(x); hasher.combine(y) }

    /// Whether `rawRepresentation` (big-endian r || s, 48 bytes each) is this key's signature over `digest`.
    public func isValidSignature(rawRepresentation signature: some Collection<UInt8>, digest: some Collection<UInt8>) -> Bool {
        let all = Array(signature)
        guard all.count == 96 else { return false }
        return isValidSignature(r: all[0..<48], s: all[48..<96], digest: digest)
    }

    /// Whether (r, s), big-endian integers of up to 48 bytes, is this key's signature over `digest`
    /// (the hash of the message; longer digests are truncated to 384 bits as FIPS 186 says).
    public func isValidSignature(r rBytes: some Collection<UInt8>, s sBytes: some Collection<UInt8>, digest: some Collection<UInt8>) -> Bool {
        guard let r = U384(bigEndian: rBytes), let s = U384(bigEndian: sBytes),
              !r.isZero, r < P384Curve.n, !s.isZero, s < P384Curve.n,
              var e = U384(bigEndian: digest.prefix(48))
        else { return false }
        if !(e < P384Curve.n) { e = e.subtracting(P384Curve.n).difference }
        let order = P384Curve.order
        let w = order.toMontgomery(order.inverseVariableTime(s))  // s⁻¹·R
        let u1 = order.multiply(e, w)  // e·s⁻¹ (the R cancels)
        let u2 = order.multiply(r, w)  // r·s⁻¹
        let sum = P384Curve.linearCombination(u1, P384Curve.generatorTable, u2, table)
        guard !sum.isInfinity else { return false }
        // x(sum) = X/Z² ≡ r (mod n) without an inversion: X = r·Z², or X = (r + n)·Z² when r + n < p.
        let field = P384Curve.field
        let z2 = field.square(sum.z)
        if field.multiply(field.toMontgomery(r), z2) == sum.x { return true }
        let (rPlusN, carry) = r.adding(P384Curve.n)
        return carry == 0 && rPlusN < P384Curve.p && field.multiply(field.toMontgomery(rPlusN), z2) == sum.x
    }
}

// MARK: - 384-bit integers

/// A 384-bit unsigned integer: six 64-bit limbs, least significant first.
struct U384: Hashable, Sendable, Comparable {
    var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64, w4: UInt64, w5: UInt64

    static let zero = U384(w0: 0, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)

    init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64, w4: UInt64, w5: UInt64) {
        (self.w0, self.w1, self.w2, self.w3, self.w4, self.w5) = (w0, w1, w2, w3, w4, w5)
    }

    /// The big-endian integer `bytes`; nil when it has more than 48 bytes.
    init?(bigEndian bytes: some Collection<UInt8>) {
        guard bytes.count <= 48 else { return nil }
        self = .zero
        var bit = 0
        for byte in bytes.reversed() {
            self[bit / 64] |= UInt64(byte) << (bit % 64)
            bit += 8
        }
    }

    /// The 48 big-endian bytes.
    var bigEndianBytes: [UInt8] {
        (0..<48).map { index in UInt8(truncatingIfNeeded: self[(47 - index) / 8] >> (((47 - index) % 8) * 8)) }
    }

    subscript(limb: Int) -> UInt64 {
        get {
            switch limb {
            case 0: w0
            case 1: w1
            case 2: w2
            case 3: w3
            case 4: w4
            default: w5
            }
        }
        set {
            switch limb {
            case 0: w0 = newValue
            case 1: w1 = newValue
            case 2: w2 = newValue
            case 3: w3 = newValue
            case 4: w4 = newValue
            default: w5 = newValue
            }
        }
    }

    var isZero: Bool { (w0 | w1 | w2 | w3 | w4 | w5) == 0 }
    var isOne: Bool { w0 == 1 && (w1 | w2 | w3 | w4 | w5) == 0 }

    /// Bits 96·index ..< 96·(index + 1) of self, as an integer.
    func part96(_ index: Int) -> U384 {
        let offset = 96 * index
        let word = offset / 64
        func limb(_ i: Int) -> UInt64 { i < 6 ? self[i] : 0 }
        let low: UInt64, high: UInt64
        if offset % 64 == 0 {
            (low, high) = (limb(word), limb(word + 1))
        } else {
            (low, high) = (limb(word) >> 32 | limb(word + 1) << 32, limb(word + 1) >> 32 | limb(word + 2) << 32)
        }
        return U384(w0: low, w1: high & 0xFFFF_FFFF, w2: 0, w3: 0, w4: 0, w5: 0)
    }

    /// (carry·2^384 + self) >> 1.
    @inline(__always)
    func halved(carry: UInt64) -> U384 {
        U384(w0: w0 >> 1 | w1 << 63, w1: w1 >> 1 | w2 << 63, w2: w2 >> 1 | w3 << 63,
             w3: w3 >> 1 | w4 << 63, w4: w4 >> 1 | w5 << 63, w5: w5 >> 1 | carry << 63)
    }

    static func < (a: U384, b: U384) -> Bool {
        if a.w5 != b.w5 { return a.w5 < b.w5 }
        if a.w4 != b.w4 { return a.w4 < b.w4 }
        if a.w3 != b.w3 { return a.w3 < b.w3 }
        if a.w2 != b.w2 { return a.w2 < b.w2 }
        if a.w1 != b.w1 { return a.w1 < b.w1 }
        return a.w0 < b.w0
    }

    /// self + b and the carry out (0 or 1).
    @inline(__always)
    func adding(_ b: U384) -> (sum: U384, carry: UInt64) {
        var c: UInt64
        var r = U384.zero
        (r.w0, c) = addCarry(w0, b.w0, 0)
        (r.w1, c) = addCarry(w1, b.w1, c)
        (r.w2, c) = addCarry(w2, b.w2, c)
        (r.w3, c) = addCarry(w3, b.w3, c)
        (r.w4, c) = addCarry(w4, b.w4, c)
        (r.w5, c) = addCarry(w5, b.w5, c)
        return (r, c)
    }

    /// self − b modulo 2^384 and the borrow out (0 or 1).
    @inline(__always)
    func subtracting(_ b: U384) -> (difference: U384, borrow: UInt64) {
        var c: UInt64
        var r = U384.zero
        (r.w0, c) = subtractBorrow(w0, b.w0, 0)
        (r.w1, c) = subtractBorrow(w1, b.w1, c)
        (r.w2, c) = subtractBorrow(w2, b.w2, c)
        (r.w3, c) = subtractBorrow(w3, b.w3, c)
        (r.w4, c) = subtractBorrow(w4, b.w4, c)
        (r.w5, c) = subtractBorrow(w5, b.w5, c)
        return (r, c)
    }
}

/// a + b + carry as (low word, carry out).
@inline(__always)
private func addCarry(_ a: UInt64, _ b: UInt64, _ carry: UInt64) -> (UInt64, UInt64) {
    let t = UInt128(a) &+ UInt128(b) &+ UInt128(carry)
    return (UInt64(truncatingIfNeeded: t), UInt64(truncatingIfNeeded: t &>> 64))
}

/// a − b − borrow as (low word, borrow out).
@inline(__always)
private func subtractBorrow(_ a: UInt64, _ b: UInt64, _ borrow: UInt64) -> (UInt64, UInt64) {
    let t = UInt128(a) &- UInt128(b) &- UInt128(borrow)
    return (UInt64(truncatingIfNeeded: t), UInt64(truncatingIfNeeded: t &>> 64) & 1)
}

/// acc + a·b + carry as (low word, high word); it cannot overflow 128 bits.
@inline(__always)
private func multiplyAdd(_ acc: UInt64, _ a: UInt64, _ b: UInt64, _ carry: UInt64) -> (UInt64, UInt64) {
    let t = UInt128(a) &* UInt128(b) &+ UInt128(acc) &+ UInt128(carry)
    return (UInt64(truncatingIfNeeded: t), UInt64(truncatingIfNeeded: t &>> 64))
}

// MARK: - Montgomery arithmetic

/// Arithmetic modulo an odd 384-bit modulus on values in [0, modulus), in Montgomery form (R = 2^384).
struct Montgomery384: Sendable {
    let modulus: U384
    /// −modulus⁻¹ mod 2^64.
    let k: UInt64
    /// R² mod modulus, to enter Montgomery form.
    let rSquared: U384

    /// x·R mod modulus, for x < modulus.
    @inline(__always)
    func toMontgomery(_ x: U384) -> U384 { multiply(x, rSquared) }

    /// x·R⁻¹ mod modulus: leaves Montgomery form.
    @inline(__always)
    func fromMontgomery(_ x: U384) -> U384 {
        reduce(x.w0, x.w1, x.w2, x.w3, x.w4, x.w5, 0, 0, 0, 0, 0, 0)
    }

    @inline(__always)
    func add(_ a: U384, _ b: U384) -> U384 {
        let (sum, carry) = a.adding(b)
        return subtractOnce(sum, carry: carry)
    }

    @inline(__always)
    func subtract(_ a: U384, _ b: U384) -> U384 {
        let (difference, borrow) = a.subtracting(b)
        return borrow == 0 ? difference : difference.adding(modulus).sum
    }

    @inline(__always)
    func negate(_ a: U384) -> U384 { a.isZero ? a : modulus.subtracting(a).difference }

    /// x − modulus when x (with `carry` as bit 384) is at least the modulus; x must be below 2·modulus.
    @inline(__always)
    private func subtractOnce(_ x: U384, carry: UInt64) -> U384 {
        let (difference, borrow) = x.subtracting(modulus)
        return carry != 0 || borrow == 0 ? difference : x
    }

    /// One word of Montgomery reduction: s ← (s + q·modulus) / 2^64, q = s0·k mod 2^64.
    @inline(__always)
    private func reduceWord(_ s0: inout UInt64, _ s1: inout UInt64, _ s2: inout UInt64,
                            _ s3: inout UInt64, _ s4: inout UInt64, _ s5: inout UInt64) {
        let q = s0 &* k
        var c: UInt64
        (_, c) = multiplyAdd(s0, q, modulus.w0, 0)
        (s0, c) = multiplyAdd(s1, q, modulus.w1, c)
        (s1, c) = multiplyAdd(s2, q, modulus.w2, c)
        (s2, c) = multiplyAdd(s3, q, modulus.w3, c)
        (s3, c) = multiplyAdd(s4, q, modulus.w4, c)
        (s4, s5) = multiplyAdd(s5, q, modulus.w5, c)
    }

    /// a·b·R⁻¹ mod modulus (CIOS: each row of the product is followed by one word of reduction).
    @inline(__always)
    func multiply(_ a: U384, _ b: U384) -> U384 {
        var t0: UInt64 = 0, t1: UInt64 = 0, t2: UInt64 = 0, t3: UInt64 = 0, t4: UInt64 = 0, t5: UInt64 = 0, t6: UInt64 = 0
        multiplyStep(a, b.w0, &t0, &t1, &t2, &t3, &t4, &t5, &t6)
        multiplyStep(a, b.w1, &t0, &t1, &t2, &t3, &t4, &t5, &t6)
        multiplyStep(a, b.w2, &t0, &t1, &t2, &t3, &t4, &t5, &t6)
        multiplyStep(a, b.w3, &t0, &t1, &t2, &t3, &t4, &t5, &t6)
        multiplyStep(a, b.w4, &t0, &t1, &t2, &t3, &t4, &t5, &t6)
        multiplyStep(a, b.w5, &t0, &t1, &t2, &t3, &t4, &t5, &t6)
        return subtractOnce(U384(w0: t0, w1: t1, w2: t2, w3: t3, w4: t4, w5: t5), carry: t6)
    }

    /// t ← (t + a·b + q·modulus) / 2^64 with q making the low word zero; t (t6 its top bit) stays below 2·modulus.
    @inline(__always)
    private func multiplyStep(_ a: U384, _ b: UInt64, _ t0: inout UInt64, _ t1: inout UInt64, _ t2: inout UInt64,
                              _ t3: inout UInt64, _ t4: inout UInt64, _ t5: inout UInt64, _ t6: inout UInt64) {
        var c: UInt64
        (t0, c) = multiplyAdd(t0, a.w0, b, 0)
        (t1, c) = multiplyAdd(t1, a.w1, b, c)
        (t2, c) = multiplyAdd(t2, a.w2, b, c)
        (t3, c) = multiplyAdd(t3, a.w3, b, c)
        (t4, c) = multiplyAdd(t4, a.w4, b, c)
        (t5, c) = multiplyAdd(t5, a.w5, b, c)
        let (sum6, top) = addCarry(t6, c, 0)
        let q = t0 &* k
        (_, c) = multiplyAdd(t0, q, modulus.w0, 0)
        (t0, c) = multiplyAdd(t1, q, modulus.w1, c)
        (t1, c) = multiplyAdd(t2, q, modulus.w2, c)
        (t2, c) = multiplyAdd(t3, q, modulus.w3, c)
        (t3, c) = multiplyAdd(t4, q, modulus.w4, c)
        (t4, c) = multiplyAdd(t5, q, modulus.w5, c)
        (t5, c) = addCarry(sum6, c, 0)
        t6 = top &+ c
    }

    /// a²·R⁻¹ mod modulus: the 15 cross products once, doubled, plus the 6 squares.
    @inline(__always)
    func square(_ a: U384) -> U384 {
        var c: UInt64
        var t1: UInt64, t2: UInt64, t3: UInt64, t4: UInt64, t5: UInt64, t6: UInt64, t7: UInt64, t8: UInt64, t9: UInt64, t10: UInt64
        (t1, c) = multiplyAdd(0, a.w0, a.w1, 0)
        (t2, c) = multiplyAdd(0, a.w0, a.w2, c)
        (t3, c) = multiplyAdd(0, a.w0, a.w3, c)
        (t4, c) = multiplyAdd(0, a.w0, a.w4, c)
        (t5, t6) = multiplyAdd(0, a.w0, a.w5, c)
        (t3, c) = multiplyAdd(t3, a.w1, a.w2, 0)
        (t4, c) = multiplyAdd(t4, a.w1, a.w3, c)
        (t5, c) = multiplyAdd(t5, a.w1, a.w4, c)
        (t6, t7) = multiplyAdd(t6, a.w1, a.w5, c)
        (t5, c) = multiplyAdd(t5, a.w2, a.w3, 0)
        (t6, c) = multiplyAdd(t6, a.w2, a.w4, c)
        (t7, t8) = multiplyAdd(t7, a.w2, a.w5, c)
        (t7, c) = multiplyAdd(t7, a.w3, a.w4, 0)
        (t8, t9) = multiplyAdd(t8, a.w3, a.w5, c)
        (t9, t10) = multiplyAdd(t9, a.w4, a.w5, 0)
        let t11 = t10 >> 63
        t10 = t10 << 1 | t9 >> 63
        t9 = t9 << 1 | t8 >> 63
        t8 = t8 << 1 | t7 >> 63
        t7 = t7 << 1 | t6 >> 63
        t6 = t6 << 1 | t5 >> 63
        t5 = t5 << 1 | t4 >> 63
        t4 = t4 << 1 | t3 >> 63
        t3 = t3 << 1 | t2 >> 63
        t2 = t2 << 1 | t1 >> 63
        t1 = t1 << 1
        let (l0, h0) = multiplyAdd(0, a.w0, a.w0, 0)
        let (l1, h1) = multiplyAdd(0, a.w1, a.w1, 0)
        let (l2, h2) = multiplyAdd(0, a.w2, a.w2, 0)
        let (l3, h3) = multiplyAdd(0, a.w3, a.w3, 0)
        let (l4, h4) = multiplyAdd(0, a.w4, a.w4, 0)
        let (l5, h5) = multiplyAdd(0, a.w5, a.w5, 0)
        var u11: UInt64
        (t1, c) = addCarry(t1, h0, 0)
        (t2, c) = addCarry(t2, l1, c)
        (t3, c) = addCarry(t3, h1, c)
        (t4, c) = addCarry(t4, l2, c)
        (t5, c) = addCarry(t5, h2, c)
        (t6, c) = addCarry(t6, l3, c)
        (t7, c) = addCarry(t7, h3, c)
        (t8, c) = addCarry(t8, l4, c)
        (t9, c) = addCarry(t9, h4, c)
        (t10, c) = addCarry(t10, l5, c)
        (u11, _) = addCarry(t11, h5, c)
        return reduce(l0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, u11)
    }

    /// x^exponent in Montgomery form (x in Montgomery form), with a fixed 4-bit window.
    func power(_ x: U384, _ exponent: U384) -> U384 {
        var powers = [U384](repeating: .zero, count: 16)
        powers[0] = one
        powers[1] = x
        for index in 2..<16 { powers[index] = multiply(powers[index - 1], x) }
        var result = powers[0]
        for nibble in stride(from: 95, through: 0, by: -1) {
            result = square(square(square(square(result))))
            let digit = Int(exponent[nibble / 16] >> (UInt64(nibble % 16) * 4) & 0xF)
            if digit != 0 { result = multiply(result, powers[digit]) }
        }
        return result
    }

    /// x⁻¹ in Montgomery form (x in Montgomery form, not zero; the modulus is prime): x^(modulus − 2).
    func inverse(_ x: U384) -> U384 {
        power(x, modulus.subtracting(U384(w0: 2, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)).difference)
    }

    /// R mod modulus: one in Montgomery form.
    var one: U384 { fromMontgomery(rSquared) }

    /// x⁻¹ for 0 < x < modulus (the modulus is an odd prime), in normal form, by the binary extended
    /// Euclidean algorithm: x1·x ≡ u and x2·x ≡ v (mod modulus) throughout. Variable time.
    func inverseVariableTime(_ x: U384) -> U384 {
        var u = x, v = modulus
        var x1 = U384(w0: 1, w1: 0, w2: 0, w3: 0, w4: 0, w5: 0), x2 = U384.zero
        while !u.isOne && !v.isOne {
            while u.w0 & 1 == 0 {
                u = u.halved(carry: 0)
                x1 = halve(x1)
            }
            while v.w0 & 1 == 0 {
                v = v.halved(carry: 0)
                x2 = halve(x2)
            }
            if u < v {
                v = v.subtracting(u).difference
                x2 = subtract(x2, x1)
            } else {
                u = u.subtracting(v).difference
                x1 = subtract(x1, x2)
            }
        }
        return u.isOne ? x1 : x2
    }

    /// x/2 mod modulus: x >> 1 when x is even, else (x + modulus) >> 1.
    @inline(__always)
    private func halve(_ x: U384) -> U384 {
        guard x.w0 & 1 == 1 else { return x.halved(carry: 0) }
        let (sum, carry) = x.adding(modulus)
        return sum.halved(carry: carry)
    }

    /// The Montgomery reduction of the 768-bit t0…t11 (t < modulus·R): t·R⁻¹ mod modulus.
    @inline(__always)
    func reduce(_ t0: UInt64, _ t1: UInt64, _ t2: UInt64, _ t3: UInt64, _ t4: UInt64, _ t5: UInt64,
                _ t6: UInt64, _ t7: UInt64, _ t8: UInt64, _ t9: UInt64, _ t10: UInt64, _ t11: UInt64) -> U384 {
        var s0 = t0, s1 = t1, s2 = t2, s3 = t3, s4 = t4, s5 = t5
        // Six word steps: s ← (s + q·modulus) / 2^64 with q making the low word zero. Then s ≤ modulus.
        reduceWord(&s0, &s1, &s2, &s3, &s4, &s5)
        reduceWord(&s0, &s1, &s2, &s3, &s4, &s5)
        reduceWord(&s0, &s1, &s2, &s3, &s4, &s5)
        reduceWord(&s0, &s1, &s2, &s3, &s4, &s5)
        reduceWord(&s0, &s1, &s2, &s3, &s4, &s5)
        reduceWord(&s0, &s1, &s2, &s3, &s4, &s5)
        var c: UInt64
        (s0, c) = addCarry(s0, t6, 0)
        (s1, c) = addCarry(s1, t7, c)
        (s2, c) = addCarry(s2, t8, c)
        (s3, c) = addCarry(s3, t9, c)
        (s4, c) = addCarry(s4, t10, c)
        (s5, c) = addCarry(s5, t11, c)
        return subtractOnce(U384(w0: s0, w1: s1, w2: s2, w3: s3, w4: s4, w5: s5), carry: c)
    }
}

// MARK: - The curve

/// P-384's constants and its double-scalar multiplication.
enum P384Curve {
    /// The field prime p = 2^384 − 2^128 − 2^96 + 2^32 − 1.
    static var p: U384 {
        U384(w0: 0x0000_0000_FFFF_FFFF, w1: 0xFFFF_FFFF_0000_0000, w2: 0xFFFF_FFFF_FFFF_FFFE,
             w3: 0xFFFF_FFFF_FFFF_FFFF, w4: 0xFFFF_FFFF_FFFF_FFFF, w5: 0xFFFF_FFFF_FFFF_FFFF)
    }

    /// The group order n.
    static var n: U384 {
        U384(w0: 0xECEC_196A_CCC5_2973, w1: 0x581A_0DB2_48B0_A77A, w2: 0xC763_4D81_F437_2DDF,
             w3: 0xFFFF_FFFF_FFFF_FFFF, w4: 0xFFFF_FFFF_FFFF_FFFF, w5: 0xFFFF_FFFF_FFFF_FFFF)
    }

    /// Arithmetic modulo p.
    static var field: Montgomery384 {
        Montgomery384(
            modulus: p, k: 0x1_0000_0001,
            rSquared: U384(w0: 0xFFFF_FFFE_0000_0001, w1: 0x0000_0002_0000_0000, w2: 0xFFFF_FFFE_0000_0000,
                           w3: 0x0000_0002_0000_0000, w4: 0x0000_0000_0000_0001, w5: 0))
    }

    /// Arithmetic modulo n.
    static var order: Montgomery384 {
        Montgomery384(
            modulus: n, k: 0x6ED4_6089_E88F_DC45,
            rSquared: U384(w0: 0x2D31_9B24_19B4_09A9, w1: 0xFF3D_81E5_DF1A_A419, w2: 0xBC3E_483A_FCB8_2947,
                           w3: 0xD40D_4917_4AAB_1CC5, w4: 0x3FB0_5B7A_2826_6895, w5: 0x0C84_EE01_2B39_BF21))
    }

    /// The curve coefficient b, in Montgomery form (a = −3).
    static var b: U384 {
        U384(w0: 0x0811_8871_9D41_2DCC, w1: 0xF729_ADD8_7A4C_32EC, w2: 0x77F2_209B_1920_022E,
             w3: 0xE337_4BEE_9493_8AE2, w4: 0xB62B_21F4_1F02_2094, w5: 0xCD08_114B_604F_BFF9)
    }

    /// The generator G, in Montgomery form.
    static var generator: P384AffinePoint {
        P384AffinePoint(
            x: U384(w0: 0x3DD0_7566_49C0_B528, w1: 0x20E3_78E2_A0D6_CE38, w2: 0x879C_3AFC_541B_4D6E,
                    w3: 0x6454_8684_59A3_0EFF, w4: 0x812F_F723_614E_DE2B, w5: 0x4D3A_ADC2_299E_1513),
            y: U384(w0: 0x2304_3DAD_4B03_A4FE, w1: 0xA1BF_A8BF_7BB4_A9AC, w2: 0x8BAD_E756_2E83_B050,
                    w3: 0xC6C3_5219_68F4_FFD9, w4: 0xDD80_0226_3969_A840, w5: 0x2B78_ABC2_5A15_C5E9))
    }

    /// The split table of G (width-7 wNAF digits: G, 3G, …, 63G for each part), made on first use.
    static let generatorTable: P384SplitTable = P384SplitTable(generator, count: 32)!

    /// point, 3·point, …, (2·count − 1)·point in affine form; nil if one of them is infinity.
    static func oddMultiples(of point: P384AffinePoint, count: Int) -> [P384AffinePoint]? {
        let twice = P384JacobianPoint(point).doubled()
        var jacobian = [P384JacobianPoint(point)]
        for _ in 1..<count { jacobian.append(jacobian[jacobian.count - 1].adding(twice)) }
        return P384JacobianPoint.affine(jacobian)
    }

    /// u1·G + u2·Q, with `generatorTable` and `keyTable` the split tables of G and Q.
    static func linearCombination(_ u1: U384, _ generatorTable: P384SplitTable,
                                  _ u2: U384, _ keyTable: P384SplitTable) -> P384JacobianPoint {
        // Eight 96-bit scalars, each with the table of its base.
        var digits: [[Int8]] = []
        var tables: [[P384AffinePoint]] = []
        digits.reserveCapacity(2 * P384SplitTable.parts)
        tables.reserveCapacity(2 * P384SplitTable.parts)
        for (scalar, table) in [(u1, generatorTable), (u2, keyTable)] {
            for part in 0..<P384SplitTable.parts {
                digits.append(nonAdjacentForm(scalar.part96(part), width: table.width))
                tables.append(table.multiples[part])
            }
        }
        var sum = P384JacobianPoint.infinity
        guard let top = (0..<digits[0].count).last(where: { index in digits.contains { $0[index] != 0 } }) else { return sum }
        for index in stride(from: top, through: 0, by: -1) {
            sum = sum.doubled()
            for term in 0..<digits.count {
                let digit = Int(digits[term][index])
                if digit > 0 {
                    sum = sum.adding(tables[term][digit >> 1])
                } else if digit < 0 {
                    sum = sum.adding(tables[term][-digit >> 1].negated)
                }
            }
        }
        return sum
    }

    /// The width-`width` non-adjacent form of k: 386 digits, least significant first, each zero or odd
    /// with |digit| < 2^(width − 1), nonzero digits at least `width` apart.
    static func nonAdjacentForm(_ scalar: U384, width: Int) -> [Int8] {
        var digits = [Int8](repeating: 0, count: 386)
        var k = scalar
        var carry: UInt64 = 0  // bit 384 of k, set when adding a digit overflowed
        let window = UInt64(1) << width
        var index = 0
        while !k.isZero || carry != 0 {
            if k.w0 & 1 == 1 {
                var digit = Int64(k.w0 & (window - 1))
                if digit >= Int64(window >> 1) { digit -= Int64(window) }
                digits[index] = Int8(digit)
                let small = U384(w0: UInt64(digit.magnitude), w1: 0, w2: 0, w3: 0, w4: 0, w5: 0)
                if digit > 0 {
                    k = k.subtracting(small).difference
                } else {
                    let (sum, overflow) = k.adding(small)
                    k = sum
                    carry |= overflow
                }
            }
            k = k.halved(carry: carry)
            carry = 0
            index += 1
        }
        return digits
    }
}

/// Odd multiples of a point P and of 2^96·P, 2^192·P and 2^288·P, so that u·P is the sum of four
/// 96-bit scalars times these bases, computed with 96 doublings.
struct P384SplitTable: Sendable, Hashable {
    /// Parts a scalar is split into, of 96 bits each.
    static let parts = 4
    /// multiples[i][j] = (2j + 1)·2^(96·i)·P.
    let multiples: [[P384AffinePoint]]
    /// The wNAF width the tables serve: 2 + log2(count).
    let width: Int

    /// The tables of `point` with `count` (a power of two) odd multiples each; nil if a multiple is infinity.
    init?(_ point: P384AffinePoint, count: Int) {
        var multiples: [[P384AffinePoint]] = []
        var base = point
        for part in 0..<Self.parts {
            if part > 0 {
                var shifted = P384JacobianPoint(base)
                for _ in 0..<96 { shifted = shifted.doubled() }
                guard let next = P384JacobianPoint.affine([shifted])?.first else { return nil }
                base = next
            }
            guard let table = P384Curve.oddMultiples(of: base, count: count) else { return nil }
            multiples.append(table)
        }
        self.multiples = multiples
        self.width = count.trailingZeroBitCount + 2
    }
}

/// A point in affine coordinates, Montgomery form; never the point at infinity.
struct P384AffinePoint: Hashable, Sendable {
    var x: U384
    var y: U384

    /// −(x, y) = (x, −y).
    var negated: P384AffinePoint { P384AffinePoint(x: x, y: P384Curve.field.negate(y)) }

    /// y² = x³ − 3x + b.
    var isOnCurve: Bool {
        let field = P384Curve.field
        let x3 = field.multiply(field.square(x), x)
        let threeX = field.add(field.add(x, x), x)
        return field.square(y) == field.add(field.subtract(x3, threeX), P384Curve.b)
    }
}

/// A point in Jacobian coordinates (X/Z², Y/Z³), Montgomery form; Z = 0 is the point at infinity.
struct P384JacobianPoint: Sendable {
    var x: U384
    var y: U384
    var z: U384

    static var infinity: P384JacobianPoint { P384JacobianPoint(x: P384Curve.field.one, y: P384Curve.field.one, z: .zero) }

    init(x: U384, y: U384, z: U384) {
        self.x = x
        self.y = y
        self.z = z
    }

    init(_ point: P384AffinePoint) { self.init(x: point.x, y: point.y, z: P384Curve.field.one) }

    var isInfinity: Bool { z.isZero }

    /// 2·self (dbl-2001-b, a = −3: 3M + 5S).
    func doubled() -> P384JacobianPoint {
        // y = 0 would be a point of order 2, which P-384 (prime order) does not have.
        guard !isInfinity else { return self }
        let f = P384Curve.field
        let delta = f.square(z)
        let gamma = f.square(y)
        let beta = f.multiply(x, gamma)
        let product = f.multiply(f.subtract(x, delta), f.add(x, delta))
        let alpha = f.add(f.add(product, product), product)
        let beta2 = f.add(beta, beta)
        let beta4 = f.add(beta2, beta2)
        let x3 = f.subtract(f.square(alpha), f.add(beta4, beta4))
        let z3 = f.subtract(f.subtract(f.square(f.add(y, z)), gamma), delta)
        let gamma2 = f.square(gamma)
        let gamma4 = f.add(gamma2, gamma2)
        let gamma8 = f.add(gamma4, gamma4)
        let y3 = f.subtract(f.multiply(alpha, f.subtract(beta4, x3)), f.add(gamma8, gamma8))
        return P384JacobianPoint(x: x3, y: y3, z: z3)
    }

    /// self + an affine point (madd-2007-bl: 7M + 4S), handling infinity and doubling.
    func adding(_ other: P384AffinePoint) -> P384JacobianPoint {
        guard !isInfinity else { return P384JacobianPoint(other) }
        let f = P384Curve.field
        let z1z1 = f.square(z)
        let u2 = f.multiply(other.x, z1z1)
        let s2 = f.multiply(f.multiply(other.y, z), z1z1)
        let h = f.subtract(u2, x)
        let difference = f.subtract(s2, y)
        guard !h.isZero else {
            return difference.isZero ? doubled() : .infinity
        }
        let r = f.add(difference, difference)
        let hh = f.square(h)
        let hh2 = f.add(hh, hh)
        let i = f.add(hh2, hh2)
        let j = f.multiply(h, i)
        let v = f.multiply(x, i)
        let x3 = f.subtract(f.subtract(f.square(r), j), f.add(v, v))
        let yj = f.multiply(y, j)
        let y3 = f.subtract(f.multiply(r, f.subtract(v, x3)), f.add(yj, yj))
        let z3 = f.subtract(f.subtract(f.square(f.add(z, h)), z1z1), hh)
        return P384JacobianPoint(x: x3, y: y3, z: z3)
    }

    /// self + other (add-2007-bl: 11M + 5S), handling infinity and doubling.
    func adding(_ other: P384JacobianPoint) -> P384JacobianPoint {
        guard !isInfinity else { return other }
        guard !other.isInfinity else { return self }
        let f = P384Curve.field
        let z1z1 = f.square(z)
        let z2z2 = f.square(other.z)
        let u1 = f.multiply(x, z2z2)
        let u2 = f.multiply(other.x, z1z1)
        let s1 = f.multiply(f.multiply(y, other.z), z2z2)
        let s2 = f.multiply(f.multiply(other.y, z), z1z1)
        let h = f.subtract(u2, u1)
        let difference = f.subtract(s2, s1)
        guard !h.isZero else {
            return difference.isZero ? doubled() : .infinity
        }
        let r = f.add(difference, difference)
        let h2 = f.add(h, h)
        let i = f.square(h2)
        let j = f.multiply(h, i)
        let v = f.multiply(u1, i)
        let x3 = f.subtract(f.subtract(f.square(r), j), f.add(v, v))
        let s1j = f.multiply(s1, j)
        let y3 = f.subtract(f.multiply(r, f.subtract(v, x3)), f.add(s1j, s1j))
        let z3 = f.multiply(f.subtract(f.subtract(f.square(f.add(z, other.z)), z1z1), z2z2), h)
        return P384JacobianPoint(x: x3, y: y3, z: z3)
    }

    /// The affine forms of `points` with one field inversion (Montgomery's trick); nil if one is infinity.
    static func affine(_ points: [P384JacobianPoint]) -> [P384AffinePoint]? {
        guard !points.contains(where: \.isInfinity) else { return nil }
        let f = P384Curve.field
        var prefix = [U384]()  // prefix[i] = z0·…·zi
        prefix.reserveCapacity(points.count)
        for point in points { prefix.append(prefix.last.map { f.multiply($0, point.z) } ?? point.z) }
        var inverse = f.inverse(prefix[prefix.count - 1])  // (z0·…·zlast)⁻¹
        var result = [P384AffinePoint](repeating: P384AffinePoint(x: .zero, y: .zero), count: points.count)
        for index in stride(from: points.count - 1, through: 0, by: -1) {
            let zInverse = index > 0 ? f.multiply(inverse, prefix[index - 1]) : inverse
            inverse = f.multiply(inverse, points[index].z)
            let zInverse2 = f.square(zInverse)
            result[index] = P384AffinePoint(x: f.multiply(points[index].x, zInverse2),
                                            y: f.multiply(points[index].y, f.multiply(zInverse2, zInverse)))
        }
        return result
    }
}
