import Crypto

// ECDSA P-256 verification in pure Swift (FIPS 186-5 §6.4.2, SEC 1 §4.1.4), for keys known ahead.
//
// Only verification: every input (key, digest, signature) is public, so the arithmetic is variable
// time. Field and scalar elements are four 64-bit limbs in Montgomery form (R = 2^256); the field
// reduction uses p ≡ −1 (mod 2^64) (so each word step is shifts and one multiplication by
// 2^64 − 2^32 + 1), the scalar side is generic Montgomery arithmetic modulo n. Points are Jacobian
// (X/Z², Y/Z³, Z = 0 is the point at infinity).
//
// u1·G + u2·Q is a fixed-base comb without doublings: for each base B (G, once per process, and Q,
// once per key) a table holds (j + 1)·2^(w·i)·B in affine form for every window i and j < 2^(w − 1);
// each scalar is recoded into signed digits d_i in [−2^(w − 1), 2^(w − 1)] with Σ d_i·2^(w·i) = u,
// and u·B is the sum of ±table[i][|d_i| − 1]: ⌈257/w⌉ mixed additions per scalar, 33 + 37 in all with
// w = 8 for G (270,336 bytes, once per process) and w = 7 for Q (151,552 bytes per key).
// s⁻¹ mod n comes from the binary extended Euclidean algorithm; x(R) is compared with r without
// inverting Z.

/// An ECDSA P-256 public key prepared for fast signature verification. Build it once per key (it
/// precomputes a comb table of the key's multiples: ``tableBytes`` bytes, about 2 ms) and
/// reuse it; it is an immutable value.
/// - Important: Verification only, not constant time: never feed it secret scalars.
public struct P256Verifier: Sendable, Hashable {
    /// The key's affine x coordinate, big-endian, 32 bytes.
    public let x: [UInt8]
    /// The key's affine y coordinate, big-endian, 32 bytes.
    public let y: [UInt8]
    /// (j + 1)·2^(w·i)·Q for every window i and entry j, affine, Montgomery form.
    let table: P256CombTable

    /// The size of one key's table in bytes (the generator's table, shared by all keys, is 270,336 bytes).
    public static var tableBytes: Int {
        (P256CombTable.windows(width: P256CombTable.keyWidth) << (P256CombTable.keyWidth - 1)) * MemoryLayout<P256AffinePoint>.stride
    }

    /// The key from `0x04 || X || Y` (65 bytes). Compressed points are not accepted.
    /// - Throws: ``AttestationError`` when the bytes are not an uncompressed point on P-256.
    public init(x963Representation bytes: some Collection<UInt8>) throws(AttestationError) {
        let all = Array(bytes)
        guard all.count == 65, all[0] == 0x04 else {
            throw .invalidKey("P-256 public key", "\(all.count) bytes starting 0x\(hexString(all.prefix(1))); expected 65 starting 0x04")
        }
        try self.init(x: all[1...32], y: all[33...64])
    }

    /// The key from its big-endian coordinates (up to 32 bytes each, leading zeros optional).
    /// - Throws: ``AttestationError`` when a coordinate is not below p or the point is not on the curve.
    public init(x xBytes: some Collection<UInt8>, y yBytes: some Collection<UInt8>) throws(AttestationError) {
        guard let x = U256(bigEndian: xBytes), let y = U256(bigEndian: yBytes) else {
            throw .invalidKey("P-256 public key", "a coordinate is longer than 32 bytes")
        }
        guard x < P256Field.p, y < P256Field.p else { throw .invalidKey("P-256 public key", "a coordinate is not below the field prime") }
        let point = P256AffinePoint(x: P256Field.toMontgomery(x), y: P256Field.toMontgomery(y))
        guard point.isOnCurve else { throw .invalidKey("P-256 public key", "the point is not on the curve") }
        self.x = x.bigEndianBytes
        self.y = y.bigEndianBytes
        // A point on P-256 other than infinity has prime order n, so no entry of the table is infinity.
        guard let table = P256CombTable(point, width: P256CombTable.keyWidth) else { throw .invalidKey("P-256 public key", "the point has small order") }
        self.table = table
    }

    /// The key of a swift-crypto public key.
    public init(_ key: P256.Signing.PublicKey) throws(AttestationError) {
        try self.init(x963Representation: key.x963Representation)
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.x == rhs.x && lhs.y == rhs.y }
    public func hash(into hasher: inout Hasher) { hasher.combine(x); hasher.combine(y) }

