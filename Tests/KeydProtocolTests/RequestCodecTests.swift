import KeydProtocol
import Testing

/// One request to round-trip, with the sequence it travels under.
struct RequestCase: Sendable, CustomTestStringConvertible {
    let name: String
    let sequence: UInt32
    let request: Request

    var testDescription: String { name }
}

/// A lowercase UUID in the shape key.release requires.
let sampleDiskUUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"

/// Requests of every kind but kek.import, at ordinary values and at their limits.
let requestCases: [RequestCase] = [
    RequestCase(name: "hello 1...1", sequence: 0, request: .hello(minVersion: 1, maxVersion: 1)),
    RequestCase(name: "hello 1...65535", sequence: 0, request: .hello(minVersion: 1, maxVersion: .max)),
    RequestCase(name: "status", sequence: 1, request: .status),
    RequestCase(name: "bootKey.get", sequence: 2, request: .bootKeyGet),
    RequestCase(
        name: "evidence.issue native",
        sequence: 3,
        request: .evidenceIssue(
            EvidenceRequest(variant: .native, nonce: pattern(32), userDataDigest: pattern(32, start: 200))
        )
    ),
    RequestCase(
        name: "evidence.issue qemu-vtpm",
        sequence: 4,
        request: .evidenceIssue(
            EvidenceRequest(variant: .constellationQEMUVTPM, nonce: pattern(32, start: 9), userDataDigest: pattern(32))
        )
    ),
    RequestCase(name: "challenge.issue join", sequence: 5, request: .challengeIssue(.join)),
    RequestCase(name: "challenge.issue rejoin", sequence: 6, request: .challengeIssue(.rejoin)),
    RequestCase(name: "challenge.issue init", sequence: 7, request: .challengeIssue(.initialize)),
    RequestCase(
        name: "key.release worker, empty evidence",
        sequence: 8,
        request: .keyRelease(
            KeyReleaseRequest(
                challengeID: pattern(16),
                evidence: [],
                certificateKeyHash: pattern(32, start: 50),
                bootPublicKey: pattern(32, start: 90),
                diskUUID: sampleDiskUUID,
                role: .worker
            )
        )
    ),
    RequestCase(
        name: "key.release control plane, evidence at its limit",
        sequence: 9,
        request: .keyRelease(
            KeyReleaseRequest(
                challengeID: pattern(16, start: 7),
                evidence: pattern(Limits.maxEvidence),
                certificateKeyHash: pattern(32, start: 50),
                bootPublicKey: pattern(32, start: 90),
                diskUUID: sampleDiskUUID,
                role: .controlPlane
            )
        )
    ),
    RequestCase(name: "envelope.accept join, empty", sequence: 10, request: .envelopeAccept(.join, envelope: [])),
    RequestCase(
        name: "envelope.accept rejoin, envelope at its limit",
        sequence: 11,
        request: .envelopeAccept(.rejoin, envelope: pattern(Limits.maxEnvelope))
    ),
    RequestCase(
        name: "init.accept",
        sequence: 12,
        request: .initAccept(
            InitAcceptRequest(envelope: pattern(120), operatorKey: pattern(33), signedPolicy: pattern(9))
        )
    ),
    RequestCase(
        name: "init.accept at its limits",
        sequence: 12,
        request: .initAccept(
            InitAcceptRequest(
                envelope: pattern(Limits.maxInitEnvelope),
                operatorKey: pattern(Limits.maxOperatorKey),
                signedPolicy: pattern(Limits.maxSignedPolicy)
            )
        )
    ),
    RequestCase(
        name: "key.release with node name and kubelet CSR at their limits",
        sequence: 12,
        request: .keyRelease(
            KeyReleaseRequest(
                challengeID: pattern(16),
                evidence: pattern(40),
                certificateKeyHash: pattern(32, start: 50),
                bootPublicKey: pattern(32, start: 90),
                diskUUID: sampleDiskUUID,
                role: .controlPlane,
                nodeName: String(repeating: "a", count: 63) + "." + String(repeating: "b", count: 63) + "."
                    + String(repeating: "c", count: 63) + "." + String(repeating: "d", count: 61),
                kubeletCSR: pattern(Limits.maxKubeletCSR)
            )
        )
    ),
    RequestCase(
        name: "joinEvidence.issue",
        sequence: 12,
        request: .joinEvidenceIssue(
            JoinEvidenceRequest(
                nonce: pattern(32),
                certificateKeyHash: pattern(32, start: 3),
                role: .worker,
                nodeName: "worker-1.example"
            )
        )
    ),
    RequestCase(
        name: "compat.release",
        sequence: 12,
        request: .compatRelease(
            CompatReleaseRequest(
                challengeID: pattern(16),
                evidence: pattern(Limits.maxEvidence),
                certificateKeyHash: pattern(32),
                diskUUID: sampleDiskUUID,
                role: .controlPlane,
                nodeName: "cp-0"
            )
        )
    ),
    RequestCase(
        name: "dataKey.release",
        sequence: 12,
        request: .dataKeyRelease(
            DataKeyReleaseRequest(
                challengeID: pattern(16),
                evidence: pattern(Limits.maxEvidence),
                certificateKeyHash: pattern(32),
                bootPublicKey: pattern(32, start: 9),
                diskUUID: sampleDiskUUID,
                role: .worker,
                nodeName: "worker-1",
                dataKeyID: String(repeating: "k", count: Limits.maxDataKeyIDField),
                length: 64
            )
        )
    ),
    RequestCase(
        name: "dataKey.release with an ID keyd refuses (decodes; keyd answers invalidArgument)",
        sequence: 12,
        request: .dataKeyRelease(
            DataKeyReleaseRequest(
                challengeID: pattern(16),
                evidence: [],
                certificateKeyHash: pattern(32),
                bootPublicKey: pattern(32),
                diskUUID: sampleDiskUUID,
                role: .controlPlane,
                nodeName: "cp-0",
                dataKeyID: "",
                length: 0
            )
        )
    ),
    RequestCase(
        name: "dataKey.open",
        sequence: 12,
        request: .dataKeyOpen(
            DataKeyOpenRequest(dataKeyID: "../x", length: 255, envelope: pattern(Limits.maxDataKeyEnvelope))
        )
    ),
    RequestCase(name: "policy.get", sequence: 12, request: .policyGet),
    RequestCase(name: "operatorKey.pin", sequence: 12, request: .operatorKeyPin(operatorKey: pattern(33))),
    RequestCase(name: "disk.inspect", sequence: 13, request: .diskInspect(device: "/dev/vdb")),
    RequestCase(
        name: "disk.inspect path at its limit",
        sequence: 14,
        request: .diskInspect(device: "/" + String(repeating: "d", count: Limits.maxDevicePath - 1))
    ),
    RequestCase(
        name: "disk.inspect non-ASCII path",
        sequence: 15,
        request: .diskInspect(device: "/dev/disk/by-label/état")
    ),
    RequestCase(name: "disk.inspect of the configured state disk", sequence: 15, request: .diskInspect(device: "")),
    RequestCase(name: "disk.format", sequence: 16, request: .diskFormat(device: "/dev/vdb")),
    RequestCase(name: "disk.bind", sequence: 17, request: .diskBind(device: "/var/lib/asterism/state.img")),
    RequestCase(name: "disk.open", sequence: 18, request: .diskOpen(device: "/dev/vdb", mappingName: "state")),
    RequestCase(
        name: "disk.open name at its limit",
        sequence: 19,
        request: .diskOpen(device: "/dev/vdb", mappingName: String(repeating: "n", count: Limits.maxMappingName))
    ),
    RequestCase(name: "disk.close", sequence: 20, request: .diskClose(mappingName: "state-1.x_Y")),
    RequestCase(name: "disk.reset", sequence: 21, request: .diskReset(device: "/dev/vdb")),
    RequestCase(name: "kek.lock", sequence: 22, request: .kekLock),
    RequestCase(name: "audit.read first", sequence: 23, request: .auditRead(firstRecord: 0, maxRecords: 1)),
    RequestCase(
        name: "audit.read limits",
        sequence: 24,
        request: .auditRead(firstRecord: .max, maxRecords: Limits.maxAuditRecordsPerRead)
    ),
    RequestCase(name: "audit.verify", sequence: 25, request: .auditVerify),
    RequestCase(name: "tpm.status", sequence: 26, request: .tpmStatus),
    RequestCase(
        name: "tpm.evidence",
        sequence: 27,
        request: .tpmEvidence(
            EvidenceRequest(variant: .native, nonce: pattern(32, start: 3), userDataDigest: pattern(32))
        )
    ),
    RequestCase(name: "policy.set empty", sequence: 28, request: .policySet(signedPolicy: [])),
    RequestCase(name: "policy.set at its limit", sequence: .max, request: .policySet(signedPolicy: pattern(16_384))),
]

