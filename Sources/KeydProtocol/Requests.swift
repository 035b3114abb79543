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
    case joinEvidenceIssue = 0x0015
    case compatRelease = 0x0016
    case dataKeyRelease = 0x0017
    case dataKeyOpen = 0x0018
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
    case policyGet = 0x0047
    case operatorKeyPin = 0x0048

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
        case .joinEvidenceIssue: "joinEvidence.issue"
        case .compatRelease: "compat.release"
        case .dataKeyRelease: "dataKey.release"
        case .dataKeyOpen: "dataKey.open"
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
        case .policyGet: "policy.get"
        case .operatorKeyPin: "operatorKey.pin"
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
    /// A data key for a Kubernetes KMS plugin (`dataKey.release`); never a join or rejoin.
    case dataKey = 4
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

/// What `key.release` and `dataKey.release` share: the requesting node's join evidence, the challenge
/// it answers, and what the evidence binds.
public protocol AttestedReleaseFields {
    /// Challenge keyd issued, exactly 16 bytes.
    var challengeID: [UInt8] { get }
    /// The requesting node's join evidence document.
    var evidence: [UInt8] { get }
    /// SHA-256 of the aTLS certificate's SubjectPublicKeyInfo, exactly 32 bytes.
    var certificateKeyHash: [UInt8] { get }
    /// The requesting node's X25519 boot key, exactly 32 bytes.
    var bootPublicKey: [UInt8] { get }
    /// Lowercase LUKS UUID of the requesting node's state disk.
    var diskUUID: String { get }
    /// The requesting node's role.
    var role: NodeRole { get }
    /// The requesting node's name.
    var nodeName: String { get }
}

/// The shared fields as decoded, in wire order.
typealias DecodedReleaseFields = (
    challengeID: [UInt8], evidence: [UInt8], certificateKeyHash: [UInt8], bootPublicKey: [UInt8],
    diskUUID: String, role: NodeRole, nodeName: String
)

/// Fields of `key.release`.
public struct KeyReleaseRequest: Hashable, Sendable, AttestedReleaseFields {
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
    /// The node's name (a DNS-1123 subdomain, at most 253 bytes), as its join evidence binds it.
    public var nodeName: String
    /// A kubelet certificate signing request (DER PKCS#10) for keyd to sign after the release; empty for none.
    public var kubeletCSR: [UInt8]

    /// Creates the fields; sizes are checked by the encoder.
    public init(
        challengeID: [UInt8],
        evidence: [UInt8],
        certificateKeyHash: [UInt8],
        bootPublicKey: [UInt8],
        diskUUID: String,
        role: NodeRole,
        nodeName: String = "node",
        kubeletCSR: [UInt8] = []
    ) {
        self.challengeID = challengeID
        self.evidence = evidence
        self.certificateKeyHash = certificateKeyHash
        self.bootPublicKey = bootPublicKey
        self.diskUUID = diskUUID
        self.role = role
        self.nodeName = nodeName
        self.kubeletCSR = kubeletCSR
    }
}

/// Fields of `joinEvidence.issue`: what the joining node's keyd binds into its quote, besides its own
/// boot key and state disk, which keyd adds itself.
public struct JoinEvidenceRequest: Hashable, Sendable {
    /// The verifier's challenge nonce, exactly 32 bytes.
    public var nonce: [UInt8]
    /// SHA-256 of the aTLS certificate's SubjectPublicKeyInfo, exactly 32 bytes.
    public var certificateKeyHash: [UInt8]
    /// Role the node joins as.
    public var role: NodeRole
    /// The node's name (a DNS-1123 subdomain, at most 253 bytes).
    public var nodeName: String

    /// Creates the fields.
    public init(nonce: [UInt8], certificateKeyHash: [UInt8], role: NodeRole, nodeName: String) {
        self.nonce = nonce
        self.certificateKeyHash = certificateKeyHash
        self.role = role
        self.nodeName = nodeName
    }
}