    /// Whether `rawRepresentation` (big-endian r || s, 32 bytes each) is this key's signature over `digest`.
    public func isValidSignature(rawRepresentation signature: some Collection<UInt8>, digest: some Collection<UInt8>) -> Bool {
        let all = Array(signature)
        guard all.count == 64 else { return false }
        return isValidSignature(r: all[0..<32], s: all[32..<64], digest: digest)
    }

    /// Whether (r, s), big-endian integers of up to 32 bytes, is this key's signature over `digest`
    /// (the hash of the message; longer digests are truncated to 256 bits as FIPS 186 says).
    public func isValidSignature(r rBytes: some Collection<UInt8>, s sBytes: some Collection<UInt8>, digest: some Collection<UInt8>) -> Bool {
        guard let r = U256(bigEndian: rBytes), let s = U256(bigEndian: sBytes),
              !r.isZero, r < P256Curve.n, !s.isZero, s < P256Curve.n,
              var e = U256(bigEndian: digest.prefix(32))
        else { return false }
        if !(e < P256Curve.n) { e = e.subtracting(P256Curve.n).difference }
        let order = P256Curve.order
        let w = order.toMontgomery(order.inverseVariableTime(s))  // s⁻¹·R
        let u1 = order.multiply(e, w)  // e·s⁻¹ (the R cancels)
        let u2 = order.multiply(r, w)  // r·s⁻¹
        let sum = P256Curve.linearCombination(u1, P256Curve.generatorTable, u2, table)
        guard !sum.isInfinity else { return false }
        // x(sum) = X/Z² ≡ r (mod n) without an inversion: X = r·Z², or X = (r + n)·Z² when r + n < p.
        let z2 = P256Field.square(sum.z)
        if P256Field.multiply(P256Field.toMontgomery(r), z2) == sum.x { return true }
        let (rPlusN, carry) = r.adding(P256Curve.n)
        return carry == 0 && rPlusN < P256Field.p && P256Field.multiply(P256Field.toMontgomery(rPlusN), z2) == sum.x
    }
}

// MARK: - 256-bit integers

/// A 256-bit unsigned integer: four 64-bit limbs, least significant first.
struct U256: Hashable, Sendable, Comparable {
    var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    static let zero = U256(w0: 0, w1: 0, w2: 0, w3: 0)
    static let one = U256(w0: 1, w1: 0, w2: 0, w3: 0)

    @inline(__always)
    init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        (self.w0, self.w1, self.w2, self.w3) = (w0, w1, w2, w3)
    }

    /// The big-endian integer `bytes`; nil when it has more than 32 bytes.
    init?(bigEndian bytes: some Collection<UInt8>) {
        // Contiguous bytes are read through a pointer, which is fast even where the caller is not specialized.
        if let parsed = bytes.withContiguousStorageIfAvailable({ U256(bigEndianBuffer: $0) }) {
            guard let parsed else { return nil }
            self = parsed
            return
        }
        self.init(bigEndianBytes: bytes)
    }

    /// The big-endian integer in `buffer`; nil when it has more than 32 bytes.
    init?(bigEndianBuffer buffer: UnsafeBufferPointer<UInt8>) { self.init(bigEndianBytes: buffer) }

    /// The big-endian integer `bytes`, one byte at a time; nil when it has more than 32 bytes.
    @inline(__always)
    private init?(bigEndianBytes bytes: some Collection<UInt8>) {
        var position = bytes.count  // bytes still to read, so the next byte's index from the least significant end + 1
        guard position <= 32 else { return nil }
        self = .zero
        for byte in bytes {
            position -= 1
            let value = UInt64(byte) << UInt64((position & 7) * 8)
            switch position >> 3 {
            case 0: w0 |= value
            case 1: w1 |= value
            case 2: w2 |= value
            default: w3 |= value
            }
        }
    }

    /// The 32 big-endian bytes.
    var bigEndianBytes: [UInt8] {
        (0..<32).map { index in UInt8(truncatingIfNeeded: self[(31 - index) / 8] >> (((31 - index) % 8) * 8)) }
    }

    subscript(limb: Int) -> UInt64 {
        get {
            switch limb {
            case 0: w0
            case 1: w1
            case 2: w2
            default: w3
            }
        }
        set {
            switch limb {
            case 0: w0 = newValue
            case 1: w1 = newValue
            case 2: w2 = newValue
            default: w3 = newValue
            }
        }
    }

    var isZero: Bool { (w0 | w1 | w2 | w3) == 0 }
    var isOne: Bool { w0 == 1 && (w1 | w2 | w3) == 0 }

    /// Bits offset ..< offset + width (width at most 57) as an integer; bits above 255 are zero.
    @inline(__always)
    func bits(at offset: Int, width: Int) -> UInt64 {
        let limb = offset >> 6
        let shift = UInt64(offset & 63)
        let low = limb < 4 ? self[limb] : 0
        let high = limb + 1 < 4 ? self[limb + 1] : 0
        let joined = shift == 0 ? low : low >> shift | high << (64 - shift)
        return joined & ((1 << UInt64(width)) - 1)
    }

    /// (carry·2^256 + self) >> 1.
    @inline(__always)
    func halved(carry: UInt64) -> U256 {
        U256(w0: w0 >> 1 | w1 << 63, w1: w1 >> 1 | w2 << 63, w2: w2 >> 1 | w3 << 63, w3: w3 >> 1 | carry << 63)
    }

    @inline(__always)
    static func < (a: U256, b: U256) -> Bool {
        if a.w3 != b.w3 { return a.w3 < b.w3 }
        if a.w2 != b.w2 { return a.w2 < b.w2 }
        if a.w1 != b.w1 { return a.w1 < b.w1 }
        return a.w0 < b.w0
    }

    /// self + b and the carry out (0 or 1).
    @inline(__always)
    func adding(_ b: U256) -> (sum: U256, carry: UInt64) {
        var c: UInt64
        var r = U256.zero
        (r.w0, c) = addCarry(w0, b.w0, 0)
        (r.w1, c) = addCarry(w1, b.w1, c)
        (r.w2, c) = addCarry(w2, b.w2, c)
        (r.w3, c) = addCarry(w3, b.w3, c)
        return (r, c)
    }

    /// self − b modulo 2^256 and the borrow out (0 or 1).
    @inline(__always)
    func subtracting(_ b: U256) -> (difference: U256, borrow: UInt64) {
        var c: UInt64
        var r = U256.zero
        (r.w0, c) = subtractBorrow(w0, b.w0, 0)
        (r.w1, c) = subtractBorrow(w1, b.w1, c)
        (r.w2, c) = subtractBorrow(w2, b.w2, c)
        (r.w3, c) = subtractBorrow(w3, b.w3, c)
        return (r, c)
    }
}

