import Crypto
import FoundationEssentials

/// keyd's native TPM evidence document (evidence variant 1, `Sources/KeydProtocol/PROTOCOL.md`).
public struct NativeTPMEvidenceDocument: Hashable, Sendable {
    public static let magic: [UInt8] = Array("AEVD".utf8)
    public static let formatVersion: UInt16 = 1
    /// The label hashed in front of nonce and user data to make the quote's qualifying data.
    public static let qualifyingLabel: [UInt8] = Array("asterism-tpm-evidence-v1".utf8)
    /// Limit of the akPublic, attest and signature fields.
    public static let maxStructure = 1024
    /// Limit of the eventLog field.
    public static let maxEventLog = 196_608

    /// The AK's TPMT_PUBLIC, marshaled.
    public let akPublic: [UInt8]
    /// TPMS_ATTEST exactly as signed.
    public let attest: [UInt8]
    /// TPMT_SIGNATURE, marshaled.
    public let signature: [UInt8]
    /// The PCR bank (SHA-256 only in version 1).
    public let pcrBank: TPMAlgorithm
    /// PCR values by index (exactly the quoted selection).
    public let pcrs: [Int: [UInt8]]
    /// The user data digest the quote is bound to.
    public let userDataDigest: [UInt8]
    /// The firmware event log, empty when the node has none.
    public let eventLog: [UInt8]

    public init(
        akPublic: [UInt8],
        attest: [UInt8],
        signature: [UInt8],
        pcrBank: TPMAlgorithm = .sha256,
        pcrs: [Int: [UInt8]],
        userDataDigest: [UInt8],
        eventLog: [UInt8] = []
    ) {
        self.akPublic = akPublic
        self.attest = attest
        self.signature = signature
        self.pcrBank = pcrBank
        self.pcrs = pcrs
        self.userDataDigest = userDataDigest
        self.eventLog = eventLog
    }

    /// Parses a document, read to its exact end.
    public init(bytes input: some Collection<UInt8>) throws(AttestationError) {
        let fields = try Self.read(Array(input))
        akPublic = Array(fields.akPublic)
        attest = Array(fields.attest)
        signature = Array(fields.signature)
        pcrBank = fields.pcrBank
        pcrs =
            ReportedPCRs.flat(bank: fields.pcrBank, mask: fields.pcrMask, size: 32, values: fields.pcrValues).banks[
                fields.pcrBank
            ] ?? [:]
        userDataDigest = Array(fields.userDataDigest)
        eventLog = Array(fields.eventLog)
    }

    /// A document's fields as read: slices of its bytes, the PCR values in one flat array.
    struct Fields {
        let akPublic: ArraySlice<UInt8>
        let attest: ArraySlice<UInt8>
        let signature: ArraySlice<UInt8>
        let pcrBank: TPMAlgorithm
        /// Bit i set when PCR i is present.
        let pcrMask: UInt32
        /// The 32-byte values of the PCRs in `pcrMask`, ascending, concatenated.
        let pcrValues: [UInt8]
        let userDataDigest: ArraySlice<UInt8>
        let eventLog: ArraySlice<UInt8>
    }