/// kek.import secrets at the ends of their bounds, and under their minimum: only the maximum is a wire
/// matter (a 15-byte master secret or a 31-byte salt decodes; keyd answers it `invalidArgument`).
let kekImportSizes: [(master: Int, salt: Int)] = [
    (16, 32), (32, 32), (64, 64), (16, 64), (64, 32), (15, 32), (32, 31), (0, 32), (16, 0), (0, 0),
]

/// Encodes a kek.import frame with recognisable secrets.
func kekImportFrame(
    sequence: UInt32,
    masterCount: Int,
    saltCount: Int
) -> (frame: [UInt8], master: [UInt8], salt: [UInt8]) {
    let master = pattern(masterCount, start: 0x10)
    let salt = pattern(saltCount, start: 0xA0)
    let frame = master.withUnsafeBytes { m in
        salt.withUnsafeBytes { s in RequestFrame.encodeKEKImport(sequence: sequence, masterSecret: m, salt: s) }
    }
    return (frame, master, salt)
}

@Suite("Request codec")
struct RequestCodecTests {
    @Test("every request kind has a round-trip case", arguments: RequestKind.allCases)
    func everyKindIsCovered(kind: RequestKind) {
        let covered = Set(requestCases.map(\.request.kind)).union([.kekImport])
        #expect(covered.contains(kind))
    }