/// a + b + carry as (low word, carry out).
@inline(__always)
private func addCarry(_ a: UInt64, _ b: UInt64, _ carry: UInt64) -> (UInt64, UInt64) {
    let (s1, o1) = a.addingReportingOverflow(b)
    let (s2, o2) = s1.addingReportingOverflow(carry)
    return (s2, (o1 ? 1 : 0) | (o2 ? 1 : 0))
}

/// a − b − borrow as (low word, borrow out).
@inline(__always)
private func subtractBorrow(_ a: UInt64, _ b: UInt64, _ borrow: UInt64) -> (UInt64, UInt64) {
    let (d1, o1) = a.subtractingReportingOverflow(b)
    let (d2, o2) = d1.subtractingReportingOverflow(borrow)
    return (d2, (o1 ? 1 : 0) | (o2 ? 1 : 0))
}

/// acc + a·b + carry as (low word, high word); it cannot overflow 128 bits.
@inline(__always)
private func multiplyAdd(_ acc: UInt64, _ a: UInt64, _ b: UInt64, _ carry: UInt64) -> (UInt64, UInt64) {
    let (high, low) = a.multipliedFullWidth(by: b)
    let (s1, o1) = low.addingReportingOverflow(acc)
    let (s2, o2) = s1.addingReportingOverflow(carry)
    return (s2, high &+ (o1 ? 1 : 0) &+ (o2 ? 1 : 0))
}

/// The 512-bit a·b as eight words, least significant first.
@inline(__always)
private func product(_ a: U256, _ b: U256) -> (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) {
    var c: UInt64
    var t0: UInt64, t1: UInt64, t2: UInt64, t3: UInt64, t4: UInt64, t5: UInt64, t6: UInt64, t7: UInt64
    (t0, c) = multiplyAdd(0, a.w0, b.w0, 0)
    (t1, c) = multiplyAdd(0, a.w0, b.w1, c)
    (t2, c) = multiplyAdd(0, a.w0, b.w2, c)
    (t3, t4) = multiplyAdd(0, a.w0, b.w3, c)
    (t1, c) = multiplyAdd(t1, a.w1, b.w0, 0)
    (t2, c) = multiplyAdd(t2, a.w1, b.w1, c)
    (t3, c) = multiplyAdd(t3, a.w1, b.w2, c)
    (t4, t5) = multiplyAdd(t4, a.w1, b.w3, c)
    (t2, c) = multiplyAdd(t2, a.w2, b.w0, 0)
    (t3, c) = multiplyAdd(t3, a.w2, b.w1, c)
    (t4, c) = multiplyAdd(t4, a.w2, b.w2, c)
    (t5, t6) = multiplyAdd(t5, a.w2, b.w3, c)
    (t3, c) = multiplyAdd(t3, a.w3, b.w0, 0)
    (t4, c) = multiplyAdd(t4, a.w3, b.w1, c)
    (t5, c) = multiplyAdd(t5, a.w3, b.w2, c)
    (t6, t7) = multiplyAdd(t6, a.w3, b.w3, c)
    return (t0, t1, t2, t3, t4, t5, t6, t7)
}

