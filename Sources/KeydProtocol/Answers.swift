/// One decoded answer frame body: the request kind it answers, sequence, status and raw payload.
public struct AnswerFrame: Hashable, Sendable {
    /// Raw kind with the answer bit cleared (`0x7FFF` for a connection error answer).
    public var kind: UInt16
    /// Sequence of the request answered.
    public var sequence: UInt32
    /// Outcome.
    public var status: StatusCode
    /// Payload bytes, present only when `status` is `ok`.
    public var payload: [UInt8]

    /// Creates a frame.
    public init(kind: UInt16, sequence: UInt32, status: StatusCode, payload: [UInt8] = []) {
        self.kind = kind
        self.sequence = sequence
        self.status = status
        self.payload = payload
    }

    /// Whether this is the connection error answer (no request identified).
    public var isConnectionError: Bool {
        kind == Limits.connectionErrorKind & ~Limits.answerBit && sequence == Limits.connectionErrorSequence
    }

    /// Decodes an answer body (the bytes after the length prefix).
    public static func decode(body: UnsafeRawBufferPointer) throws(ProtocolError) -> AnswerFrame {
        guard body.count >= Limits.minAnswerBody, body.count <= Limits.maxAnswerFrameLength else {
            throw .frameLength(body.count, minimum: Limits.minAnswerBody, maximum: Limits.maxAnswerFrameLength)
        }
        var r = WireReader(body)
        let rawKind = try r.u16("kind")
        guard rawKind & Limits.answerBit != 0 else {
            throw .badValue(field: "kind", "answer kind 0x\(String(rawKind, radix: 16)) lacks the answer bit")
        }
        let sequence = try r.u32("sequence")
        let rawStatus = try r.u16("status")
        guard let status = StatusCode(rawValue: rawStatus) else {
            throw .badEnum(field: "status", value: Int(rawStatus))
        }
        let payload = try r.fixed(r.remaining, "payload")
        let frame = AnswerFrame(kind: rawKind & ~Limits.answerBit, sequence: sequence, status: status, payload: payload)
        if frame.isConnectionError {
            // PROTOCOL.md: the connection error answer has an empty payload and is followed by the close.
            guard payload.isEmpty else { throw .trailingBytes(payload.count, after: "connection error answer") }
            guard status.closesConnection else {
                throw .badValue(field: "status", "connection error answer with \(status), which keeps the connection")
            }
        } else {
            guard RequestKind(rawValue: frame.kind) != nil else {
                throw .badValue(field: "kind", "answer kind 0x\(String(rawKind, radix: 16)) answers no request kind")
            }
            guard status == .ok || payload.isEmpty else {
                throw .trailingBytes(payload.count, after: "status \(status)")
            }
        }
        return frame
    }

