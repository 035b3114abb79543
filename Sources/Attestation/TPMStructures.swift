import Crypto
import FoundationEssentials

/// A TPM_ALG_ID.
public struct TPMAlgorithm: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let rsa = Self(rawValue: 0x0001)
    public static let sha1 = Self(rawValue: 0x0004)
    public static let hmac = Self(rawValue: 0x0005)
    public static let aes = Self(rawValue: 0x0006)
    public static let keyedHash = Self(rawValue: 0x0008)
    public static let sha256 = Self(rawValue: 0x000B)
    public static let sha384 = Self(rawValue: 0x000C)
    public static let sha512 = Self(rawValue: 0x000D)
    public static let null = Self(rawValue: 0x0010)
    public static let rsassa = Self(rawValue: 0x0014)
    public static let rsapss = Self(rawValue: 0x0016)
    public static let ecdsa = Self(rawValue: 0x0018)
    public static let ecdaa = Self(rawValue: 0x001A)
    public static let ecc = Self(rawValue: 0x0023)
    public static let symCipher = Self(rawValue: 0x0025)

    public var description: String {
        switch self {
        case .rsa: "rsa"
        case .sha1: "sha1"
        case .sha256: "sha256"
        case .sha384: "sha384"
        case .sha512: "sha512"
        case .null: "null"
        case .rsassa: "rsassa"
        case .rsapss: "rsapss"
        case .ecdsa: "ecdsa"
        case .ecc: "ecc"
        default: "0x" + hexString([UInt8(rawValue >> 8), UInt8(rawValue & 0xFF)])
        }
    }

    /// Digest size of a hash algorithm, nil for anything else.
    public var digestSize: Int? {
        switch self {
        case .sha1: 20
        case .sha256: 32
        case .sha384: 48
        case .sha512: 64
        default: nil
        }
    }

    /// Hashes `data` with this algorithm; nil when it is not a supported hash.
    func hash<D: DataProtocol>(_ data: D) -> [UInt8]? {
        switch self {
        case .sha1: Insecure.SHA1.hash(data: data).withUnsafeBytes { Array($0) }
        case .sha256: SHA256.hash(data: data).withUnsafeBytes { Array($0) }
        case .sha384: SHA384.hash(data: data).withUnsafeBytes { Array($0) }
        case .sha512: SHA512.hash(data: data).withUnsafeBytes { Array($0) }
        default: nil
        }
    }
}

/// Limits from the TPM 2.0 reference implementation's marshaling code.
enum TPMLimits {
    /// TPM2B_NAME: a hash algorithm id plus the largest digest.
    static let name = 2 + 64
    /// TPM2B_DATA / TPM2B_DIGEST: the largest digest.
    static let digest = 64
    /// TPM2B_DATA (extraData) as the reference implementation sizes it.
    static let data = 64
    /// TPM2B_PUBLIC_KEY_RSA and RSA signatures: 4096-bit keys.
    static let rsaKeyBytes = 512
    /// TPM2B_ECC_PARAMETER: P-521 coordinates.
    static let eccParameter = 66
    /// TPML_PCR_SELECTION count (HASH_COUNT in practice).
    static let pcrBanks = 16
    /// sizeofSelect of a TPMS_PCR_SELECTION.
    static let pcrSelectBytes = 4
    /// A marshaled TPMT_PUBLIC or TPMS_ATTEST, generously.
    static let structure = 4096
}

// MARK: - TPMS_ATTEST

/// One bank's PCR selection (TPMS_PCR_SELECTION).
public struct TPMPCRSelection: Hashable, Sendable {
    /// The bank's hash algorithm.
    public let hash: TPMAlgorithm
    /// The selection as a bit mask (bit i for PCR i; a selection is at most 4 bytes, so indices are below 32).
    let mask: UInt32

    /// Selected PCR indices, ascending.
    public var indices: [Int] {
        var indices: [Int] = []
        indices.reserveCapacity(mask.nonzeroBitCount)
        for index in 0..<32 where mask & (1 << UInt32(index)) != 0 { indices.append(index) }
        return indices
    }
}

/// TPMS_CLOCK_INFO.
public struct TPMClockInfo: Hashable, Sendable {
    public let clock: UInt64
    public let resetCount: UInt32
    public let restartCount: UInt32
    public let safe: Bool
}