/// The 512-bit a² as eight words: the 6 cross products once, doubled, plus the 4 squares.
@inline(__always)
private func squared(_ a: U256) -> (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) {
    var c: UInt64
    var t1: UInt64, t2: UInt64, t3: UInt64, t4: UInt64, t5: UInt64, t6: UInt64
    (t1, c) = multiplyAdd(0, a.w0, a.w1, 0)
    (t2, c) = multiplyAdd(0, a.w0, a.w2, c)
    (t3, t4) = multiplyAdd(0, a.w0, a.w3, c)
    (t3, c) = multiplyAdd(t3, a.w1, a.w2, 0)
    (t4, t5) = multiplyAdd(t4, a.w1, a.w3, c)
    (t5, t6) = multiplyAdd(t5, a.w2, a.w3, 0)
    let t7 = t6 >> 63
    t6 = t6 << 1 | t5 >> 63
    t5 = t5 << 1 | t4 >> 63
    t4 = t4 << 1 | t3 >> 63
    t3 = t3 << 1 | t2 >> 63
    t2 = t2 << 1 | t1 >> 63
    t1 = t1 << 1
    let (h0, l0) = a.w0.multipliedFullWidth(by: a.w0)
    let (h1, l1) = a.w1.multipliedFullWidth(by: a.w1)
    let (h2, l2) = a.w2.multipliedFullWidth(by: a.w2)
    let (h3, l3) = a.w3.multipliedFullWidth(by: a.w3)
    var u7: UInt64
    (t1, c) = addCarry(t1, h0, 0)
    (t2, c) = addCarry(t2, l1, c)
    (t3, c) = addCarry(t3, h1, c)
    (t4, c) = addCarry(t4, l2, c)
    (t5, c) = addCarry(t5, h2, c)
    (t6, c) = addCarry(t6, l3, c)
    (u7, _) = addCarry(t7, h3, c)
    return (l0, t1, t2, t3, t4, t5, t6, u7)
}

// MARK: - Arithmetic modulo p

/// Arithmetic modulo P-256's prime p = 2^256 − 2^224 + 2^192 + 2^96 − 1 on values in [0, p), in
/// Montgomery form (R = 2^256). As p ≡ −1 (mod 2^64), −p⁻¹ mod 2^64 is 1: each word of reduction adds
/// the low word q times p + 1 = 2^256 − 2^224 + 2^192 + 2^96 (shifts and one multiplication by 2^64 − 2^32 + 1).
enum P256Field {
    /// The prime p.
    static var p: U256 { U256(w0: 0xFFFF_FFFF_FFFF_FFFF, w1: 0x0000_0000_FFFF_FFFF, w2: 0, w3: 0xFFFF_FFFF_0000_0001) }

    /// R² mod p, to enter Montgomery form.
    static var rSquared: U256 {
        U256(w0: 0x0000_0000_0000_0003, w1: 0xFFFF_FFFB_FFFF_FFFF, w2: 0xFFFF_FFFF_FFFF_FFFE, w3: 0x0000_0004_FFFF_FFFD)
    }

    /// R mod p: one in Montgomery form.
    static var one: U256 { U256(w0: 1, w1: 0xFFFF_FFFF_0000_0000, w2: 0xFFFF_FFFF_FFFF_FFFF, w3: 0x0000_0000_FFFF_FFFE) }

    /// x·R mod p, for x < p.
    @inline(__always)
    static func toMontgomery(_ x: U256) -> U256 { multiply(x, rSquared) }

    /// x·R⁻¹ mod p: leaves Montgomery form.
    @inline(__always)
    static func fromMontgomery(_ x: U256) -> U256 { reduce((x.w0, x.w1, x.w2, x.w3, 0, 0, 0, 0)) }

    @inline(__always)
    static func add(_ a: U256, _ b: U256) -> U256 {
        let (sum, carry) = a.adding(b)
        return subtractOnce(sum, carry: carry)
    }

