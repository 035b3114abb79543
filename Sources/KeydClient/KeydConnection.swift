import KeydProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A blocking connection to one of keyd's sockets, numbered in pairs from `hello`.
///
/// One caller at a time: calls are serialized by the caller (trustd runs them on a thread pool).
public final class KeydConnection {
    /// What keyd answered to `hello`.
    public private(set) var hello: HelloAnswer
    private var fd: Int32
    private var nextSequence: UInt32 = 0
    private var decoder = FrameDecoder(.answers)
    /// Reused for every read; wiped after the answers that carry a key (`dataKey.open`).
    private var receiveBuffer = [UInt8](repeating: 0, count: 4096)

    /// Connects to `path`, negotiates the version and learns the peer class keyd assigned.
    public init(path: String, timeoutMilliseconds: Int = 10_000) throws(KeydClientError) {
        fd = try Self.connect(path: path, timeoutMilliseconds: timeoutMilliseconds)
        hello = HelloAnswer(version: 0, peerClass: .stranger, phase: .awaitingKEK)
        do {
            let answer = try roundTrip(
                .hello(minVersion: Limits.supportedVersions.lowerBound, maxVersion: Limits.supportedVersions.upperBound)
            )
            hello = try decode(answer, .hello, HelloAnswer.read)
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Closes the socket; later calls fail.
    public func close() {
        if fd >= 0 {
            _ = Glibc.close(fd)
            fd = -1
        }
        decoder.wipeAll()
    }

    private static func connect(path: String, timeoutMilliseconds: Int) throws(KeydClientError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !pathBytes.isEmpty, pathBytes.count < capacity else {
            throw .invalidArgument("socket path is empty or longer than \(capacity - 1) bytes: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .unreachable(path: path, errno: errno) }
        var timeout = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: (timeoutMilliseconds % 1000) * 1000)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            let saved = errno
            _ = Glibc.close(fd)
            throw .unreachable(path: path, errno: saved)
        }
        return fd
    }

    /// Sends one request and returns keyd's answer, whatever its status.
    public func roundTrip(_ request: Request) throws(KeydClientError) -> AnswerFrame {
        let frame = RequestFrame(sequence: nextSequence, request: request).encodeFrame()
        return try exchange(frame, kind: request.kind)
    }

    /// Sends one request and returns the payload of an `ok` answer; any other status throws.
    public func call(_ request: Request) throws(KeydClientError) -> AnswerFrame {
        let answer = try roundTrip(request)
        guard answer.status == .ok else { throw .refused(answer.status, request: request.kind) }
        return answer
    }

    private func exchange(_ frame: [UInt8], kind: RequestKind) throws(KeydClientError) -> AnswerFrame {
        let sequence = nextSequence
        nextSequence &+= 1
        try send(frame)
        let answer = try receive()
        if answer.isConnectionError { throw .refused(answer.status, request: kind) }
        guard answer.kind == kind.rawValue, answer.sequence == sequence else {
            throw .violation(
                "answer for kind 0x\(String(answer.kind, radix: 16)) sequence \(answer.sequence), expected \(kind) sequence \(sequence)"
            )
        }
        if answer.status.closesConnection { close() }
        return answer
    }

    /// Sends raw bytes; for tests of keyd's handling of malformed input.
    public func sendRaw(_ bytes: [UInt8]) throws(KeydClientError) { try send(bytes) }

    /// Reads one answer frame; for tests that sent raw bytes.
    public func receiveAnswer() throws(KeydClientError) -> AnswerFrame { try receive() }

    private func send(_ bytes: [UInt8]) throws(KeydClientError) {
        guard fd >= 0 else { throw .closed() }
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EPIPE || errno == ECONNRESET { throw .closed() }
                throw .io("send", errno: errno)
            }
            sent += n
        }
    }