/// Fields of `compat.release`: Constellation's plain key release (off unless configured).
public struct CompatReleaseRequest: Hashable, Sendable {
    /// Challenge keyd issued, exactly 16 bytes.
    public var challengeID: [UInt8]
    /// The joining node's Constellation qemu-vtpm document (JSON).
    public var evidence: [UInt8]
    /// SHA-256 of the aTLS certificate's SubjectPublicKeyInfo: the document's user data, exactly 32 bytes.
    public var certificateKeyHash: [UInt8]
    /// Lowercase LUKS UUID of the joining node's state disk.
    public var diskUUID: String
    /// Role the node joins as.
    public var role: NodeRole
    /// The node's name.
    public var nodeName: String

    /// Creates the fields.
    public init(
        challengeID: [UInt8],
        evidence: [UInt8],
        certificateKeyHash: [UInt8],
        diskUUID: String,
        role: NodeRole,
        nodeName: String
    ) {
        self.challengeID = challengeID
        self.evidence = evidence
        self.certificateKeyHash = certificateKeyHash
        self.diskUUID = diskUUID
        self.role = role
        self.nodeName = nodeName
    }
}

/// Fields of `dataKey.release`: a data key for an attested node, sealed to the boot key its join
/// evidence binds. The evidence fields are `key.release`'s; keyd checks `dataKeyID` and `length` itself.
public struct DataKeyReleaseRequest: Hashable, Sendable, AttestedReleaseFields {
    /// Challenge keyd issued for purpose `dataKey`, exactly 16 bytes.
    public var challengeID: [UInt8]
    /// The requesting node's join evidence document (`joinEvidence.issue`).
    public var evidence: [UInt8]
    /// SHA-256 of the aTLS certificate's SubjectPublicKeyInfo, exactly 32 bytes.
    public var certificateKeyHash: [UInt8]
    /// The requesting node's X25519 boot key, exactly 32 bytes.
    public var bootPublicKey: [UInt8]
    /// Lowercase LUKS UUID of the requesting node's state disk, as its evidence binds it.
    public var diskUUID: String
    /// The requesting node's role, as its evidence binds it.
    public var role: NodeRole
    /// The requesting node's name, as its evidence binds it.
    public var nodeName: String
    /// The data key's ID: 1…128 bytes of `[A-Za-z0-9._-]`, not starting with `.` (keyd checks it).
    public var dataKeyID: String
    /// The data key's length in bytes, 16…64 (keyd checks it).
    public var length: UInt8

    /// Creates the fields; sizes are checked by the encoder, the ID and length by keyd.
    public init(
        challengeID: [UInt8],
        evidence: [UInt8],
        certificateKeyHash: [UInt8],
        bootPublicKey: [UInt8],
        diskUUID: String,
        role: NodeRole,
        nodeName: String,
        dataKeyID: String,
        length: UInt8
    ) {
        self.challengeID = challengeID
        self.evidence = evidence
        self.certificateKeyHash = certificateKeyHash
        self.bootPublicKey = bootPublicKey
        self.diskUUID = diskUUID
        self.role = role
        self.nodeName = nodeName
        self.dataKeyID = dataKeyID
        self.length = length
    }
}

/// Fields of `dataKey.open`: a data-key envelope and the ID and length the caller asked for.
public struct DataKeyOpenRequest: Hashable, Sendable {
    /// The data key's ID the envelope must bind.
    public var dataKeyID: String
    /// The length the envelope must bind.
    public var length: UInt8
    /// The data-key envelope `dataKey.release` answered.
    public var envelope: [UInt8]

    /// Creates the fields.
    public init(dataKeyID: String, length: UInt8, envelope: [UInt8]) {
        self.dataKeyID = dataKeyID
        self.length = length
        self.envelope = envelope
    }
}

/// Fields of `init.accept`: the operator's sealed master secret, their signing key and the first policy.
public struct InitAcceptRequest: Hashable, Sendable {
    /// The init envelope: the master secret, salt and measurement salt sealed to this keyd's boot key.
    public var envelope: [UInt8]
    /// The operator's public signing key (`algorithm u8 | key`), pinned by this request.
    public var operatorKey: [UInt8]
    /// The first measurement policy, signed by that key.
    public var signedPolicy: [UInt8]