    /// Decodes an answer body held in an array.
    public static func decode(body: [UInt8]) throws(ProtocolError) -> AnswerFrame {
        let result: Result<AnswerFrame, ProtocolError> = body.withUnsafeBytes { raw in
            do throws(ProtocolError) { return .success(try decode(body: raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Encodes an answer with a typed payload writer.
    public static func encode(
        answering kind: RequestKind,
        sequence: UInt32,
        status: StatusCode,
        capacity: Int = 128,
        _ fields: (inout WireWriter) -> Void = { _ in }
    ) -> [UInt8] {
        Frame.build(kind: kind.rawValue | Limits.answerBit, sequence: sequence, status: status, capacity: capacity) {
            w in
            if status == .ok { fields(&w) }
        }
    }

    /// Encodes a status-only answer for a request.
    public static func encodeStatus(answering kind: RequestKind, sequence: UInt32, status: StatusCode) -> [UInt8] {
        encode(answering: kind, sequence: sequence, status: status)
    }

    /// Encodes the connection error answer, sent when no request can be identified.
    public static func encodeConnectionError(_ status: StatusCode) -> [UInt8] {
        Frame.build(kind: Limits.connectionErrorKind, sequence: Limits.connectionErrorSequence, status: status) { _ in }
    }

    /// Decodes the payload with `decode`, requiring status `ok` and no trailing bytes.
    public func decodePayload<T>(
        _ kind: RequestKind,
        _ decode: (inout WireReader) throws(ProtocolError) -> T
    ) throws(ProtocolError) -> T {
        let result: Result<T, ProtocolError> = payload.withUnsafeBytes { raw in
            var reader = WireReader(raw)
            do throws(ProtocolError) {
                let value = try decode(&reader)
                try reader.finish("\(kind) answer")
                return .success(value)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}

/// Answer of `hello`.
public struct HelloAnswer: Hashable, Sendable {
    /// Negotiated protocol version.
    public var version: UInt16
    /// How keyd classified this connection.
    public var peerClass: PeerClass
    /// keyd's phase.
    public var phase: Phase

    /// Creates an answer.
    public init(version: UInt16, peerClass: PeerClass, phase: Phase) {
        self.version = version
        self.peerClass = peerClass
        self.phase = phase
    }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) {
        w.u16(version)
        w.u8(peerClass.rawValue)
        w.u8(phase.rawValue)
    }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> HelloAnswer {
        let version = try r.u16("version")
        let peerClass = try r.enumeration(PeerClass.self, "peerClass")
        // PROTOCOL.md lists 1 trustd and 2 admin only: a stranger never gets a hello answer.
        guard peerClass != .stranger else { throw .badEnum(field: "peerClass", value: Int(peerClass.rawValue)) }
        return HelloAnswer(version: version, peerClass: peerClass, phase: try r.enumeration(Phase.self, "phase"))
    }
}

/// Answer of `status`.
public struct StatusAnswer: Hashable, Sendable {
    public var protocolVersion: UInt16
    public var phase: Phase
    public var peerClass: PeerClass
    public var uptimeSeconds: UInt64
    public var requestsServed: UInt64
    public var connections: UInt32
    public var auditRecords: UInt64
    /// SHA-256 of the last audit record (zeros for an empty log).
    public var auditHead: [UInt8]
    /// Whether the audit chain verified when keyd started.
    public var auditIntact: Bool
    public var keydVersion: String
    /// Whether keyd opened its TPM and attestation key at start.
    public var tpmAvailable: Bool
    /// What became of the KEK at rest.
    public var sealedKEK: SealedKEKStatus
    /// The measurement policy's version (0 when none is set).
    public var policyVersion: UInt64
    /// SHA-256 of the signed policy in force (zeros when none).
    public var policyDigest: [UInt8]
    /// Whether an operator key is pinned.
    public var operatorKeyPinned: Bool

    /// Creates an answer.
    public init(
        protocolVersion: UInt16,
        phase: Phase,
        peerClass: PeerClass,
        uptimeSeconds: UInt64,
        requestsServed: UInt64,
        connections: UInt32,
        auditRecords: UInt64,
        auditHead: [UInt8],
        auditIntact: Bool,
        keydVersion: String,
        tpmAvailable: Bool = false,
        sealedKEK: SealedKEKStatus = .none,
        policyVersion: UInt64 = 0,
        policyDigest: [UInt8] = [UInt8](repeating: 0, count: 32),
        operatorKeyPinned: Bool = false
    ) {
        self.tpmAvailable = tpmAvailable
        self.sealedKEK = sealedKEK
        self.policyVersion = policyVersion
        self.policyDigest = policyDigest
        self.operatorKeyPinned = operatorKeyPinned
        self.protocolVersion = protocolVersion
        self.phase = phase
        self.peerClass = peerClass
        self.uptimeSeconds = uptimeSeconds
        self.requestsServed = requestsServed
        self.connections = connections
        self.auditRecords = auditRecords
        self.auditHead = auditHead
        self.auditIntact = auditIntact
        self.keydVersion = keydVersion
    }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) {
        w.u16(protocolVersion)
        w.u8(phase.rawValue)
        w.u8(peerClass.rawValue)
        w.u64(uptimeSeconds)
        w.u64(requestsServed)
        w.u32(connections)
        w.u64(auditRecords)
        w.fixed(auditHead, count: 32)
        w.bool(auditIntact)
        w.text(keydVersion, max: 32)
        w.bool(tpmAvailable)
        w.u8(sealedKEK.rawValue)
        w.u64(policyVersion)
        w.fixed(policyDigest, count: 32)
        w.bool(operatorKeyPinned)
    }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> StatusAnswer {
        StatusAnswer(
            protocolVersion: try r.u16("protocolVersion"),
            phase: try r.enumeration(Phase.self, "phase"),
            peerClass: try r.enumeration(PeerClass.self, "peerClass"),
            uptimeSeconds: try r.u64("uptimeSeconds"),
            requestsServed: try r.u64("requestsServed"),
            connections: try r.u32("connections"),
            auditRecords: try r.u64("auditRecords"),
            auditHead: try r.fixed(32, "auditHead"),
            auditIntact: try r.bool("auditIntact"),
            keydVersion: try r.text(max: 32, "keydVersion"),
            tpmAvailable: try r.bool("tpmAvailable"),
            sealedKEK: try r.enumeration(SealedKEKStatus.self, "sealedKEK"),
            policyVersion: try r.u64("policyVersion"),
            policyDigest: try r.fixed(32, "policyDigest"),
            operatorKeyPinned: try r.bool("operatorKeyPinned")
        )
    }
}

/// Answer of `audit.read`.
public struct AuditReadAnswer: Hashable, Sendable {
    /// Records in the whole log.
    public var totalRecords: UInt64
    /// JSON lines, without newlines.
    public var records: [String]

    /// Creates an answer.
    public init(totalRecords: UInt64, records: [String]) {
        self.totalRecords = totalRecords
        self.records = records
    }

    /// Bytes a record adds to the payload.
    public static func encodedSize(ofRecord utf8Count: Int) -> Int { 2 + utf8Count }

    /// Payload bytes before the first record (total and count), plus the answer header and prefix.
    public static let overhead = 8 + 2 + Limits.minAnswerBody + Limits.lengthPrefixSize

    /// Writes the payload.
    public func write(_ w: inout WireWriter) {
        w.u64(totalRecords)
        w.u16(UInt16(records.count))
        for record in records { w.text(record, max: Limits.maxAuditRecord) }
    }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> AuditReadAnswer {
        let total = try r.u64("totalRecords")
        let count = Int(try r.u16("count"))
        guard count <= Int(Limits.maxAuditRecordsPerRead) else {
            throw .fieldLength(field: "count", length: count, bounds: 0...Int(Limits.maxAuditRecordsPerRead))
        }
        var records: [String] = []
        for _ in 0..<count { records.append(try r.text(max: Limits.maxAuditRecord, "record")) }
        return AuditReadAnswer(totalRecords: total, records: records)
    }
}

/// What `audit.verify` found wrong, if anything.
public enum AuditProblemCode: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// The log is intact.
    case none = 0
    /// A record's bytes changed: the next record's `prev` (or the expected head) no longer matches.
    case edited = 1
    /// A record's `seq` is not its position: lines were swapped, removed or inserted.
    case reorderedOrMissing = 2
    /// The log ends before the expected head.
    case truncated = 3
    /// A line is not an audit record (including a last line without its newline: a torn write).
    case unparsable = 4
    /// The log could not be read at all.
    case unreadable = 5
    /// The chain cannot be checked: written under another audit key than keyd's present one, or
    /// ahead of the TPM counter (another TPM, or its state rolled back).
    case unverifiable = 6

    public var description: String {
        switch self {
        case .none: "none"
        case .edited: "edited"
        case .reorderedOrMissing: "reorderedOrMissing"
        case .truncated: "truncated"
        case .unparsable: "unparsable"
        case .unverifiable: "unverifiable"
        case .unreadable: "unreadable"
        }
    }
}

/// Answer of `audit.verify`.
public struct AuditVerifyAnswer: Hashable, Sendable {
    public var intact: Bool
    public var records: UInt64
    /// Index of the first bad record; equals `records` when intact.
    public var firstBadRecord: UInt64
    public var problem: AuditProblemCode
    /// SHA-256 of the last good record.
    public var headHash: [UInt8]

    /// Creates an answer.
    public init(intact: Bool, records: UInt64, firstBadRecord: UInt64, problem: AuditProblemCode, headHash: [UInt8]) {
        self.intact = intact
        self.records = records
        self.firstBadRecord = firstBadRecord
        self.problem = problem
        self.headHash = headHash
    }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) {
        w.bool(intact)
        w.u64(records)
        w.u64(firstBadRecord)
        w.u8(problem.rawValue)
        w.fixed(headHash, count: 32)
    }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> AuditVerifyAnswer {
        AuditVerifyAnswer(
            intact: try r.bool("intact"),
            records: try r.u64("records"),
            firstBadRecord: try r.u64("firstBadRecord"),
            problem: try r.enumeration(AuditProblemCode.self, "problem"),
            headHash: try r.fixed(32, "headHash")
        )
    }
}

/// Answer of `disk.inspect`: a small JSON document describing the device (no secret).
public struct DiskInspectAnswer: Hashable, Sendable {
    /// Longest report, in bytes.
    public static let maxReport = 8192
    /// The JSON report as UTF-8.
    public var report: [UInt8]

    /// Creates an answer.
    public init(report: [UInt8]) { self.report = report }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) { w.bytes(report, max: Self.maxReport) }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> DiskInspectAnswer {
        DiskInspectAnswer(report: try r.bytes(max: maxReport, "report"))
    }
}

/// Answer of `disk.open`: whether a mapping was activated (false: key verified, no device mapper).
public struct DiskOpenAnswer: Hashable, Sendable {
    /// True when `/dev/mapper/<name>` was activated.
    public var activated: Bool

    /// Creates an answer.
    public init(activated: Bool) { self.activated = activated }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) { w.bool(activated) }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> DiskOpenAnswer {
        DiskOpenAnswer(activated: try r.bool("activated"))
    }
}

/// Answer of `evidence.issue` and `tpm.evidence`: the evidence document.
public struct EvidenceAnswer: Hashable, Sendable {
    /// The document: native binary (variant 1) or Constellation's JSON text (variant 2).
    public var document: [UInt8]

    /// Creates an answer.
    public init(document: [UInt8]) { self.document = document }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) { w.blob32(document, max: Limits.maxEvidenceDocument) }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> EvidenceAnswer {
        EvidenceAnswer(document: try r.blob32(max: Limits.maxEvidenceDocument, "document"))
    }
}

/// Answer of `tpm.status`: one JSON object (PROTOCOL.md, "tpm.status").
public struct TPMStatusAnswer: Hashable, Sendable {
    /// The report.
    public var report: [UInt8]

    /// Creates an answer.
    public init(report: [UInt8]) { self.report = report }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) { w.bytes(report, max: Limits.maxTPMReport) }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> TPMStatusAnswer {
        TPMStatusAnswer(report: try r.bytes(max: Limits.maxTPMReport, "report"))
    }
}

/// The KEK at rest, as `status` reports it.
public enum SealedKEKStatus: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// No KEK was imported or sealed.
    case none = 0
    /// The imported KEK is sealed to this TPM in the state directory.
    case sealed = 1
    /// keyd unsealed the KEK at start.
    case unsealed = 2
    /// A sealed KEK exists but did not unseal (PCRs changed, blob damaged, another TPM): keyd has no KEK.
    case unsealFailed = 3
    /// The KEK was imported but could not be sealed (no TPM, or the TPM failed): memory only.
    case notSealed = 4

    public var description: String {
        switch self {
        case .none: "none"
        case .sealed: "sealed"
        case .unsealed: "unsealed"
        case .unsealFailed: "unseal-failed"
        case .notSealed: "not-sealed"
        }
    }
}
