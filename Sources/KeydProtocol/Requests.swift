/// Every request kind of protocol version 1; the list is closed (PROTOCOL.md).
public enum RequestKind: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case hello = 0x0001
    case status = 0x0002
    case bootKeyGet = 0x0003
    case evidenceIssue = 0x0010
    case challengeIssue = 0x0011
    case keyRelease = 0x0012
    case envelopeAccept = 0x0013
    case initAccept = 0x0014
    case diskInspect = 0x0020
    case diskFormat = 0x0021
    case diskBind = 0x0022
    case diskOpen = 0x0023
    case diskClose = 0x0024
    case diskReset = 0x0025
    case kekImport = 0x0040
    case kekLock = 0x0041
    case auditRead = 0x0042
    case auditVerify = 0x0043
    case tpmStatus = 0x0044
    case tpmEvidence = 0x0045
    case policySet = 0x0046

    /// The dotted name used in PROTOCOL.md and audit records.
    public var description: String {
        switch self {
        case .hello: "hello"
        case .status: "status"
        case .bootKeyGet: "bootKey.get"
        case .evidenceIssue: "evidence.issue"
        case .challengeIssue: "challenge.issue"
        case .keyRelease: "key.release"
        case .envelopeAccept: "envelope.accept"
        case .initAccept: "init.accept"
        case .diskInspect: "disk.inspect"
        case .diskFormat: "disk.format"
        case .diskBind: "disk.bind"
        case .diskOpen: "disk.open"
        case .diskClose: "disk.close"
        case .diskReset: "disk.reset"
        case .kekImport: "kek.import"
        case .kekLock: "kek.lock"
        case .auditRead: "audit.read"
        case .auditVerify: "audit.verify"
        case .tpmStatus: "tpm.status"
        case .tpmEvidence: "tpm.evidence"
        case .policySet: "policy.set"
        }
    }
}

/// Evidence document formats keyd can produce.
public enum EvidenceVariant: UInt8, Sendable, CaseIterable {
    /// Asterism's native binary document.
    case native = 1
    /// Constellation's qemu-vtpm JSON document.
    case constellationQEMUVTPM = 2
}

/// What a challenge nonce will be spent on.
public enum ChallengePurpose: UInt8, Sendable, CaseIterable {
    case join = 1
    case rejoin = 2
    case initialize = 3
}

/// Why an envelope is handed to keyd.
public enum EnvelopePurpose: UInt8, Sendable, CaseIterable {
    case join = 1
    case rejoin = 2
}

/// The Kubernetes role a key release is for.
public enum NodeRole: UInt8, Sendable, CaseIterable {
    case worker = 1
    case controlPlane = 2
}

/// Fields of `evidence.issue` and `tpm.evidence`.
public struct EvidenceRequest: Hashable, Sendable {
    /// Output format.
    public var variant: EvidenceVariant
    /// Verifier's nonce, exactly 32 bytes.
    public var nonce: [UInt8]
    /// SHA-256 of the user data the evidence binds, exactly 32 bytes.
    public var userDataDigest: [UInt8]

    /// Creates the fields; sizes are checked by the encoder.
    public init(variant: EvidenceVariant, nonce: [UInt8], userDataDigest: [UInt8]) {
        self.variant = variant
        self.nonce = nonce
        self.userDataDigest = userDataDigest
    }
}

/// Fields of `key.release`.
public struct KeyReleaseRequest: Hashable, Sendable {
    /// Challenge keyd issued, exactly 16 bytes.
    public var challengeID: [UInt8]
    /// The joining node's evidence document.
    public var evidence: [UInt8]
    /// SHA-256 of the aTLS certificate's SubjectPublicKeyInfo, exactly 32 bytes.
    public var certificateKeyHash: [UInt8]
    /// The joining node's X25519 boot key, exactly 32 bytes.
    public var bootPublicKey: [UInt8]
    /// Lowercase LUKS UUID of the joining node's state disk.
    public var diskUUID: String
    /// Role the node joins as.
    public var role: NodeRole

    /// Creates the fields; sizes are checked by the encoder.
    public init(
        challengeID: [UInt8],
        evidence: [UInt8],
        certificateKeyHash: [UInt8],
        bootPublicKey: [UInt8],
        diskUUID: String,
        role: NodeRole
    ) {
        self.challengeID = challengeID
        self.evidence = evidence
        self.certificateKeyHash = certificateKeyHash
        self.bootPublicKey = bootPublicKey
        self.diskUUID = diskUUID
        self.role = role
    }
}