    @inline(__always)
    static func subtract(_ a: U256, _ b: U256) -> U256 {
        let (difference, borrow) = a.subtracting(b)
        return borrow == 0 ? difference : difference.adding(p).sum
    }

    @inline(__always)
    static func negate(_ a: U256) -> U256 { a.isZero ? a : p.subtracting(a).difference }

    /// x − p when x (with `carry` as bit 256) is at least p; x must be below 2p.
    @inline(__always)
    private static func subtractOnce(_ x: U256, carry: UInt64) -> U256 {
        let (difference, borrow) = x.subtracting(p)
        return carry != 0 || borrow == 0 ? difference : x
    }

    /// One word of reduction: s ← (s + q·p) / 2^64 with q = s0, which is (s >> 64) + q·(p + 1) / 2^64
    /// = (s >> 64) + q·2^32 + q·(2^64 − 2^32 + 1)·2^128. For s < 2^256 the result is below 2^256.
    @inline(__always)
    private static func reduceWord(_ s0: inout UInt64, _ s1: inout UInt64, _ s2: inout UInt64, _ s3: inout UInt64) {
        let q = s0
        var c: UInt64
        (s0, c) = addCarry(s1, q << 32, 0)
        (s1, c) = addCarry(s2, q >> 32, c)
        (s2, s3) = multiplyAdd(s3, q, 0xFFFF_FFFF_0000_0001, c)
    }

    /// The Montgomery reduction of a 512-bit t below p·R: t·R⁻¹ mod p.
    @inline(__always)
    static func reduce(_ t: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)) -> U256 {
        var s0 = t.0, s1 = t.1, s2 = t.2, s3 = t.3
        reduceWord(&s0, &s1, &s2, &s3)
        reduceWord(&s0, &s1, &s2, &s3)
        reduceWord(&s0, &s1, &s2, &s3)
        reduceWord(&s0, &s1, &s2, &s3)
        var c: UInt64
        (s0, c) = addCarry(s0, t.4, 0)
        (s1, c) = addCarry(s1, t.5, c)
        (s2, c) = addCarry(s2, t.6, c)
        (s3, c) = addCarry(s3, t.7, c)
        return subtractOnce(U256(w0: s0, w1: s1, w2: s2, w3: s3), carry: c)
    }

    /// a·b·R⁻¹ mod p.
    @inline(__always)
    static func multiply(_ a: U256, _ b: U256) -> U256 { reduce(product(a, b)) }

    /// a²·R⁻¹ mod p.
    @inline(__always)
    static func square(_ a: U256) -> U256 { reduce(squared(a)) }

    /// x⁻¹ in Montgomery form (x in Montgomery form, not zero): x^(p − 2), with a fixed 4-bit window.
    static func inverse(_ x: U256) -> U256 {
        let exponent = p.subtracting(U256(w0: 2, w1: 0, w2: 0, w3: 0)).difference
        var powers = [U256](repeating: one, count: 16)
        for index in 1..<16 { powers[index] = multiply(powers[index - 1], x) }
        var result = one
        for nibble in stride(from: 63, through: 0, by: -1) {
            result = square(square(square(square(result))))
            let digit = Int(exponent[nibble / 16] >> (UInt64(nibble % 16) * 4) & 0xF)
            if digit != 0 { result = multiply(result, powers[digit]) }
        }
        return result
    }
}

// MARK: - Arithmetic modulo n

/// Arithmetic modulo an odd 256-bit modulus on values in [0, modulus), in Montgomery form (R = 2^256).
struct Montgomery256: Sendable {
    let modulus: U256
    /// −modulus⁻¹ mod 2^64.
    let k: UInt64
    /// R² mod modulus, to enter Montgomery form.
    let rSquared: U256

    /// x·R mod modulus, for x < modulus.
    @inline(__always)
    func toMontgomery(_ x: U256) -> U256 { multiply(x, rSquared) }

    /// x·R⁻¹ mod modulus: leaves Montgomery form.
    @inline(__always)
    func fromMontgomery(_ x: U256) -> U256 { multiply(x, .one) }

    /// R mod modulus: one in Montgomery form.
    var one: U256 { fromMontgomery(rSquared) }

    @inline(__always)
    func add(_ a: U256, _ b: U256) -> U256 {
        let (sum, carry) = a.adding(b)
        return subtractOnce(sum, carry: carry)
    }

    @inline(__always)
    func subtract(_ a: U256, _ b: U256) -> U256 {
        let (difference, borrow) = a.subtracting(b)
        return borrow == 0 ? difference : difference.adding(modulus).sum
    }