    /// Reads a document to its exact end, copying nothing but the PCR values.
    static func read(_ all: [UInt8]) throws(AttestationError) -> Fields {
        var reader = ByteReader(all[...], what: "native evidence")
        let magic = try reader.read(4, "magic")
        guard magic.elementsEqual(Self.magic) else {
            throw .invalidValue("native evidence.magic", "0x\(hexString(magic)) is not \"AEVD\"")
        }
        let version = try reader.u16("formatVersion")
        guard version == Self.formatVersion else {
            throw .unsupported("native evidence formatVersion", String(version))
        }
        let akPublic = try reader.tpm2bSlice("akPublic", limit: Self.maxStructure)
        let attest = try reader.tpm2bSlice("attest", limit: Self.maxStructure)
        let signature = try reader.tpm2bSlice("signature", limit: Self.maxStructure)
        let pcrBank = TPMAlgorithm(rawValue: try reader.u16("pcrBank"))
        guard pcrBank == .sha256 else { throw .unsupported("native evidence pcrBank", pcrBank.description) }
        let count = Int(try reader.u8("pcrCount"))
        guard count <= 24 else { throw .lengthExceeded("native evidence.pcrCount", length: count, limit: 24) }
        // count entries of (index, 32-byte value), back to back; read in order so errors come in document order.
        let entriesStart = reader.offset
        var mask: UInt32 = 0
        var previous = -1
        for _ in 0..<count {
            let index = Int(try reader.u8("pcrs.index"))
            guard index > previous, index < 24 else {
                throw .invalidValue(
                    "native evidence.pcrs",
                    "index \(index) after \(previous): not strictly ascending within 0…23"
                )
            }
            previous = index
            mask |= 1 << UInt32(index)
            try reader.skip(32, "pcrs[\(index)].value")
        }
        let entries = all[entriesStart..<(entriesStart + count * 33)]
        let values = [UInt8](unsafeUninitializedCapacity: count * 32) { buffer, initialized in
            entries.withUnsafeBufferPointer { source in
                for entry in 0..<count {
                    let value = UnsafeBufferPointer(rebasing: source[(entry * 33 + 1)..<(entry * 33 + 33)])
                    _ = UnsafeMutableBufferPointer(rebasing: buffer[(entry * 32)..<(entry * 32 + 32)]).initialize(
                        from: value
                    )
                }
            }
            initialized = count * 32
        }
        let userDataDigest = try reader.read(32, "userDataDigest")
        let logSize = Int(try reader.u32("eventLog.size"))
        guard logSize <= Self.maxEventLog else {
            throw .lengthExceeded("native evidence.eventLog", length: logSize, limit: Self.maxEventLog)
        }
        let eventLog = try reader.read(logSize, "eventLog")
        try reader.finish()
        return Fields(
            akPublic: akPublic,
            attest: attest,
            signature: signature,
            pcrBank: pcrBank,
            pcrMask: mask,
            pcrValues: values,
            userDataDigest: userDataDigest,
            eventLog: eventLog
        )
    }

    /// The document's bytes.
    public func serialized() -> [UInt8] {
        var out = Self.magic
        func u16(_ value: Int) { out += [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
        u16(Int(Self.formatVersion))
        for field in [akPublic, attest, signature] {
            u16(field.count)
            out += field
        }
        u16(Int(pcrBank.rawValue))
        out.append(UInt8(pcrs.count))
        for index in pcrs.keys.sorted() {
            out.append(UInt8(index))
            out += pcrs[index]!
        }
        out += userDataDigest
        let size = UInt32(eventLog.count)
        out += [UInt8(size >> 24), UInt8(size >> 16 & 0xFF), UInt8(size >> 8 & 0xFF), UInt8(size & 0xFF)]
        out += eventLog
        return out
    }

    /// The quote's qualifying data: SHA-256(label || nonce || userDataDigest).
    public static func qualifyingData(nonce: [UInt8], userDataDigest: some DataProtocol) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: qualifyingLabel)
        hasher.update(data: nonce)
        hasher.update(data: userDataDigest)
        return hasher.finalize().withUnsafeBytes { Array($0) }
    }

    /// The quote evidence the document carries.
    public func quoteEvidence() throws(AttestationError) -> TPMQuoteEvidence {
        TPMQuoteEvidence(
            akPublic: try TPMTPublic(bytes: akPublic),
            attest: try TPMSAttest(bytes: attest),
            signature: try TPMTSignature(bytes: signature),
            pcrValues: [pcrBank: pcrs],
            eventLog: eventLog
        )
    }
}

/// Constellation's qemu-vtpm attestation document (JSON, see CONSTELLATION-WIRE.md).
public struct ConstellationVTPMDocument: Hashable, Sendable {
    /// One quote of go-tpm-tools' `attest.Attestation`.
    public struct Quote: Hashable, Sendable {
        public let quote: [UInt8]
        public let rawSignature: [UInt8]
        /// The bank as a go-tpm-tools hash number (11 for SHA-256, 4 for SHA-1).
        public let hash: Int
        public let pcrs: [Int: [UInt8]]

        public init(quote: [UInt8], rawSignature: [UInt8], hash: Int, pcrs: [Int: [UInt8]]) {
            self.quote = quote
            self.rawSignature = rawSignature
            self.hash = hash
            self.pcrs = pcrs
        }
    }

    /// Largest document accepted.
    public static let maxBytes = 1 << 20

    public let akPublic: [UInt8]
    public let quotes: [Quote]
    public let eventLog: [UInt8]
    public let instanceInfo: [UInt8]
    public let userData: [UInt8]

