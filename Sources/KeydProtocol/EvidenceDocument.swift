/// The native TPM evidence document (PROTOCOL.md, "Native TPM evidence document"): what keyd
/// answers to `evidence.issue` and `tpm.evidence` with variant 1.
public struct NativeEvidenceDocument: Hashable, Sendable {
    /// ASCII `AEVD`.
    public static let magic: [UInt8] = [0x41, 0x45, 0x56, 0x44]
    /// The only format version.
    public static let formatVersion: UInt16 = 1
    /// The label that starts the qualifying-data input.
    public static let qualifyingDataLabel = Array("asterism-tpm-evidence-v1".utf8)
    /// TPM_ALG_ID of SHA-256, the only PCR bank keyd quotes.
    public static let sha256Bank: UInt16 = 0x000B
    /// Longest TPM structure field.
    public static let maxTPMField = 1024

    /// The AK's TPMT_PUBLIC.
    public var akPublic: [UInt8]
    /// TPMS_ATTEST as signed.
    public var attest: [UInt8]
    /// TPMT_SIGNATURE.
    public var signature: [UInt8]
    /// PCR values by index, ascending: exactly the quoted selection.
    public var pcrs: [(index: UInt8, value: [UInt8])]
    /// The user-data digest the quote binds.
    public var userDataDigest: [UInt8]
    /// The firmware event log; empty when none.
    public var eventLog: [UInt8]

    /// Makes a document.
    public init(
        akPublic: [UInt8],
        attest: [UInt8],
        signature: [UInt8],
        pcrs: [(index: UInt8, value: [UInt8])],
        userDataDigest: [UInt8],
        eventLog: [UInt8]
    ) {
        self.akPublic = akPublic
        self.attest = attest
        self.signature = signature
        self.pcrs = pcrs
        self.userDataDigest = userDataDigest
        self.eventLog = eventLog
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.akPublic == rhs.akPublic && lhs.attest == rhs.attest && lhs.signature == rhs.signature
            && lhs.pcrs.map(\.index) == rhs.pcrs.map(\.index) && lhs.pcrs.map(\.value) == rhs.pcrs.map(\.value)
            && lhs.userDataDigest == rhs.userDataDigest && lhs.eventLog == rhs.eventLog
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(attest)
        hasher.combine(signature)
    }

    /// The encoded document.
    public var encoded: [UInt8] {
        precondition(pcrs.count <= 24 && userDataDigest.count == 32, "document fields out of range")
        var w = WireWriter(capacity: 2048 + eventLog.count)
        w.fixed(Self.magic, count: 4)
        w.u16(Self.formatVersion)
        w.bytes(akPublic, max: Self.maxTPMField)
        w.bytes(attest, max: Self.maxTPMField)
        w.bytes(signature, max: Self.maxTPMField)
        w.u16(Self.sha256Bank)
        w.u8(UInt8(pcrs.count))
        for pcr in pcrs {
            w.u8(pcr.index)
            w.fixed(pcr.value, count: 32)
        }
        w.fixed(userDataDigest, count: 32)
        w.blob32(eventLog, max: Limits.maxEventLog)
        return w.bytes
    }

    /// Decodes a document, strictly: magic, version, bounds, ascending PCR indices below 24, no trailing bytes.
    public init(decoding bytes: [UInt8]) throws(ProtocolError) {
        guard bytes.count <= Limits.maxEvidenceDocument else {
            throw .fieldLength(field: "document", length: bytes.count, bounds: 0...Limits.maxEvidenceDocument)
        }
        let result: Result<NativeEvidenceDocument, ProtocolError> = bytes.withUnsafeBytes { raw in
            do throws(ProtocolError) { return .success(try Self.decode(raw)) } catch { return .failure(error) }
        }
        self = try result.get()
    }

    private static func decode(_ raw: UnsafeRawBufferPointer) throws(ProtocolError) -> NativeEvidenceDocument {
        var r = WireReader(raw)
        guard try r.fixed(4, "magic") == Self.magic else { throw .badValue(field: "magic", "not AEVD") }
        let version = try r.u16("formatVersion")
        guard version == Self.formatVersion else { throw .badValue(field: "formatVersion", "\(version) is not 1") }
        let akPublic = try r.bytes(max: Self.maxTPMField, "akPublic")
        let attest = try r.bytes(max: Self.maxTPMField, "attest")
        let signature = try r.bytes(max: Self.maxTPMField, "signature")
        let bank = try r.u16("pcrBank")
        guard bank == Self.sha256Bank else {
            throw .badValue(field: "pcrBank", "0x\(String(bank, radix: 16)) is not SHA-256")
        }
        let count = try r.u8("pcrCount")
        guard count <= 24 else { throw .badValue(field: "pcrCount", "\(count) exceeds 24") }
        var pcrs: [(index: UInt8, value: [UInt8])] = []
        for _ in 0..<count {
            let index = try r.u8("pcrs.index")
            guard index < 24, pcrs.last.map({ $0.index < index }) ?? true else {
                throw .badValue(field: "pcrs.index", "\(index) is not ascending or not below 24")
            }
            pcrs.append((index, try r.fixed(32, "pcrs.value")))
        }
        let userDataDigest = try r.fixed(32, "userDataDigest")
        let eventLog = try r.blob32(max: Limits.maxEventLog, "eventLog")
        try r.finish("native evidence document")
        return NativeEvidenceDocument(
            akPublic: akPublic,
            attest: attest,
            signature: signature,
            pcrs: pcrs,
            userDataDigest: userDataDigest,
            eventLog: eventLog
        )
    }
}