    @inline(__always)
    func negate(_ a: U256) -> U256 { a.isZero ? a : modulus.subtracting(a).difference }

    /// x − modulus when x (with `carry` as bit 256) is at least the modulus; x must be below 2·modulus.
    @inline(__always)
    private func subtractOnce(_ x: U256, carry: UInt64) -> U256 {
        let (difference, borrow) = x.subtracting(modulus)
        return carry != 0 || borrow == 0 ? difference : x
    }

    /// a·b·R⁻¹ mod modulus (CIOS: each row of the product is followed by one word of reduction).
    @inline(__always)
    func multiply(_ a: U256, _ b: U256) -> U256 {
        var t0: UInt64 = 0, t1: UInt64 = 0, t2: UInt64 = 0, t3: UInt64 = 0, t4: UInt64 = 0
        multiplyStep(a, b.w0, &t0, &t1, &t2, &t3, &t4)
        multiplyStep(a, b.w1, &t0, &t1, &t2, &t3, &t4)
        multiplyStep(a, b.w2, &t0, &t1, &t2, &t3, &t4)
        multiplyStep(a, b.w3, &t0, &t1, &t2, &t3, &t4)
        return subtractOnce(U256(w0: t0, w1: t1, w2: t2, w3: t3), carry: t4)
    }

    /// t ← (t + a·b + q·modulus) / 2^64 with q making the low word zero; t (t4 its top bit) stays below 2·modulus.
    @inline(__always)
    private func multiplyStep(_ a: U256, _ b: UInt64, _ t0: inout UInt64, _ t1: inout UInt64, _ t2: inout UInt64,
                              _ t3: inout UInt64, _ t4: inout UInt64) {
        var c: UInt64
        (t0, c) = multiplyAdd(t0, a.w0, b, 0)
        (t1, c) = multiplyAdd(t1, a.w1, b, c)
        (t2, c) = multiplyAdd(t2, a.w2, b, c)
        (t3, c) = multiplyAdd(t3, a.w3, b, c)
        let (sum4, top) = addCarry(t4, c, 0)
        let q = t0 &* k
        (_, c) = multiplyAdd(t0, q, modulus.w0, 0)
        (t0, c) = multiplyAdd(t1, q, modulus.w1, c)
        (t1, c) = multiplyAdd(t2, q, modulus.w2, c)
        (t2, c) = multiplyAdd(t3, q, modulus.w3, c)
        (t3, c) = addCarry(sum4, c, 0)
        t4 = top &+ c
    }

    /// x^exponent in Montgomery form (x in Montgomery form), with a fixed 4-bit window.
    func power(_ x: U256, _ exponent: U256) -> U256 {
        var powers = [U256](repeating: one, count: 16)
        for index in 1..<16 { powers[index] = multiply(powers[index - 1], x) }
        var result = one
        for nibble in stride(from: 63, through: 0, by: -1) {
            for _ in 0..<4 { result = multiply(result, result) }
            let digit = Int(exponent[nibble / 16] >> (UInt64(nibble % 16) * 4) & 0xF)
            if digit != 0 { result = multiply(result, powers[digit]) }
        }
        return result
    }

    /// x⁻¹ in Montgomery form (x in Montgomery form, not zero; the modulus is prime): x^(modulus − 2).
    func inverse(_ x: U256) -> U256 { power(x, modulus.subtracting(U256(w0: 2, w1: 0, w2: 0, w3: 0)).difference) }

    /// x⁻¹ for 0 < x < modulus (the modulus is an odd prime), in normal form, by the binary extended
    /// Euclidean algorithm: x1·x ≡ u and x2·x ≡ v (mod modulus) throughout. Variable time.
    func inverseVariableTime(_ x: U256) -> U256 {
        var u = x, v = modulus
        var x1 = U256.one, x2 = U256.zero
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
    private func halve(_ x: U256) -> U256 {
        guard x.w0 & 1 == 1 else { return x.halved(carry: 0) }
        let (sum, carry) = x.adding(modulus)
        return sum.halved(carry: carry)
    }
}

// MARK: - The curve

/// P-256's constants and its double-scalar multiplication.
enum P256Curve {
    /// The group order n.
    static var n: U256 {
        U256(w0: 0xF3B9_CAC2_FC63_2551, w1: 0xBCE6_FAAD_A717_9E84, w2: 0xFFFF_FFFF_FFFF_FFFF, w3: 0xFFFF_FFFF_0000_0000)
    }

