import FoundationEssentials

/// An AMD SEV-SNP TCB_VERSION, decoded for its product (Turin adds an FMC field and moves the others).
public struct SNPTCB: Hashable, Sendable, CustomStringConvertible {
    /// The raw 64-bit value as the report holds it (little-endian).
    public let raw: UInt64
    public let product: SNPProduct

    public init(raw: UInt64, product: SNPProduct) {
        self.raw = raw
        self.product = product
    }

    /// Makes a TCB from its parts, for minimum-TCB policies.
    public init(bootloader: UInt8, tee: UInt8, snp: UInt8, microcode: UInt8, fmc: UInt8 = 0, product: SNPProduct) {
        var bytes = [UInt8](repeating: 0, count: 8)
        switch product {
        case .milan, .genoa:
            bytes[0] = bootloader
            bytes[1] = tee
            bytes[6] = snp
            bytes[7] = microcode
        case .turin:
            bytes[0] = fmc
            bytes[1] = bootloader
            bytes[2] = tee
            bytes[3] = snp
            bytes[7] = microcode
        }
        self.raw = bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) }
        self.product = product
    }

    private func byte(_ index: Int) -> UInt8 { UInt8(truncatingIfNeeded: raw >> (8 * index)) }

    public var bootloader: UInt8 { product == .turin ? byte(1) : byte(0) }
    public var tee: UInt8 { product == .turin ? byte(2) : byte(1) }
    public var snp: UInt8 { product == .turin ? byte(3) : byte(6) }
    public var microcode: UInt8 { byte(7) }
    /// Turin's FMC SPL; 0 on earlier products.
    public var fmc: UInt8 { product == .turin ? byte(0) : 0 }

    /// The components in a stable order, with their names.
    public var components: [(String, UInt8)] {
        var parts = [("bootloader", bootloader), ("tee", tee), ("snp", snp), ("microcode", microcode)]
        if product == .turin { parts.insert(("fmc", fmc), at: 0) }
        return parts
    }

    /// True when every component is at least `minimum`'s.
    public func meets(_ minimum: SNPTCB) -> Bool {
        bootloader >= minimum.bootloader && tee >= minimum.tee && snp >= minimum.snp && microcode >= minimum.microcode
            && fmc >= minimum.fmc
    }

    public var description: String { components.map { "\($0.0)=\($0.1)" }.joined(separator: " ") }
}

/// The AMD EPYC generations whose roots Attestation knows.
public enum SNPProduct: String, Hashable, Sendable, CaseIterable {
    case milan = "Milan"
    case genoa = "Genoa"
    case turin = "Turin"

    /// The product of a VCEK's productName extension ("Milan-B0", "Genoa", "Turin-...").
    init?(productName: String) {
        guard let match = Self.allCases.first(where: { productName.hasPrefix($0.rawValue) }) else { return nil }
        self = match
    }

    /// The product from CPUID family and model (report version 3 and later).
    init?(family: UInt8, model: UInt8) {
        switch (family, model) {
        case (0x19, 0x00...0x0F): self = .milan
        case (0x19, 0x10...0x1F), (0x19, 0xA0...0xAF): self = .genoa
        case (0x1A, 0x00...0x11): self = .turin
        default: return nil
        }
    }
}

/// A parsed SEV-SNP ATTESTATION_REPORT (1184 bytes; versions 2, 3 and later).
public struct SNPReport: Hashable, Sendable {
    public static let size = 1184
    /// Bytes covered by the signature.
    public static let signedSize = 0x2A0

    public let bytes: [UInt8]
    public let version: UInt32
    public let guestSVN: UInt32
    /// The guest policy.
    public let policy: UInt64
    public let familyID: [UInt8]
    public let imageID: [UInt8]
    public let vmpl: UInt32
    public let signatureAlgorithm: UInt32
    public let currentTCBRaw: UInt64
    public let platformInfo: UInt64
    /// AUTHOR_KEY_EN, MASK_CHIP_KEY and SIGNING_KEY bits.
    public let keyInfo: UInt32
    public let reportData: [UInt8]
    public let measurement: [UInt8]
    public let hostData: [UInt8]
    public let idKeyDigest: [UInt8]
    public let authorKeyDigest: [UInt8]
    public let reportID: [UInt8]
    public let reportIDMA: [UInt8]
    public let reportedTCBRaw: UInt64
    /// CPUID family, model and stepping (version 3 and later; zero before).
    public let cpuidFamily: UInt8
    public let cpuidModel: UInt8
    public let cpuidStepping: UInt8
    public let chipID: [UInt8]
    public let committedTCBRaw: UInt64
    public let launchTCBRaw: UInt64
    /// ECDSA P-384 signature as big-endian r || s (48 bytes each).
    public let signatureRS: [UInt8]