    public init(
        akPublic: [UInt8],
        quotes: [Quote],
        eventLog: [UInt8] = [],
        instanceInfo: [UInt8] = [],
        userData: [UInt8]
    ) {
        self.akPublic = akPublic
        self.quotes = quotes
        self.eventLog = eventLog
        self.instanceInfo = instanceInfo
        self.userData = userData
    }

    private struct JSONDocument: Codable {
        struct Attestation: Codable {
            struct QuoteJSON: Codable {
                struct PCRs: Codable {
                    let hash: Int
                    let pcrs: [String: Data]
                }
                let quote: Data
                let raw_sig: Data
                let pcrs: PCRs
            }
            let ak_pub: Data
            let quotes: [QuoteJSON]
            let event_log: Data?
        }
        let Attestation: Attestation
        let InstanceInfo: Data?
        let UserData: Data?
    }

    /// Parses the JSON document.
    public init(json input: some Collection<UInt8>) throws(AttestationError) {
        guard input.count <= Self.maxBytes else {
            throw .lengthExceeded("qemu-vtpm document", length: input.count, limit: Self.maxBytes)
        }
        let document: JSONDocument
        do {
            // A repeated key reads as its first occurrence here and as its last in Go's encoding/json. No
            // check on top: every value read is signed by the AK (quote, and through it user data, instance
            // info and nonce) or checked against what it signed (PCR values, event log), and the AK itself
            // must be trusted, so whichever occurrence is read must be the genuine one for the document to pass.
            document = try JSONDecoder().decode(JSONDocument.self, from: Data(input))
        } catch {
            throw .invalidJSON("qemu-vtpm document", "\(error)")
        }
        var quotes: [Quote] = []
        for quote in document.Attestation.quotes {
            var pcrs: [Int: [UInt8]] = [:]
            for (key, value) in quote.pcrs.pcrs {
                guard let index = Int(key), (0...23).contains(index), String(index) == key else {
                    throw .invalidValue("qemu-vtpm document pcrs", "key \"\(key)\" is not a PCR index 0…23")
                }
                pcrs[index] = Array(value)
            }
            quotes.append(
                Quote(quote: Array(quote.quote), rawSignature: Array(quote.raw_sig), hash: quote.pcrs.hash, pcrs: pcrs)
            )
        }
        akPublic = Array(document.Attestation.ak_pub)
        self.quotes = quotes
        eventLog = Array(document.Attestation.event_log ?? Data())
        instanceInfo = Array(document.InstanceInfo ?? Data())
        userData = Array(document.UserData ?? Data())
    }

    /// The document as JSON, in the shape Go's encoding/json gives it.
    public func jsonBytes() -> [UInt8] {
        let document = JSONDocument(
            Attestation: .init(
                ak_pub: Data(akPublic),
                quotes: quotes.map { quote in
                    .init(
                        quote: Data(quote.quote),
                        raw_sig: Data(quote.rawSignature),
                        pcrs: .init(
                            hash: quote.hash,
                            pcrs: Dictionary(uniqueKeysWithValues: quote.pcrs.map { (String($0.key), Data($0.value)) })
                        )
                    )
                },
                event_log: Data(eventLog)
            ),
            InstanceInfo: instanceInfo.isEmpty ? nil : Data(instanceInfo),
            UserData: Data(userData)
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(document)) ?? Data())
    }

    /// `extraData = SHA-256(userData || nonce)`, then qualifying data `SHA-256(instanceInfo || extraData)`.
    public static func qualifyingData(userData: [UInt8], nonce: [UInt8], instanceInfo: [UInt8] = []) -> [UInt8] {
        let extraData = Array(SHA256.hash(data: userData + nonce))
        return Array(SHA256.hash(data: instanceInfo + extraData))
    }

    /// go-tpm-tools' hash number for a bank.
    static func bank(ofGoHash hash: Int) -> TPMAlgorithm? {
        switch hash {
        case 4: .sha1
        case 11: .sha256
        case 12: .sha384
        default: nil
        }
    }
}