    /// Arithmetic modulo n.
    static var order: Montgomery256 {
        Montgomery256(
            modulus: n, k: 0xCCD1_C8AA_EE00_BC4F,
            rSquared: U256(w0: 0x8324_4C95_BE79_EEA2, w1: 0x4699_799C_49BD_6FA6, w2: 0x2845_B239_2B6B_EC59, w3: 0x66E1_2D94_F3D9_5620))
    }

    /// The curve coefficient b, in Montgomery form (a = −3).
    static var b: U256 {
        U256(w0: 0xD89C_DF62_29C4_BDDF, w1: 0xACF0_05CD_7884_3090, w2: 0xE5A2_20AB_F721_2ED6, w3: 0xDC30_061D_0487_4834)
    }

    /// The generator G, in Montgomery form.
    static var generator: P256AffinePoint {
        P256AffinePoint(
            x: U256(w0: 0x79E7_30D4_18A9_143C, w1: 0x75BA_95FC_5FED_B601, w2: 0x79FB_732B_7762_2510, w3: 0x1890_5F76_A537_55C6),
            y: U256(w0: 0xDDF2_5357_CE95_560A, w1: 0x8B4A_B8E4_BA19_E45C, w2: 0xD2E8_8688_DD21_F325, w3: 0x8571_FF18_2588_5D85))
    }

    /// The comb table of G, made on first use.
    static let generatorTable: P256CombTable = P256CombTable(generator, width: P256CombTable.generatorWidth)!

    /// u1·G + u2·Q for scalars below 2^256, with `generatorTable` and `keyTable` the comb tables of G and Q.
    static func linearCombination(_ u1: U256, _ generatorTable: P256CombTable,
                                  _ u2: U256, _ keyTable: P256CombTable) -> P256JacobianPoint {
        // Without doublings the order of the additions does not matter: all of u1's, then all of u2's.
        var sum = P256JacobianPoint.infinity
        sum.add(u1, times: generatorTable)
        sum.add(u2, times: keyTable)
        return sum
    }

    /// The signed digits of `scalar` in windows of `width` bits, least significant first: each in
    /// [−2^(width − 1), 2^(width − 1)], Σ digit_i·2^(width·i) = scalar. (For tests; the comb recodes on the fly.)
    static func signedDigits(_ scalar: U256, width: Int, windows: Int) -> [Int] {
        var digits: [Int] = []
        var carry: UInt64 = 0
        for window in 0..<windows {
            let (digit, next) = P256CombTable.recode(scalar.bits(at: window * width, width: width), carry: carry, width: width)
            digits.append(digit)
            carry = next
        }
        return digits
    }
}

/// For a point B, the affine points (j + 1)·2^(w·i)·B for every window i < ⌈257/w⌉ and entry j < 2^(w − 1),
/// flat (index i·2^(w − 1) + j), so u·B is the sum of one ±entry per window of u's signed digits.
struct P256CombTable: Sendable {
    /// The window width of the generator's table, made once per process: 33 windows of 128 points.
    static let generatorWidth = 8
    /// The window width of a key's table, made once per key: 37 windows of 64 points.
    static let keyWidth = 7

    /// Windows per scalar for a width: enough for 257 bits (a scalar below 2^256 plus the last carry).
    static func windows(width: Int) -> Int { (257 + width - 1) / width }

    /// The window width w in bits.
    let width: Int
    /// The entries, window after window.
    let points: [P256AffinePoint]
    /// Windows per scalar.
    var windows: Int { Self.windows(width: width) }
    /// Entries per window: multiples 1 … 2^(w − 1) of the window's base.
    var entries: Int { 1 << (width - 1) }

    /// The table of `point` with windows of `width` bits (2…16); nil if a multiple is infinity (never
    /// for a point of order n).
    init?(_ point: P256AffinePoint, width: Int) {
        self.width = width
        let windows = Self.windows(width: width), entries = 1 << (width - 1)
        // The bases 2^(w·i)·B by doublings, made affine together, then their multiples by mixed additions.
        var bases = [P256JacobianPoint(point)]
        bases.reserveCapacity(windows)
        for _ in 1..<windows {
            var next = bases[bases.count - 1]
            for _ in 0..<width { next = next.doubled() }
            bases.append(next)
        }
        guard let affineBases = P256JacobianPoint.affine(bases) else { return nil }
        var multiples: [P256JacobianPoint] = []
        multiples.reserveCapacity(windows * entries)
        for base in affineBases {
            var multiple = P256JacobianPoint(base)
            multiples.append(multiple)
            for _ in 1..<entries {
                multiple = multiple.adding(base)
                multiples.append(multiple)
            }
        }
        guard let points = P256JacobianPoint.affine(multiples) else { return nil }
        self.points = points
    }