    private func receive() throws(KeydClientError) -> AnswerFrame {
        guard fd >= 0 else { throw .closed() }
        while true {
            if let body = decoder.nextFrame() {
                do throws(ProtocolError) {
                    return try AnswerFrame.decode(body: body)
                } catch {
                    throw .violation(error.description)
                }
            }
            let n = receiveBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET { throw .closed() }
                throw .io("recv", errno: errno)
            }
            if n == 0 { throw .closed() }
            let appended: Result<Void, ProtocolError> = receiveBuffer.withUnsafeBytes { raw in
                do throws(ProtocolError) {
                    try decoder.append(UnsafeRawBufferPointer(rebasing: raw[0..<n]))
                    return .success(())
                } catch {
                    return .failure(error)
                }
            }
            if case .failure(let error) = appended { throw .violation(error.description) }
        }
    }

    private func decode<T>(
        _ answer: AnswerFrame,
        _ kind: RequestKind,
        _ read: (inout WireReader) throws(ProtocolError) -> T
    ) throws(KeydClientError) -> T {
        guard answer.status == .ok else { throw .refused(answer.status, request: kind) }
        do throws(ProtocolError) {
            return try answer.decodePayload(kind, read)
        } catch {
            throw .violation(error.description)
        }
    }

    /// Sends `request` and decodes the payload of an `ok` answer with `read`; any other status throws.
    public func request<T>(
        _ request: Request,
        _ read: (inout WireReader) throws(ProtocolError) -> T
    ) throws(KeydClientError) -> T {
        try decode(try roundTrip(request), request.kind, read)
    }

    /// `challenge.issue`: a single-use challenge for `purpose`.
    public func challenge(_ purpose: ChallengePurpose) throws(KeydClientError) -> ChallengeAnswer {
        try request(.challengeIssue(purpose), ChallengeAnswer.read)
    }

    /// `joinEvidence.issue`: this node's join evidence for a serving node's challenge.
    public func joinEvidence(_ evidence: JoinEvidenceRequest) throws(KeydClientError) -> JoinEvidenceAnswer {
        try request(.joinEvidenceIssue(evidence), JoinEvidenceAnswer.read)
    }

    /// `key.release`: the joining node's keys, sealed to its boot key, when keyd grants the release.
    public func releaseKeys(_ release: KeyReleaseRequest) throws(KeydClientError) -> KeyReleaseAnswer {
        try request(.keyRelease(release), KeyReleaseAnswer.read)
    }

    /// `dataKey.release`: a data key for an attested node, sealed to the boot key its evidence binds.
    public func dataKeyRelease(_ release: DataKeyReleaseRequest) throws(KeydClientError) -> DataKeyReleaseAnswer {
        try request(.dataKeyRelease(release), DataKeyReleaseAnswer.read)
    }

    /// `dataKey.open`: keyd opens a data-key envelope sealed to its boot key and answers the data key.
    ///
    /// - Important: the result is key material for the local KMS plugin; the answer's copy is wiped here.
    public func dataKeyOpen(_ open: DataKeyOpenRequest) throws(KeydClientError) -> [UInt8] {
        var answer = try call(.dataKeyOpen(open))
        defer {
            answer.payload.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) }
            receiveBuffer.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) }
        }
        let field: DataKeyOpenAnswer
        do throws(ProtocolError) {
            field = try answer.decodePayload(.dataKeyOpen, DataKeyOpenAnswer.read)
        } catch {
            throw .violation(error.description)
        }
        return Array(answer.payload[field.dataKey.offset..<(field.dataKey.offset + field.dataKey.count)])
    }

    /// `envelope.accept`: hands a key envelope to keyd, which opens it and unlocks the state disk.
    public func acceptEnvelope(
        _ purpose: EnvelopePurpose,
        envelope: [UInt8]
    ) throws(KeydClientError) -> EnvelopeAcceptAnswer {
        try request(.envelopeAccept(purpose, envelope: envelope), EnvelopeAcceptAnswer.read)
    }

    /// `init.accept`: the operator's init (or recovery) envelope with the key and policy it binds; the cluster ID.
    public func acceptInit(
        envelope: [UInt8],
        operatorKey: [UInt8],
        signedPolicy: [UInt8]
    ) throws(KeydClientError) -> InitAcceptAnswer {
        try request(
            .initAccept(InitAcceptRequest(envelope: envelope, operatorKey: operatorKey, signedPolicy: signedPolicy)),
            InitAcceptAnswer.read
        )
    }

    /// `bootKey.get`: keyd's X25519 boot public key.
    public func bootKey() throws(KeydClientError) -> BootKeyAnswer { try request(.bootKeyGet, BootKeyAnswer.read) }

    /// `status`: keyd's phase, counters and audit head.
    public func status() throws(KeydClientError) -> StatusAnswer {
        try decode(try roundTrip(.status), .status, StatusAnswer.read)
    }

    /// `kek.import`: hands keyd the master secret and salt.
    ///
    /// - Important: the frame buffer holding the secrets is wiped after sending.
    public func importKEK(masterSecret: UnsafeRawBufferPointer, salt: UnsafeRawBufferPointer) throws(KeydClientError) {
        guard Limits.masterSecretLength.contains(masterSecret.count) else {
            throw .invalidArgument(
                "master secret is \(masterSecret.count) bytes; keyd needs \(Limits.masterSecretLength.lowerBound)...\(Limits.masterSecretLength.upperBound)"
            )
        }
        guard Limits.saltLength.contains(salt.count) else {
            throw .invalidArgument(
                "salt is \(salt.count) bytes; keyd needs \(Limits.saltLength.lowerBound)...\(Limits.saltLength.upperBound)"
            )
        }
        var frame = RequestFrame.encodeKEKImport(sequence: nextSequence, masterSecret: masterSecret, salt: salt)
        defer { frame.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        let answer = try exchange(frame, kind: .kekImport)
        guard answer.status == .ok else { throw .refused(answer.status, request: .kekImport) }
    }

    /// `kek.lock`: zeroes the KEK inside keyd.
    public func lockKEK() throws(KeydClientError) { _ = try call(.kekLock) }

    /// `audit.read`: up to `maxRecords` records from `firstRecord`.
    public func readAudit(firstRecord: UInt64, maxRecords: UInt16) throws(KeydClientError) -> AuditReadAnswer {
        try decode(
            try roundTrip(.auditRead(firstRecord: firstRecord, maxRecords: maxRecords)),
            .auditRead,
            AuditReadAnswer.read
        )
    }

    /// `audit.verify`: keyd re-reads its log and checks the chain against its head.
    public func verifyAudit() throws(KeydClientError) -> AuditVerifyAnswer {
        try decode(try roundTrip(.auditVerify), .auditVerify, AuditVerifyAnswer.read)
    }

    /// `disk.inspect`: the JSON report keyd makes of `device`.
    public func inspectDisk(device: String) throws(KeydClientError) -> DiskInspectAnswer {
        try decode(try roundTrip(.diskInspect(device: device)), .diskInspect, DiskInspectAnswer.read)
    }

    /// `disk.format`: first-boot format of `device`; keyd keeps the passphrase in memory.
    public func formatDisk(device: String) throws(KeydClientError) { _ = try call(.diskFormat(device: device)) }

    /// `disk.bind`: re-keys `device` from its first-boot passphrase to the KEK-derived key.
    public func bindDisk(device: String) throws(KeydClientError) { _ = try call(.diskBind(device: device)) }

    /// `disk.close`: removes the mapping `mappingName`.
    public func closeDisk(mappingName: String) throws(KeydClientError) {
        _ = try call(.diskClose(mappingName: mappingName))
    }

    /// `disk.reset`: marks `device` for re-initialization; the next `disk.format` starts it afresh.
    public func resetDisk(device: String) throws(KeydClientError) { _ = try call(.diskReset(device: device)) }

    /// `tpm.status`: keyd's JSON report on its TPM (admin).
    public func tpmStatus() throws(KeydClientError) -> TPMStatusAnswer {
        try decode(try roundTrip(.tpmStatus), .tpmStatus, TPMStatusAnswer.read)
    }

    /// `tpm.evidence` (admin) or `evidence.issue` (trustd): a quote document bound to `nonce` and `userDataDigest`.
    public func evidence(
        _ variant: EvidenceVariant,
        nonce: [UInt8],
        userDataDigest: [UInt8],
        asAdmin: Bool = true
    ) throws(KeydClientError) -> EvidenceAnswer {
        let request = EvidenceRequest(variant: variant, nonce: nonce, userDataDigest: userDataDigest)
        let kind: RequestKind = asAdmin ? .tpmEvidence : .evidenceIssue
        return try decode(
            try roundTrip(asAdmin ? .tpmEvidence(request) : .evidenceIssue(request)),
            kind,
            EvidenceAnswer.read
        )
    }

    /// `policy.get`: the signed policy in force and the pinned operator key, each empty when none.
    public func policy() throws(KeydClientError) -> PolicyGetAnswer {
        try decode(try roundTrip(.policyGet), .policyGet, PolicyGetAnswer.read)
    }

    /// `policy.set`: a signed policy in its wire form; keyd checks the signature and the version.
    public func setPolicy(signedPolicy: [UInt8]) throws(KeydClientError) {
        guard signedPolicy.count <= Limits.maxSignedPolicy else {
            throw .invalidArgument(
                "signed policy of \(signedPolicy.count) bytes exceeds limit \(Limits.maxSignedPolicy)"
            )
        }
        _ = try call(.policySet(signedPolicy: signedPolicy))
    }

    /// `operatorKey.pin`: an operator key in its wire form, pinned once before a KEK exists.
    public func pinOperatorKey(_ operatorKey: [UInt8]) throws(KeydClientError) {
        guard operatorKey.count <= Limits.maxOperatorKey else {
            throw .invalidArgument("operator key of \(operatorKey.count) bytes exceeds limit \(Limits.maxOperatorKey)")
        }
        _ = try call(.operatorKeyPin(operatorKey: operatorKey))
    }

    /// `disk.open`: verifies the derived key and activates `mappingName` where a device mapper exists.
    public func openDisk(device: String, mappingName: String) throws(KeydClientError) -> DiskOpenAnswer {
        try decode(
            try roundTrip(.diskOpen(device: device, mappingName: mappingName)),
            .diskOpen,
            DiskOpenAnswer.read
        )
    }
}