    @Test("decode(encode(x)) == x", arguments: requestCases)
    func roundTrip(_ testCase: RequestCase) throws {
        let original = RequestFrame(sequence: testCase.sequence, request: testCase.request)
        let body = stripPrefix(original.encodeFrame())
        let header = try #require(body.withUnsafeBytes { RequestFrame.peekHeader(body: $0) })
        #expect(header.kind == testCase.request.kind.rawValue)
        #expect(header.sequence == testCase.sequence)
        #expect(try RequestFrame.decode(body: body) == original)
    }

    @Test("the kind code is the first field of the body", arguments: RequestKind.allCases)
    func kindOnTheWire(kind: RequestKind) throws {
        let frame: [UInt8]
        if kind == .kekImport {
            frame = kekImportFrame(sequence: 0x0102_0304, masterCount: 16, saltCount: 32).frame
        } else {
            let sample = try #require(requestCases.first { $0.request.kind == kind })
            frame = RequestFrame(sequence: 0x0102_0304, request: sample.request).encodeFrame()
        }
        let body = stripPrefix(frame)
        #expect(Array(body.prefix(6)) == [UInt8(kind.rawValue >> 8), UInt8(kind.rawValue & 0xFF), 1, 2, 3, 4])
    }

    @Test("kek.import fields point at the secrets in the body", arguments: kekImportSizes.indices)
    func kekImport(index: Int) throws {
        let (masterCount, saltCount) = kekImportSizes[index]
        let (frame, master, salt) = kekImportFrame(sequence: 41, masterCount: masterCount, saltCount: saltCount)
        let body = stripPrefix(frame)
        #expect(body.count == 6 + 2 + masterCount + 2 + saltCount)
        let decoded = try RequestFrame.decode(body: body)
        #expect(decoded.sequence == 41)
        guard case .kekImport(let fields) = decoded.request else {
            Issue.record("decoded \(decoded.request.kind), not kek.import")
            return
        }
        #expect(fields.masterSecret == SecretField(offset: 8, count: masterCount))
        #expect(fields.salt == SecretField(offset: 8 + masterCount + 2, count: saltCount))
        #expect(
            Array(body[fields.masterSecret.offset..<(fields.masterSecret.offset + fields.masterSecret.count)]) == master
        )
        #expect(Array(body[fields.salt.offset..<(fields.salt.offset + fields.salt.count)]) == salt)
    }

    @Test("many frames in one buffer split back into the same frames")
    func framesBackToBack() throws {
        let frames = requestCases.map { RequestFrame(sequence: $0.sequence, request: $0.request) }
        var stream: [UInt8] = []
        for frame in frames { stream += frame.encodeFrame() }
        var decoder = FrameDecoder(.requests, maxQueuedFrames: frames.count)
        try decoder.append(stream)
        var decoded: [RequestFrame] = []
        while let body = decoder.nextFrame() { decoded.append(try RequestFrame.decode(body: body)) }
        #expect(decoded == frames)
    }
}