/// A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE, with the exact bytes it was parsed from.
public struct TPMSAttest: Hashable, Sendable {
    /// TPM_GENERATED_VALUE, the value every TPM-made structure starts with.
    public static let generatedMagic: UInt32 = 0xFF54_4347
    /// TPM_ST_ATTEST_QUOTE.
    public static let quoteType: UInt16 = 0x8018

    /// The bytes as signed.
    public let bytes: [UInt8]
    public let magic: UInt32
    public let type: UInt16
    public let clockInfo: TPMClockInfo
    public let firmwareVersion: UInt64
    /// The quoted PCR selection (TPMS_QUOTE_INFO.pcrSelect).
    public let pcrSelection: [TPMPCRSelection]
    // The variable-length fields are ranges of `bytes`: parsing copies nothing but `bytes` itself.
    private let qualifiedSignerRange: Range<Int>
    private let extraDataRange: Range<Int>
    private let pcrDigestRange: Range<Int>

    /// Name of the signing key (nameAlg || digest of its TPMT_PUBLIC).
    public var qualifiedSigner: [UInt8] { Array(bytes[qualifiedSignerRange]) }
    /// The caller's qualifying data.
    public var extraData: [UInt8] { Array(bytes[extraDataRange]) }
    /// The TPM's digest of the selected PCR values (TPMS_QUOTE_INFO.pcrDigest).
    public var pcrDigest: [UInt8] { Array(bytes[pcrDigestRange]) }
    /// ``extraData`` without a copy.
    var extraDataSlice: ArraySlice<UInt8> { bytes[extraDataRange] }
    /// ``pcrDigest`` without a copy.
    var pcrDigestSlice: ArraySlice<UInt8> { bytes[pcrDigestRange] }

    /// Parses a TPMS_ATTEST (the contents of a TPM2B_ATTEST), read to its exact end.
    public init(bytes input: some Collection<UInt8>) throws(AttestationError) {
        let all = Array(input)
        guard all.count <= TPMLimits.structure else {
            throw .lengthExceeded("TPMS_ATTEST", length: all.count, limit: TPMLimits.structure)
        }
        var reader = ByteReader(all[...], what: "TPMS_ATTEST")
        bytes = all
        magic = try reader.u32("magic")
        type = try reader.u16("type")
        guard type == Self.quoteType else {
            throw .unsupported(
                "TPMS_ATTEST type",
                "0x" + String(type, radix: 16) + " (only TPM_ST_ATTEST_QUOTE 0x8018)"
            )
        }
        qualifiedSignerRange = try reader.tpm2bRange("qualifiedSigner", limit: TPMLimits.name)
        extraDataRange = try reader.tpm2bRange("extraData", limit: TPMLimits.data)
        let clock = try reader.u64("clockInfo.clock")
        let resetCount = try reader.u32("clockInfo.resetCount")
        let restartCount = try reader.u32("clockInfo.restartCount")
        let safe = try reader.u8("clockInfo.safe")
        guard safe <= 1 else { throw .invalidValue("TPMS_ATTEST.clockInfo.safe", "\(safe) is not a TPMI_YES_NO") }
        clockInfo = TPMClockInfo(clock: clock, resetCount: resetCount, restartCount: restartCount, safe: safe == 1)
        firmwareVersion = try reader.u64("firmwareVersion")
        pcrSelection = try Self.readSelection(&reader)
        pcrDigestRange = try reader.tpm2bRange("quote.pcrDigest", limit: TPMLimits.digest)
        try reader.finish()
    }

    static func readSelection(_ reader: inout ByteReader) throws(AttestationError) -> [TPMPCRSelection] {
        let count = Int(try reader.u32("pcrSelect.count"))
        guard count <= TPMLimits.pcrBanks else {
            throw .lengthExceeded("\(reader.what).pcrSelect.count", length: count, limit: TPMLimits.pcrBanks)
        }
        var banks: [TPMPCRSelection] = []
        for bank in 0..<count {
            let hash = TPMAlgorithm(rawValue: try reader.u16("pcrSelections[\(bank)].hash"))
            let size = Int(try reader.u8("pcrSelections[\(bank)].sizeofSelect"))
            guard size <= TPMLimits.pcrSelectBytes else {
                throw .lengthExceeded(
                    "\(reader.what).pcrSelections[\(bank)].sizeofSelect",
                    length: size,
                    limit: TPMLimits.pcrSelectBytes
                )
            }
            let select = try reader.read(size, "pcrSelections[\(bank)].pcrSelect")
            var mask: UInt32 = 0
            for (byteIndex, byte) in select.enumerated() { mask |= UInt32(byte) << UInt32(8 * byteIndex) }
            banks.append(TPMPCRSelection(hash: hash, mask: mask))
        }
        return banks
    }
}