/// Positions of the two secrets of `kek.import` in the frame body.
public struct KEKImportFields: Hashable, Sendable {
    /// The master secret (at most 64 bytes; keyd refuses one under 16).
    public var masterSecret: SecretField
    /// The salt (at most 64 bytes; keyd refuses one under 32).
    public var salt: SecretField

    /// Creates the positions.
    public init(masterSecret: SecretField, salt: SecretField) {
        self.masterSecret = masterSecret
        self.salt = salt
    }
}

/// A decoded request payload.
public enum Request: Hashable, Sendable {
    case hello(minVersion: UInt16, maxVersion: UInt16)
    case status
    case bootKeyGet
    case evidenceIssue(EvidenceRequest)
    case challengeIssue(ChallengePurpose)
    case keyRelease(KeyReleaseRequest)
    case envelopeAccept(EnvelopePurpose, envelope: [UInt8])
    case initAccept(envelope: [UInt8])
    case diskInspect(device: String)
    case diskFormat(device: String)
    case diskBind(device: String)
    case diskOpen(device: String, mappingName: String)
    case diskClose(mappingName: String)
    case diskReset(device: String)
    /// Secret fields are positions in the frame body, never copies.
    case kekImport(KEKImportFields)
    case kekLock
    case auditRead(firstRecord: UInt64, maxRecords: UInt16)
    case auditVerify
    case tpmStatus
    case tpmEvidence(EvidenceRequest)
    case policySet(signedPolicy: [UInt8])

    /// The kind this payload belongs to.
    public var kind: RequestKind {
        switch self {
        case .hello: .hello
        case .status: .status
        case .bootKeyGet: .bootKeyGet
        case .evidenceIssue: .evidenceIssue
        case .challengeIssue: .challengeIssue
        case .keyRelease: .keyRelease
        case .envelopeAccept: .envelopeAccept
        case .initAccept: .initAccept
        case .diskInspect: .diskInspect
        case .diskFormat: .diskFormat
        case .diskBind: .diskBind
        case .diskOpen: .diskOpen
        case .diskClose: .diskClose
        case .diskReset: .diskReset
        case .kekImport: .kekImport
        case .kekLock: .kekLock
        case .auditRead: .auditRead
        case .auditVerify: .auditVerify
        case .tpmStatus: .tpmStatus
        case .tpmEvidence: .tpmEvidence
        case .policySet: .policySet
        }
    }
}

/// One decoded request frame body: kind, sequence and payload.
public struct RequestFrame: Hashable, Sendable {
    /// Sequence number the answer must carry.
    public var sequence: UInt32
    /// The payload.
    public var request: Request

    /// Creates a frame.
    public init(sequence: UInt32, request: Request) {
        self.sequence = sequence
        self.request = request
    }

    /// Reads the kind and sequence only, so that keyd can answer even when the payload is bad.
    public static func peekHeader(body: UnsafeRawBufferPointer) -> (kind: UInt16, sequence: UInt32)? {
        guard body.count >= Limits.minRequestBody else { return nil }
        var reader = WireReader(body)
        guard let kind = try? reader.u16("kind"), let sequence = try? reader.u32("sequence") else { return nil }
        return (kind, sequence)
    }

    /// Decodes a whole request body (the bytes after the length prefix).
    public static func decode(body: UnsafeRawBufferPointer) throws(ProtocolError) -> RequestFrame {
        guard body.count >= Limits.minRequestBody, body.count <= Limits.maxFrameLength else {
            throw .frameLength(body.count, minimum: Limits.minRequestBody, maximum: Limits.maxFrameLength)
        }
        var r = WireReader(body)
        let rawKind = try r.u16("kind")
        let sequence = try r.u32("sequence")
        guard let kind = RequestKind(rawValue: rawKind) else { throw .unknownKind(rawKind) }
        let request = try decodePayload(kind, &r)
        try r.finish(kind.description)
        return RequestFrame(sequence: sequence, request: request)
    }