/// Validates evidence documents: parses, binds nonce and user data, then runs the quote policies.
public enum TPMEvidenceValidator {
    /// Validates keyd's native document against the nonce the verifier issued and the user data
    /// digest it expects; a nil nonce leaves freshness unchecked and the report says so.
    /// - Throws: ``AttestationError`` when the document does not parse.
    public static func validate(
        native document: [UInt8],
        nonce: [UInt8]?,
        userDataDigest: [UInt8],
        policy: TPMQuotePolicy,
        at time: Date
    ) throws(AttestationError) -> AttestationReport {
        try validateNative(document, nonce: nonce, userDataDigest: userDataDigest, policy: policy, at: time).report
    }

    /// Validates keyd's native document against qualifying data the caller computed itself (keyd's join
    /// binding), instead of the generic `SHA-256("asterism-tpm-evidence-v1" || nonce || userDataDigest)`.
    /// The document's `userDataDigest` field is not compared: the explicit qualifying data is the binding.
    /// - Important: A document issued with the generic binding (`evidence.issue`) fails here unless its
    ///   quote carries exactly `expectedQualifyingData`, so a caller's label keeps the two kinds apart.
    /// - Throws: ``AttestationError`` when the document does not parse.
    public static func validate(
        native document: [UInt8],
        expectedQualifyingData: [UInt8],
        policy: TPMQuotePolicy,
        at time: Date
    ) throws(AttestationError) -> NativeEvidenceValidation {
        try validateNative(document, binding: .explicit(expectedQualifyingData), policy: policy, at: time)
    }

    /// ``validate(native:nonce:userDataDigest:policy:at:)`` that also returns the document's user data;
    /// a nil `userDataDigest` leaves the comparison to the caller (aTLS compares with the key hash).
    static func validateNative(
        _ document: [UInt8],
        nonce: [UInt8]?,
        userDataDigest: [UInt8]?,
        policy: TPMQuotePolicy,
        at time: Date
    ) throws(AttestationError) -> (userData: [UInt8], report: AttestationReport) {
        let validation = try validateNative(
            document,
            binding: .nonce(nonce, userDataDigest: userDataDigest),
            policy: policy,
            at: time
        )
        return (validation.userDataDigest, validation.report)
    }

    /// What a native document's quote must be bound to.
    private enum NativeBinding {
        /// The generic binding of `nonce` (nil: freshness unchecked) and the document's user data digest,
        /// compared with `userDataDigest` when given.
        case nonce([UInt8]?, userDataDigest: [UInt8]?)
        /// Exactly these qualifying data; the document's user data digest is not compared.
        case explicit([UInt8])
    }

    /// Parses a native document and runs the quote policies with the qualifying data `binding` gives.
    private static func validateNative(
        _ document: [UInt8],
        binding: NativeBinding,
        policy: TPMQuotePolicy,
        at time: Date
    ) throws(AttestationError) -> NativeEvidenceValidation {
        let fields = try NativeTPMEvidenceDocument.read(document)
        // An AK the policy already prepared is reused when the document carries exactly its bytes; any other is parsed.
        let akPublic: TPMTPublic
        let key: Result<TPMVerificationKey, AttestationError>
        let prepared = policy.akTrust.preparedKey(marshaled: fields.akPublic)
        if let prepared {
            akPublic = prepared.akPublic
            key = .success(prepared.verificationKey)
        } else {
            let parsed = try TPMTPublic(bytes: fields.akPublic)
            akPublic = parsed
            key = Result { () throws(AttestationError) in try TPMVerificationKey(parsed.key) }
        }
        let evidence = TPMQuoteEvidence(
            akPublic: akPublic,
            attest: try TPMSAttest(bytes: fields.attest),
            signature: try TPMTSignature(slice: fields.signature),
            reportedPCRs: .flat(bank: fields.pcrBank, mask: fields.pcrMask, size: 32, values: fields.pcrValues),
            eventLog: Array(fields.eventLog),
            verificationKey: key
        )
        let userData = Array(fields.userDataDigest)
        var results: [PolicyResult] = []
        results.reserveCapacity(11)
        let qualifying: [UInt8]?
        switch binding {
        case .nonce(let nonce, let userDataDigest):
            qualifying = nonce.map { NativeTPMEvidenceDocument.qualifyingData(nonce: $0, userDataDigest: userData) }
            results.append(userDataResult(expected: userDataDigest, actual: userData))
        case .explicit(let expected):
            qualifying = expected
            results.append(
                .notChecked(
                    "binding.user-data",
                    "the caller gave the qualifying data itself; the document's user data is not the binding",
                    [.hex("actual", userData)]
                )
            )
        }
        policy.evaluate(
            evidence,
            expectedQualifyingData: qualifying,
            context: ValidationContext(time: time),
            into: &results
        )
        // An AK allow-listed by digest is kept prepared once a quote of its verified.
        if prepared == nil, case .success(let verificationKey) = key,
            results.contains(where: { $0.policy == QuoteSignaturePolicy.name && $0.outcome == .passed })
        {
            policy.akTrust.remember(akPublic, key: verificationKey)
        }
        return NativeEvidenceValidation(
            report: TPMQuoteValidator.report("native-tpm-document", results),
            akDigest: try? key.get().digest,
            userDataDigest: userData
        )
    }