    /// The signed digit of a window's `bits` plus the `carry` from the window below, and the carry to the next.
    @inline(__always)
    static func recode(_ bits: UInt64, carry: UInt64, width: Int) -> (digit: Int, carry: UInt64) {
        let value = Int(bits &+ carry)
        return value > 1 << (width - 1) ? (value - 1 << width, 1) : (value, 0)
    }
}

/// A point in affine coordinates, Montgomery form; never the point at infinity.
struct P256AffinePoint: Hashable, Sendable {
    var x: U256
    var y: U256

    /// −(x, y) = (x, −y).
    var negated: P256AffinePoint { P256AffinePoint(x: x, y: P256Field.negate(y)) }

    /// y² = x³ − 3x + b.
    var isOnCurve: Bool {
        let f = P256Field.self
        let x3 = f.multiply(f.square(x), x)
        let threeX = f.add(f.add(x, x), x)
        return f.square(y) == f.add(f.subtract(x3, threeX), P256Curve.b)
    }
}

/// A point in Jacobian coordinates (X/Z², Y/Z³), Montgomery form; Z = 0 is the point at infinity.
struct P256JacobianPoint: Sendable {
    var x: U256
    var y: U256
    var z: U256

    static var infinity: P256JacobianPoint { P256JacobianPoint(x: P256Field.one, y: P256Field.one, z: .zero) }

    @inline(__always)
    init(x: U256, y: U256, z: U256) {
        self.x = x
        self.y = y
        self.z = z
    }

    @inline(__always)
    init(_ point: P256AffinePoint) { self.init(x: point.x, y: point.y, z: P256Field.one) }

    var isInfinity: Bool { z.isZero }

    /// Adds scalar·B, with `table` the comb table of B: one entry per window of the scalar's signed digits
    /// (recoded on the fly), negated for a negative digit.
    mutating func add(_ scalar: U256, times table: P256CombTable) {
        let width = table.width, entries = table.entries
        table.points.withUnsafeBufferPointer { points in
            var carry: UInt64 = 0
            for window in 0..<table.windows {
                let (digit, next) = P256CombTable.recode(scalar.bits(at: window * width, width: width), carry: carry, width: width)
                carry = next
                if digit > 0 {
                    self = adding(points[window * entries + digit - 1])
                } else if digit < 0 {
                    let entry = points[window * entries - digit - 1]
                    self = adding(P256AffinePoint(x: entry.x, y: P256Field.negate(entry.y)))
                }
            }
        }
    }

    /// 2·self (dbl-2001-b, a = −3: 3M + 5S).
    func doubled() -> P256JacobianPoint {
        // y = 0 would be a point of order 2, which P-256 (prime order) does not have.
        guard !isInfinity else { return self }
        let f = P256Field.self
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
        return P256JacobianPoint(x: x3, y: y3, z: z3)
    }

    /// self + an affine point (madd-2007-bl: 7M + 4S), handling infinity and doubling.
    @inline(__always)
    func adding(_ other: P256AffinePoint) -> P256JacobianPoint {
        guard !isInfinity else { return P256JacobianPoint(other) }
        let f = P256Field.self
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
        return P256JacobianPoint(x: x3, y: y3, z: z3)
    }

    /// The affine forms of `points` with one field inversion (Montgomery's trick); nil if one is infinity.
    static func affine(_ points: [P256JacobianPoint]) -> [P256AffinePoint]? {
        guard !points.contains(where: \.isInfinity) else { return nil }
        let f = P256Field.self
        var prefix = [U256]()  // prefix[i] = z0·…·zi
        prefix.reserveCapacity(points.count)
        for point in points { prefix.append(prefix.last.map { f.multiply($0, point.z) } ?? point.z) }
        var inverse = f.inverse(prefix[prefix.count - 1])  // (z0·…·zlast)⁻¹
        var result = [P256AffinePoint](repeating: P256AffinePoint(x: .zero, y: .zero), count: points.count)
        for index in stride(from: points.count - 1, through: 0, by: -1) {
            let zInverse = index > 0 ? f.multiply(inverse, prefix[index - 1]) : inverse
            inverse = f.multiply(inverse, points[index].z)
            let zInverse2 = f.square(zInverse)
            result[index] = P256AffinePoint(x: f.multiply(points[index].x, zInverse2),
                                            y: f.multiply(points[index].y, f.multiply(zInverse2, zInverse)))
        }
        return result
    }
}