    /// Creates the fields.
    public init(envelope: [UInt8], operatorKey: [UInt8], signedPolicy: [UInt8]) {
        self.envelope = envelope
        self.operatorKey = operatorKey
        self.signedPolicy = signedPolicy
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
    case initAccept(InitAcceptRequest)
    case joinEvidenceIssue(JoinEvidenceRequest)
    case compatRelease(CompatReleaseRequest)
    case dataKeyRelease(DataKeyReleaseRequest)
    case dataKeyOpen(DataKeyOpenRequest)
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
    case policyGet
    case operatorKeyPin(operatorKey: [UInt8])

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
        case .joinEvidenceIssue: .joinEvidenceIssue
        case .compatRelease: .compatRelease
        case .dataKeyRelease: .dataKeyRelease
        case .dataKeyOpen: .dataKeyOpen
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
        case .policyGet: .policyGet
        case .operatorKeyPin: .operatorKeyPin
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

    /// A Kubernetes node name: a DNS-1123 subdomain (lowercase letters, digits, `-` and `.`, each label
    /// starting and ending with a letter or digit), 1…253 bytes.
    private static func nodeName(_ r: inout WireReader) throws(ProtocolError) -> String {
        let name = try r.text(max: Limits.maxNodeName, "nodeName", allowEmpty: false)
        guard NodeName.isValid(name) else {
            throw .badValue(field: "nodeName", "must be a DNS-1123 subdomain (lowercase, digits, '-', '.')")
        }
        return name
    }

    /// The fields `key.release` and `dataKey.release` share, in wire order.
    private static func releaseFields(_ r: inout WireReader) throws(ProtocolError) -> DecodedReleaseFields {
        (
            try r.fixed(16, "challengeID"), try r.bytes(max: Limits.maxEvidence, "evidence"),
            try r.fixed(32, "certificateKeyHash"), try r.fixed(32, "bootPublicKey"), try diskUUID(&r),
            try r.enumeration(NodeRole.self, "role"), try nodeName(&r)
        )
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
            let f = try releaseFields(&r)
            return .keyRelease(
                KeyReleaseRequest(
                    challengeID: f.challengeID,
                    evidence: f.evidence,
                    certificateKeyHash: f.certificateKeyHash,
                    bootPublicKey: f.bootPublicKey,
                    diskUUID: f.diskUUID,
                    role: f.role,
                    nodeName: f.nodeName,
                    kubeletCSR: try r.bytes(max: Limits.maxKubeletCSR, "kubeletCSR")
                )
            )
        case .joinEvidenceIssue:
            let nonce = try r.fixed(32, "nonce")
            let certificateKeyHash = try r.fixed(32, "certificateKeyHash")
            let role = try r.enumeration(NodeRole.self, "role")
            return .joinEvidenceIssue(
                JoinEvidenceRequest(
                    nonce: nonce,
                    certificateKeyHash: certificateKeyHash,
                    role: role,
                    nodeName: try nodeName(&r)
                )
            )
        case .compatRelease:
            let challengeID = try r.fixed(16, "challengeID")
            let evidence = try r.bytes(max: Limits.maxEvidence, "evidence")
            let certificateKeyHash = try r.fixed(32, "certificateKeyHash")
            let diskUUID = try diskUUID(&r)
            let role = try r.enumeration(NodeRole.self, "role")
            return .compatRelease(
                CompatReleaseRequest(
                    challengeID: challengeID,
                    evidence: evidence,
                    certificateKeyHash: certificateKeyHash,
                    diskUUID: diskUUID,
                    role: role,
                    nodeName: try nodeName(&r)
                )
            )
        case .dataKeyRelease:
            let f = try releaseFields(&r)
            return .dataKeyRelease(
                DataKeyReleaseRequest(
                    challengeID: f.challengeID,
                    evidence: f.evidence,
                    certificateKeyHash: f.certificateKeyHash,
                    bootPublicKey: f.bootPublicKey,
                    diskUUID: f.diskUUID,
                    role: f.role,
                    nodeName: f.nodeName,
                    dataKeyID: try r.text(max: Limits.maxDataKeyIDField, "dataKeyID"),
                    length: try r.u8("length")
                )
            )
        case .dataKeyOpen:
            let dataKeyID = try r.text(max: Limits.maxDataKeyIDField, "dataKeyID")
            let length = try r.u8("length")
            let envelope = try r.bytes(max: Limits.maxDataKeyEnvelope, "envelope")
            return .dataKeyOpen(DataKeyOpenRequest(dataKeyID: dataKeyID, length: length, envelope: envelope))
        case .envelopeAccept:
            let purpose = try r.enumeration(EnvelopePurpose.self, "purpose")
            return .envelopeAccept(purpose, envelope: try r.bytes(max: Limits.maxEnvelope, "envelope"))
        case .initAccept:
            let envelope = try r.bytes(max: Limits.maxInitEnvelope, "envelope")
            let operatorKey = try r.bytes(max: Limits.maxOperatorKey, "operatorKey")
            let policy = try r.bytes(max: Limits.maxSignedPolicy, "signedPolicy")
            return .initAccept(InitAcceptRequest(envelope: envelope, operatorKey: operatorKey, signedPolicy: policy))
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
        case .policySet: return .policySet(signedPolicy: try r.bytes(max: Limits.maxSignedPolicy, "signedPolicy"))
        case .policyGet: return .policyGet
        case .operatorKeyPin:
            return .operatorKeyPin(operatorKey: try r.bytes(max: Limits.maxOperatorKey, "operatorKey"))
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
            case .status, .bootKeyGet, .kekLock, .auditVerify, .tpmStatus, .policyGet: break
            case .evidenceIssue(let e), .tpmEvidence(let e):
                w.u8(e.variant.rawValue)
                w.fixed(e.nonce, count: 32)
                w.fixed(e.userDataDigest, count: 32)
            case .challengeIssue(let purpose): w.u8(purpose.rawValue)
            case .keyRelease(let k):
                w.releaseFields(k)
                w.bytes(k.kubeletCSR, max: Limits.maxKubeletCSR)
            case .joinEvidenceIssue(let j):
                w.fixed(j.nonce, count: 32)
                w.fixed(j.certificateKeyHash, count: 32)
                w.u8(j.role.rawValue)
                w.text(j.nodeName, max: Limits.maxNodeName)
            case .compatRelease(let c):
                w.fixed(c.challengeID, count: 16)
                w.bytes(c.evidence, max: Limits.maxEvidence)
                w.fixed(c.certificateKeyHash, count: 32)
                w.text(c.diskUUID, max: 36)
                w.u8(c.role.rawValue)
                w.text(c.nodeName, max: Limits.maxNodeName)
            case .dataKeyRelease(let d):
                w.releaseFields(d)
                w.text(d.dataKeyID, max: Limits.maxDataKeyIDField)
                w.u8(d.length)
            case .dataKeyOpen(let d):
                w.text(d.dataKeyID, max: Limits.maxDataKeyIDField)
                w.u8(d.length)
                w.bytes(d.envelope, max: Limits.maxDataKeyEnvelope)
            case .envelopeAccept(let purpose, let envelope):
                w.u8(purpose.rawValue)
                w.bytes(envelope, max: Limits.maxEnvelope)
            case .initAccept(let i):
                w.bytes(i.envelope, max: Limits.maxInitEnvelope)
                w.bytes(i.operatorKey, max: Limits.maxOperatorKey)
                w.bytes(i.signedPolicy, max: Limits.maxSignedPolicy)
            case .operatorKeyPin(let key): w.bytes(key, max: Limits.maxOperatorKey)
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
            case .policySet(let policy): w.bytes(policy, max: Limits.maxSignedPolicy)
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

extension WireWriter {
    /// Writes the fields `key.release` and `dataKey.release` share, in wire order.
    mutating func releaseFields(_ f: some AttestedReleaseFields) {
        fixed(f.challengeID, count: 16)
        bytes(f.evidence, max: Limits.maxEvidence)
        fixed(f.certificateKeyHash, count: 32)
        fixed(f.bootPublicKey, count: 32)
        text(f.diskUUID, max: 36)
        u8(f.role.rawValue)
        text(f.nodeName, max: Limits.maxNodeName)
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

/// Kubernetes node names as keyd accepts them in requests and binds them into join evidence.
public enum NodeName {
    /// Whether `name` is a DNS-1123 subdomain of at most 253 bytes, labels of at most 63.
    public static func isValid(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...Limits.maxNodeName).contains(bytes.count) else { return false }
        for label in bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard (1...63).contains(label.count), let first = label.first, let last = label.last,
                isAlphanumeric(first), isAlphanumeric(last),
                label.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "-") })
            else { return false }
        }
        return true
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x61...0x7A).contains(byte)
    }
}