    /// Validates Constellation's qemu-vtpm document; `userData` is what the document must be bound
    /// to (for aTLS, SHA-256 of the certificate's DER SubjectPublicKeyInfo).
    /// - Throws: ``AttestationError`` when the document does not parse.
    public static func validate(
        constellation document: [UInt8],
        nonce: [UInt8]?,
        userData: [UInt8]?,
        policy: TPMQuotePolicy,
        at time: Date
    ) throws(AttestationError) -> AttestationReport {
        try validateConstellation(document, nonce: nonce, userData: userData, policy: policy, at: time).report
    }

    /// ``validate(constellation:nonce:userData:policy:at:)`` that also returns the document's user data.
    static func validateConstellation(
        _ document: [UInt8],
        nonce: [UInt8]?,
        userData: [UInt8]?,
        policy: TPMQuotePolicy,
        at time: Date
    ) throws(AttestationError) -> (userData: [UInt8], report: AttestationReport) {
        let parsed = try ConstellationVTPMDocument(json: document)
        var report = AttestationReport(evidence: "constellation-qemu-vtpm")
        report.append(userDataResult(expected: userData, actual: parsed.userData))
        let wanted: [TPMAlgorithm] = policy.allowSHA1 ? [.sha256, .sha1] : [.sha256]
        guard
            let quote = wanted.lazy.compactMap({ bank in
                parsed.quotes.first { ConstellationVTPMDocument.bank(ofGoHash: $0.hash) == bank }
            }).first,
            let bank = ConstellationVTPMDocument.bank(ofGoHash: quote.hash)
        else {
            report.append(
                .failed(
                    "tpm.quote.pcr-bank",
                    "the document has no quote over an allowed bank",
                    [("banks", parsed.quotes.map { String($0.hash) }.joined(separator: ","))]
                )
            )
            return (parsed.userData, report)
        }
        let evidence = TPMQuoteEvidence(
            akPublic: try TPMTPublic(anyEncoding: parsed.akPublic),
            attest: try TPMSAttest(bytes: quote.quote),
            signature: try TPMTSignature(bytes: quote.rawSignature),
            pcrValues: [bank: quote.pcrs],
            eventLog: parsed.eventLog
        )
        var quotePolicy = policy
        quotePolicy.expectedQualifyingData = nonce.map {
            ConstellationVTPMDocument.qualifyingData(
                userData: parsed.userData,
                nonce: $0,
                instanceInfo: parsed.instanceInfo
            )
        }
        report.merge(TPMQuoteValidator.validate(evidence, policy: quotePolicy, context: ValidationContext(time: time)))
        return (parsed.userData, report)
    }

    /// Compares the document's user data with the expected; nil leaves it to the caller, and says so.
    private static func userDataResult(expected: [UInt8]?, actual: [UInt8]) -> PolicyResult {
        guard let expected else {
            return .notChecked("binding.user-data", "no user data given to compare with here", [.hex("actual", actual)])
        }
        let values = [PolicyResult.Value.hex("expected", expected), .hex("actual", actual)]
        return equalBytes(expected, actual)
            ? .passed("binding.user-data", "the evidence carries the expected user data", values)
            : .failed("binding.user-data", "the evidence's user data is not the expected one", values)
    }
}

/// What validating a native document gives besides the report.
public struct NativeEvidenceValidation: Sendable {
    /// Every policy's result; the evidence passed when `report.isValid`.
    public let report: AttestationReport
    /// SHA-256 of the AK's DER SubjectPublicKeyInfo, nil when the AK is not a usable key.
    public let akDigest: [UInt8]?
    /// The document's user data digest field.
    public let userDataDigest: [UInt8]
}