// MARK: - TPMT_SIGNATURE

/// A parsed TPMT_SIGNATURE: ECDSA, RSASSA-PKCS1-v1_5 or RSASSA-PSS.
public enum TPMTSignature: Hashable, Sendable {
    case ecdsa(hash: TPMAlgorithm, r: [UInt8], s: [UInt8])
    case rsassa(hash: TPMAlgorithm, signature: [UInt8])
    case rsapss(hash: TPMAlgorithm, signature: [UInt8])

    /// The hash algorithm the signer used over the signed bytes.
    public var hash: TPMAlgorithm {
        switch self {
        case .ecdsa(let hash, _, _), .rsassa(let hash, _), .rsapss(let hash, _): hash
        }
    }

    /// The signature scheme.
    public var scheme: TPMAlgorithm {
        switch self {
        case .ecdsa: .ecdsa
        case .rsassa: .rsassa
        case .rsapss: .rsapss
        }
    }

    /// Parses a marshaled TPMT_SIGNATURE, read to its exact end.
    public init(bytes input: some Collection<UInt8>) throws(AttestationError) {
        try self.init(slice: Array(input)[...])
    }

    /// Parses a marshaled TPMT_SIGNATURE held in a slice, without copying it first.
    init(slice: ArraySlice<UInt8>) throws(AttestationError) {
        var reader = ByteReader(slice, what: "TPMT_SIGNATURE")
        let algorithm = TPMAlgorithm(rawValue: try reader.u16("sigAlg"))
        switch algorithm {
        case .ecdsa:
            let hash = TPMAlgorithm(rawValue: try reader.u16("hash"))
            let r = try reader.tpm2b("signatureR", limit: TPMLimits.eccParameter)
            let s = try reader.tpm2b("signatureS", limit: TPMLimits.eccParameter)
            self = .ecdsa(hash: hash, r: r, s: s)
        case .rsassa, .rsapss:
            let hash = TPMAlgorithm(rawValue: try reader.u16("hash"))
            let signature = try reader.tpm2b("sig", limit: TPMLimits.rsaKeyBytes)
            self =
                algorithm == .rsassa
                ? .rsassa(hash: hash, signature: signature) : .rsapss(hash: hash, signature: signature)
        default:
            throw .unsupported("TPMT_SIGNATURE.sigAlg", algorithm.description)
        }
        try reader.finish()
    }
}

// MARK: - TPMT_PUBLIC

/// A TPM ECC curve (TPM_ECC_CURVE) this module verifies with.
public enum TPMECCCurve: UInt16, Hashable, Sendable {
    case nistP256 = 0x0003
    case nistP384 = 0x0004

    var coordinateSize: Int { self == .nistP256 ? 32 : 48 }
}

/// The public key of a TPMT_PUBLIC.
public enum TPMPublicKey: Hashable, Sendable {
    case ecc(curve: TPMECCCurve, x: [UInt8], y: [UInt8])
    case rsa(modulus: [UInt8], exponent: UInt32)
}

/// A parsed TPMT_PUBLIC (ECC or RSA signing key), with the exact bytes it was parsed from.
public struct TPMTPublic: Hashable, Sendable {
    /// The marshaled TPMT_PUBLIC (without a TPM2B size).
    public let bytes: [UInt8]
    public let type: TPMAlgorithm
    public let nameAlgorithm: TPMAlgorithm
    public let objectAttributes: UInt32
    public let authPolicy: [UInt8]
    /// The key's signing scheme, `.null` when the key leaves it to the caller.
    public let scheme: TPMAlgorithm
    /// The scheme's hash, `.null` with a null scheme.
    public let schemeHash: TPMAlgorithm
    public let key: TPMPublicKey

    /// TPMA_OBJECT.sign.
    public static let attributeSign: UInt32 = 1 << 18
    /// TPMA_OBJECT.restricted.
    public static let attributeRestricted: UInt32 = 1 << 16
    /// TPMA_OBJECT.fixedTPM.
    public static let attributeFixedTPM: UInt32 = 1 << 1