    /// Decodes a whole request body held in an array.
    public static func decode(body: [UInt8]) throws(ProtocolError) -> RequestFrame {
        let result: Result<RequestFrame, ProtocolError> = body.withUnsafeBytes { raw in
            do throws(ProtocolError) { return .success(try decode(body: raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    private static func evidence(_ r: inout WireReader) throws(ProtocolError) -> EvidenceRequest {
        EvidenceRequest(
            variant: try r.enumeration(EvidenceVariant.self, "variant"),
            nonce: try r.fixed(32, "nonce"),
            userDataDigest: try r.fixed(32, "userDataDigest")
        )
    }

    /// An absolute path, or empty: the state disk keyd's configuration names (the only one trustd may ask about).
    private static func device(_ r: inout WireReader) throws(ProtocolError) -> String {
        let path = try r.text(max: Limits.maxDevicePath, "device")
        guard path.isEmpty || path.utf8.first == UInt8(ascii: "/") else {
            throw .badValue(field: "device", "must be an absolute path or empty")
        }
        return path
    }

    private static func diskUUID(_ r: inout WireReader) throws(ProtocolError) -> String {
        let uuid = try r.text(max: 36, "diskUUID", allowEmpty: false)
        // PROTOCOL.md: a lowercase UUID, 8-4-4-4-12 hex digits.
        let bytes = Array(uuid.utf8)
        let isLowercaseUUID =
            bytes.count == 36
            && bytes.indices.allSatisfy { i in
                [8, 13, 18, 23].contains(i)
                    ? bytes[i] == UInt8(ascii: "-")
                    : (bytes[i] >= 0x30 && bytes[i] <= 0x39) || (bytes[i] >= 0x61 && bytes[i] <= 0x66)
            }
        guard isLowercaseUUID else { throw .badValue(field: "diskUUID", "must be a lowercase UUID") }
        return uuid
    }

    private static func mappingName(_ r: inout WireReader) throws(ProtocolError) -> String {
        let name = try r.text(max: Limits.maxMappingName, "mappingName", allowEmpty: false)
        let allowed = name.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
        }
        guard allowed, name != ".", name != ".." else {
            throw .badValue(field: "mappingName", "only [A-Za-z0-9._-] allowed")
        }
        return name
    }

    private static func decodePayload(_ kind: RequestKind, _ r: inout WireReader) throws(ProtocolError) -> Request {
        switch kind {
        case .hello:
            let minVersion = try r.u16("minVersion")
            let maxVersion = try r.u16("maxVersion")
            guard minVersion >= 1, minVersion <= maxVersion else {
                throw .badValue(field: "hello", "version range \(minVersion)...\(maxVersion) is empty or starts at 0")
            }
            return .hello(minVersion: minVersion, maxVersion: maxVersion)
        case .status: return .status
        case .bootKeyGet: return .bootKeyGet
        case .evidenceIssue: return .evidenceIssue(try evidence(&r))
        case .challengeIssue: return .challengeIssue(try r.enumeration(ChallengePurpose.self, "purpose"))
        case .keyRelease:
            let challengeID = try r.fixed(16, "challengeID")
            let evidence = try r.bytes(max: Limits.maxEvidence, "evidence")
            let certificateKeyHash = try r.fixed(32, "certificateKeyHash")
            let bootPublicKey = try r.fixed(32, "bootPublicKey")
            let diskUUID = try diskUUID(&r)
            let role = try r.enumeration(NodeRole.self, "role")
            return .keyRelease(
                KeyReleaseRequest(
                    challengeID: challengeID,
                    evidence: evidence,
                    certificateKeyHash: certificateKeyHash,
                    bootPublicKey: bootPublicKey,
                    diskUUID: diskUUID,
                    role: role
                )
            )
        case .envelopeAccept:
            let purpose = try r.enumeration(EnvelopePurpose.self, "purpose")
            return .envelopeAccept(purpose, envelope: try r.bytes(max: Limits.maxEnvelope, "envelope"))
        case .initAccept: return .initAccept(envelope: try r.bytes(max: Limits.maxEnvelope, "envelope"))
        case .diskInspect: return .diskInspect(device: try device(&r))
        case .diskFormat: return .diskFormat(device: try device(&r))
        case .diskBind: return .diskBind(device: try device(&r))
        case .diskOpen:
            let path = try device(&r)
            return .diskOpen(device: path, mappingName: try mappingName(&r))
        case .diskClose: return .diskClose(mappingName: try mappingName(&r))
        case .diskReset: return .diskReset(device: try device(&r))
        case .kekImport:
            // Only the maximum bounds what is read; a secret under its minimum is keyd's `invalidArgument`.
            let master = try r.secret(max: Limits.masterSecretLength.upperBound, "masterSecret")
            let salt = try r.secret(max: Limits.saltLength.upperBound, "salt")
            return .kekImport(KEKImportFields(masterSecret: master, salt: salt))
        case .kekLock: return .kekLock
        case .auditRead:
            let first = try r.u64("firstRecord")
            let count = try r.u16("maxRecords")
            guard (1...Limits.maxAuditRecordsPerRead).contains(count) else {
                throw .fieldLength(
                    field: "maxRecords",
                    length: Int(count),
                    bounds: 1...Int(Limits.maxAuditRecordsPerRead)
                )
            }
            return .auditRead(firstRecord: first, maxRecords: count)
        case .auditVerify: return .auditVerify
        case .tpmStatus: return .tpmStatus
        case .tpmEvidence: return .tpmEvidence(try evidence(&r))
        case .policySet: return .policySet(signedPolicy: try r.bytes(max: 16_384, "signedPolicy"))
        }
    }

    /// Encodes this request as a whole frame, length prefix included.
    ///
    /// - Precondition: not `kekImport`; use `encodeKEKImport(sequence:masterSecret:salt:)`.
    public func encodeFrame() -> [UInt8] {
        Frame.build(kind: request.kind.rawValue, sequence: sequence) { w in
            switch request {
            case .hello(let minVersion, let maxVersion):
                w.u16(minVersion)
                w.u16(maxVersion)
            case .status, .bootKeyGet, .kekLock, .auditVerify, .tpmStatus: break
            case .evidenceIssue(let e), .tpmEvidence(let e):
                w.u8(e.variant.rawValue)
                w.fixed(e.nonce, count: 32)
                w.fixed(e.userDataDigest, count: 32)
            case .challengeIssue(let purpose): w.u8(purpose.rawValue)
            case .keyRelease(let k):
                w.fixed(k.challengeID, count: 16)
                w.bytes(k.evidence, max: Limits.maxEvidence)
                w.fixed(k.certificateKeyHash, count: 32)
                w.fixed(k.bootPublicKey, count: 32)
                w.text(k.diskUUID, max: 36)
                w.u8(k.role.rawValue)
            case .envelopeAccept(let purpose, let envelope):
                w.u8(purpose.rawValue)
                w.bytes(envelope, max: Limits.maxEnvelope)
            case .initAccept(let envelope): w.bytes(envelope, max: Limits.maxEnvelope)
            case .diskInspect(let d), .diskFormat(let d), .diskBind(let d), .diskReset(let d):
                w.text(d, max: Limits.maxDevicePath)
            case .diskOpen(let d, let name):
                w.text(d, max: Limits.maxDevicePath)
                w.text(name, max: Limits.maxMappingName)
            case .diskClose(let name): w.text(name, max: Limits.maxMappingName)
            case .kekImport: preconditionFailure("kek.import carries secrets: use encodeKEKImport")
            case .auditRead(let first, let count):
                w.u64(first)
                w.u16(count)
            case .policySet(let policy): w.bytes(policy, max: 16_384)
            }
        }
    }

    /// Encodes a `kek.import` frame from raw secret memory.
    ///
    /// - Important: the returned array holds the secrets; the caller wipes it after sending.
    public static func encodeKEKImport(
        sequence: UInt32,
        masterSecret: UnsafeRawBufferPointer,
        salt: UnsafeRawBufferPointer
    ) -> [UInt8] {
        Frame.build(
            kind: RequestKind.kekImport.rawValue,
            sequence: sequence,
            capacity: 16 + masterSecret.count + salt.count
        ) { w in
            w.secret(masterSecret)
            w.secret(salt)
        }
    }
}

/// Frame assembly shared by requests and answers.
public enum Frame {
    /// Builds `length | kind | sequence | fields…`, patching the length at the end.
    public static func build(
        kind: UInt16,
        sequence: UInt32,
        status: StatusCode? = nil,
        capacity: Int = 128,
        _ fields: (inout WireWriter) -> Void
    ) -> [UInt8] {
        var w = WireWriter(capacity: capacity)
        w.u32(0)
        w.u16(kind)
        w.u32(sequence)
        if let status { w.u16(status.rawValue) }
        fields(&w)
        let length = w.bytes.count - Limits.lengthPrefixSize
        let limit = status == nil ? Limits.maxFrameLength : Limits.maxAnswerFrameLength
        precondition(length <= limit, "frame body \(length) exceeds limit \(limit)")
        w.patchU32(UInt32(length), at: 0)
        return w.bytes
    }

    /// Reads a length prefix and checks it against `bounds` before anything is allocated.
    public static func bodyLength(
        prefix b0: UInt8,
        _ b1: UInt8,
        _ b2: UInt8,
        _ b3: UInt8,
        bounds: ClosedRange<Int>
    ) throws(ProtocolError) -> Int {
        let length = Int(b0) << 24 | Int(b1) << 16 | Int(b2) << 8 | Int(b3)
        guard bounds.contains(length) else {
            throw .frameLength(length, minimum: bounds.lowerBound, maximum: bounds.upperBound)
        }
        return length
    }
}