    /// Guest policy bit 19: debugging allowed.
    public var debugAllowed: Bool { policy & (1 << 19) != 0 }
    /// SIGNING_KEY: 0 VCEK, 1 VLEK, 7 none.
    public var signingKey: UInt32 { (keyInfo >> 2) & 0x7 }
    /// MASK_CHIP_ID: the chip ID is zeroed.
    public var chipIDMasked: Bool { keyInfo & 0x2 != 0 }

    /// Parses exactly 1184 bytes.
    public init(bytes input: some Collection<UInt8>) throws(AttestationError) {
        let all = Array(input)
        guard all.count == Self.size else {
            if all.count > Self.size { throw .trailingBytes("SEV-SNP report", count: all.count - Self.size) }
            throw .truncated("SEV-SNP report", needed: Self.size, available: all.count)
        }
        var reader = ByteReader(all[...], what: "SEV-SNP report")
        bytes = all
        version = try reader.readLE(UInt32.self, "version")
        guard version >= 2 else { throw .unsupported("SEV-SNP report version", String(version)) }
        guestSVN = try reader.readLE(UInt32.self, "guest_svn")
        policy = try reader.readLE(UInt64.self, "policy")
        familyID = Array(try reader.read(16, "family_id"))
        imageID = Array(try reader.read(16, "image_id"))
        vmpl = try reader.readLE(UInt32.self, "vmpl")
        signatureAlgorithm = try reader.readLE(UInt32.self, "signature_algo")
        currentTCBRaw = try reader.readLE(UInt64.self, "current_tcb")
        platformInfo = try reader.readLE(UInt64.self, "platform_info")
        keyInfo = try reader.readLE(UInt32.self, "key_info")
        _ = try reader.read(4, "reserved0")
        reportData = Array(try reader.read(64, "report_data"))
        measurement = Array(try reader.read(48, "measurement"))
        hostData = Array(try reader.read(32, "host_data"))
        idKeyDigest = Array(try reader.read(48, "id_key_digest"))
        authorKeyDigest = Array(try reader.read(48, "author_key_digest"))
        reportID = Array(try reader.read(32, "report_id"))
        reportIDMA = Array(try reader.read(32, "report_id_ma"))
        reportedTCBRaw = try reader.readLE(UInt64.self, "reported_tcb")
        let cpuid = try reader.read(3, "cpuid")
        if version >= 3 {
            (cpuidFamily, cpuidModel, cpuidStepping) = (
                cpuid[cpuid.startIndex], cpuid[cpuid.startIndex + 1], cpuid[cpuid.startIndex + 2]
            )
        } else {
            (cpuidFamily, cpuidModel, cpuidStepping) = (0, 0, 0)
        }
        _ = try reader.read(0x1A0 - 0x18B, "reserved1")
        chipID = Array(try reader.read(64, "chip_id"))
        committedTCBRaw = try reader.readLE(UInt64.self, "committed_tcb")
        _ = try reader.read(8, "current and committed versions")
        launchTCBRaw = try reader.readLE(UInt64.self, "launch_tcb")
        _ = try reader.read(Self.signedSize - reader.offset, "reserved2")
        // r and s are 72-byte little-endian fields; P-384 values fit the low 48 bytes.
        let r = try reader.read(72, "signature.r")
        let s = try reader.read(72, "signature.s")
        guard r.suffix(24).allSatisfy({ $0 == 0 }), s.suffix(24).allSatisfy({ $0 == 0 }) else {
            throw .invalidValue("SEV-SNP report signature", "r or s exceeds 48 bytes")
        }
        signatureRS = Array(r.prefix(48).reversed()) + Array(s.prefix(48).reversed())
        _ = try reader.read(Self.size - reader.offset, "signature.reserved")
        try reader.finish()
    }

    /// The bytes covered by the signature.
    public var signedBytes: ArraySlice<UInt8> { bytes[0..<Self.signedSize] }

    public func reportedTCB(_ product: SNPProduct) -> SNPTCB { SNPTCB(raw: reportedTCBRaw, product: product) }
    public func currentTCB(_ product: SNPProduct) -> SNPTCB { SNPTCB(raw: currentTCBRaw, product: product) }
    public func committedTCB(_ product: SNPProduct) -> SNPTCB { SNPTCB(raw: committedTCBRaw, product: product) }

    /// The product from CPUID (version 3 and later), nil otherwise.
    public var cpuidProduct: SNPProduct? { version >= 3 ? SNPProduct(family: cpuidFamily, model: cpuidModel) : nil }
}