    /// Parses a TPMT_PUBLIC, or a TPM2B_PUBLIC when `sized` is true; read to the exact end.
    public init(bytes input: some Collection<UInt8>, sized: Bool = false) throws(AttestationError) {
        var all = Array(input)
        guard all.count <= TPMLimits.structure else {
            throw .lengthExceeded("TPMT_PUBLIC", length: all.count, limit: TPMLimits.structure)
        }
        if sized {
            var outer = ByteReader(all[...], what: "TPM2B_PUBLIC")
            all = outer.bytes.count >= 2 ? try outer.tpm2b("publicArea", limit: TPMLimits.structure) : []
            if all.isEmpty { throw .truncated("TPM2B_PUBLIC.publicArea", needed: 2, available: outer.remaining) }
            try outer.finish()
        }
        var reader = ByteReader(all[...], what: "TPMT_PUBLIC")
        bytes = all
        type = TPMAlgorithm(rawValue: try reader.u16("type"))
        nameAlgorithm = TPMAlgorithm(rawValue: try reader.u16("nameAlg"))
        objectAttributes = try reader.u32("objectAttributes")
        authPolicy = try reader.tpm2b("authPolicy", limit: TPMLimits.digest)
        // TPMT_SYM_DEF_OBJECT: a signing key has none, but the field is there.
        let symmetric = TPMAlgorithm(rawValue: try reader.u16("parameters.symmetric.algorithm"))
        if symmetric != .null {
            _ = try reader.u16("parameters.symmetric.keyBits")
            _ = try reader.u16("parameters.symmetric.mode")
        }
        switch type {
        case .rsa:
            scheme = TPMAlgorithm(rawValue: try reader.u16("parameters.scheme"))
            schemeHash = scheme == .null ? .null : TPMAlgorithm(rawValue: try reader.u16("parameters.scheme.hashAlg"))
            let keyBits = try reader.u16("parameters.keyBits")
            let exponent = try reader.u32("parameters.exponent")
            let modulus = try reader.tpm2b("unique.rsa", limit: TPMLimits.rsaKeyBytes)
            guard modulus.count * 8 == Int(keyBits) else {
                throw .invalidValue("TPMT_PUBLIC.unique.rsa", "\(modulus.count) bytes for keyBits \(keyBits)")
            }
            key = .rsa(modulus: modulus, exponent: exponent == 0 ? 65537 : exponent)
        case .ecc:
            scheme = TPMAlgorithm(rawValue: try reader.u16("parameters.scheme"))
            schemeHash = scheme == .null ? .null : TPMAlgorithm(rawValue: try reader.u16("parameters.scheme.hashAlg"))
            if scheme == .ecdaa { _ = try reader.u16("parameters.scheme.count") }
            let curveID = try reader.u16("parameters.curveID")
            let kdf = TPMAlgorithm(rawValue: try reader.u16("parameters.kdf.scheme"))
            if kdf != .null { _ = try reader.u16("parameters.kdf.hashAlg") }
            let x = try reader.tpm2b("unique.ecc.x", limit: TPMLimits.eccParameter)
            let y = try reader.tpm2b("unique.ecc.y", limit: TPMLimits.eccParameter)
            guard let curve = TPMECCCurve(rawValue: curveID) else {
                throw .unsupported("TPMT_PUBLIC.parameters.curveID", "0x" + String(curveID, radix: 16))
            }
            guard x.count <= curve.coordinateSize, y.count <= curve.coordinateSize else {
                throw .invalidValue(
                    "TPMT_PUBLIC.unique.ecc",
                    "coordinates of \(x.count) and \(y.count) bytes for \(curve)"
                )
            }
            key = .ecc(curve: curve, x: x, y: y)
        default:
            throw .unsupported("TPMT_PUBLIC.type", type.description)
        }
        try reader.finish()
    }

    /// Parses either a TPMT_PUBLIC or a TPM2B_PUBLIC, telling them apart by the leading size.
    public init(anyEncoding input: some Collection<UInt8>) throws(AttestationError) {
        let all = Array(input)
        if all.count >= 2, Int(all[0]) << 8 | Int(all[1]) == all.count - 2 {
            try self.init(bytes: all, sized: true)
        } else {
            try self.init(bytes: all)
        }
    }

    /// The TPM Name of this key: nameAlg || H_nameAlg(TPMT_PUBLIC).
    public var name: [UInt8]? {
        guard let digest = nameAlgorithm.hash(bytes) else { return nil }
        return [UInt8(nameAlgorithm.rawValue >> 8), UInt8(nameAlgorithm.rawValue & 0xFF)] + digest
    }
}
