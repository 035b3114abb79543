import ATLS
import ATLSTransport
import AsterismProto
import FoundationEssentials
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import KeydClient
import KeydCore
import KeydProtocol
import Logging
import NIOPosix
import TrustdCore

#if canImport(Glibc)
import Glibc
#endif

/// `kms.API/GetDataKey` on a control plane's `kms-listen`: the caller attests in the aTLS handshake with
/// join evidence to a challenge of purpose dataKey (the listener's ``KeydChallengeSource``), and keyd's
/// `dataKey.release` decides and seals the data key to the caller's boot key. The answer carries only
/// `sealed_data_key`; `data_key` stays empty. Refusals reach the client as a code and a fixed short
/// reason; the full reason goes to the log (and keyd's audit).
public struct KMSService: Kms_API.SimpleServiceProtocol {
    /// keyd.
    public let keyd: KeydGateway
    /// The KMS listener's connections, for each caller's challenge and claim.
    public let peers: ATLSPeerRegistry
    /// Admission in front of keyd.
    public let admission: any RequestAdmission
    public let logger: Logger

    public init(
        keyd: KeydGateway,
        peers: ATLSPeerRegistry,
        admission: any RequestAdmission = UnlimitedAdmission(),
        logger: Logger
    ) {
        self.keyd = keyd
        self.peers = peers
        self.admission = admission
        self.logger = logger
    }

    public func getDataKey(
        request: Kms_GetDataKeyRequest,
        context: ServerContext
    ) async throws -> Kms_GetDataKeyResponse {
        let source = AdmissionSource.key(grpcPeer: context.remotePeer)
        var log = logger
        log[metadataKey: "source"] = "\(source)"
        log[metadataKey: "node"] = "\(request.nodeName.prefix(253))"
        do {
            let response = try await admission.withAdmission(source: source) {
                () async throws -> Kms_GetDataKeyResponse in
                guard let connection = peers.connection(forPeer: context.remotePeer),
                    let challengeID = connection.challengeID, let claim = connection.claim
                else {
                    throw JoinRefusal(.unauthenticated, "attestation required", reason: "no attested connection")
                }
                let release = try Self.releaseRequest(request, challengeID: challengeID, evidence: claim.document)
                    .with(certificateKeyHash: claim.keyHash)
                let answer: DataKeyReleaseAnswer
                do {
                    answer = try await keyd.call { try $0.dataKeyRelease(release) }
                } catch let error as KeydClientError {
                    throw JoinRefusal(keyd: error)
                }
                var response = Kms_GetDataKeyResponse()
                response.sealedDataKey = Data(answer.envelope)
                return response
            }
            log.info("data key released", metadata: ["dataKeyID": "\(request.dataKeyID.prefix(128))"])
            return response
        } catch let refusal as JoinRefusal {
            log.warning("data key refused", metadata: ["reason": "\(refusal.reason)"])
            throw refusal.rpcError
        } catch let error as RPCError {
            log.notice("data key request not admitted", metadata: ["reason": "\(error.message)"])
            throw error
        } catch {
            log.error("data key request failed", metadata: ["reason": "\(error)"])
            throw RPCError(code: .internalError, message: "internal error")
        }
    }

    /// keyd's request for `request`, once its fields fit keyd's wire bounds (keyd checks the rest and
    /// audits it); a field that does not fit is refused here.
    static func releaseRequest(
        _ request: Kms_GetDataKeyRequest,
        challengeID: [UInt8],
        evidence: [UInt8]
    ) throws -> DataKeyReleaseRequest {
        try KeydRequestFields.check(
            bootPublicKey: Array(request.bootPublicKey),
            diskUUID: request.diskUuid,
            nodeName: request.nodeName,
            evidence: evidence
        )
        guard request.dataKeyID.utf8.count <= Limits.maxDataKeyIDField, request.length <= UInt8.max else {
            throw JoinRefusal(
                .invalidArgument,
                "request refused",
                reason: "data key ID of \(request.dataKeyID.utf8.count) bytes or length \(request.length) out of bounds"
            )
        }
        return DataKeyReleaseRequest(
            challengeID: challengeID,
            evidence: evidence,
            certificateKeyHash: [],
            bootPublicKey: Array(request.bootPublicKey),
            diskUUID: request.diskUuid,
            role: request.isControlPlane ? .controlPlane : .worker,
            nodeName: request.nodeName,
            dataKeyID: request.dataKeyID,
            length: UInt8(request.length)
        )
    }
}

extension DataKeyReleaseRequest {
    /// The request with `hash` as its certificate key hash.
    func with(certificateKeyHash hash: [UInt8]) -> DataKeyReleaseRequest {
        var copy = self
        copy.certificateKeyHash = hash
        return copy
    }
}

/// The bounds keyd's wire format puts on the fields a remote caller chooses; a request that breaks them
/// would not encode, so trustd refuses it before keyd (`invalidArgument`, "request refused").
enum KeydRequestFields {
    static func check(bootPublicKey: [UInt8], diskUUID: String, nodeName: String, evidence: [UInt8]) throws {
        guard bootPublicKey.count == BootKey.publicKeyLength, diskUUID.utf8.count == 36,
            (1...Limits.maxNodeName).contains(nodeName.utf8.count), evidence.count <= Limits.maxEvidence
        else {
            throw JoinRefusal(
                .invalidArgument,
                "request refused",
                reason:
                    "boot key of \(bootPublicKey.count) bytes (32), disk UUID of \(diskUUID.utf8.count) (36), node name of \(nodeName.utf8.count) (1…\(Limits.maxNodeName)) or evidence of \(evidence.count) (≤ \(Limits.maxEvidence))"
            )
        }
    }
}

/// `kms.API/GetDataKey` on this node's local socket (`kms-socket`) for the Kubernetes KMS plugin: the ID
/// and length are checked, then a control plane's `kms-listen` is asked over a fresh mutual aTLS
/// connection (its attestation verified before anything is sent; this node attests with join evidence
/// from its keyd), and the sealed key it answers is opened by this node's keyd (`dataKey.open`).
public struct LocalKMSService: Kms_API.SimpleServiceProtocol {
    /// The control planes' `kms-listen` endpoints, tried in order.
    public let endpoints: [HostPort]
    /// How each endpoint is called.
    let call: AttestedCall
    /// One endpoint's limit (handshake and call).
    public let callTimeout: Duration
    public let logger: Logger

    public init(
        endpoints: [HostPort],
        keydSocketPath: String,
        role: NodeRole,
        nodeName: String,
        serviceVerifier: ATLSVerifier,
        callTimeout: Duration,
        threadPool: NIOThreadPool,
        logger: Logger
    ) {
        self.endpoints = endpoints
        call = AttestedCall(
            keydSocketPath: keydSocketPath,
            role: role,
            nodeName: nodeName,
            serviceVerifier: serviceVerifier,
            threadPool: threadPool
        )
        self.callTimeout = callTimeout
        self.logger = logger
    }

    public func getDataKey(
        request: Kms_GetDataKeyRequest,
        context: ServerContext
    ) async throws -> Kms_GetDataKeyResponse {
        let id: DataKeyID
        let length: Int
        do throws(CoreError) {
            id = try DataKeyID(validating: request.dataKeyID)
            length = try DataKeyID.checkedLength(Int(clamping: request.length))
        } catch {
            // The caller is local and the ID its own: the message names the rule and the limit.
            throw RPCError(code: .invalidArgument, message: error.message)
        }
        var last = "no endpoint configured"
        // A few rounds over the endpoints with a growing pause, all within the call timeout: a control plane
        // that refuses a connection for a moment (a handshake cap, keyd's evidence rate) is asked again.
        let clock = ContinuousClock()
        let deadline = clock.now + callTimeout
        for round in 0..<5 {
            if round > 0 {
                let pause = Duration.milliseconds(min(100 << round, 2000))
                guard clock.now + pause < deadline else { break }
                try await Task.sleep(for: pause)
            }
            for endpoint in endpoints {
                do {
                    let envelope = try await sealedKey(id: id, length: length, from: endpoint)
                    let key = try await open(envelope, id: id, length: length)
                    var response = Kms_GetDataKeyResponse()
                    response.dataKey = Data(key)
                    logger.info("data key served", metadata: ["dataKeyID": "\(id)", "endpoint": "\(endpoint)"])
                    return response
                } catch let error as RPCError where [.invalidArgument, .permissionDenied].contains(error.code) {
                    // The key service decided: another endpoint of the same cluster decides alike.
                    logger.warning("data key refused", metadata: ["endpoint": "\(endpoint)", "reason": "\(error)"])
                    throw RPCError(code: error.code, message: "the key service refused the data key")
                } catch {
                    last = "\(endpoint): \(error)"
                    logger.warning("data key attempt failed", metadata: ["reason": "\(last)"])
                }
            }
        }
        logger.error("no key service answered", metadata: ["last": "\(last)"])
        throw RPCError(code: .unavailable, message: "no key service answered")
    }

    /// `GetDataKey` at `endpoint`, with the fields this node's join evidence bound in the handshake.
    private func sealedKey(id: DataKeyID, length: Int, from endpoint: HostPort) async throws -> [UInt8] {
        let role = call.role
        let nodeName = call.nodeName
        let response = try await call.run(endpoint: endpoint, timeout: callTimeout) { grpc, options, recorder in
            let answer: Kms_GetDataKeyResponse = try await grpc.attestedUnary(
                Kms_API.Method.GetDataKey.descriptor,
                options: options
            ) {
                let bound = try recorder.answer()
                var request = Kms_GetDataKeyRequest()
                request.dataKeyID = id.text
                request.length = UInt32(length)
                request.bootPublicKey = Data(bound.bootPublicKey)
                request.diskUuid = bound.diskUUID
                request.isControlPlane = role == .controlPlane
                request.nodeName = nodeName
                return request
            }
            return answer
        }
        guard response.dataKey.isEmpty, !response.sealedDataKey.isEmpty else {
            throw RPCError(code: .internalError, message: "the key service answered no sealed key (or a plain one)")
        }
        return Array(response.sealedDataKey)
    }

    /// `dataKey.open` with this node's keyd, on the thread pool (the client blocks).
    private func open(_ envelope: [UInt8], id: DataKeyID, length: Int) async throws -> [UInt8] {
        let socket = call.keydSocketPath
        return try await call.threadPool.runIfActive {
            let connection = try KeydConnection(path: socket)
            defer { connection.close() }
            return try connection.dataKeyOpen(
                DataKeyOpenRequest(dataKeyID: id.text, length: UInt8(length), envelope: envelope)
            )
        }
    }
}

/// The local KMS socket: made fresh at start (a stale socket at the path is removed, anything else there
/// is refused), mode 0600 before it listens, so no connection ever reaches it with wider permissions.
public enum LocalKMSSocket {
    /// A listening Unix socket at `path`, for `HTTP2ServerTransport.Posix(listeningSocketDescriptor:)`.
    public static func listen(path: String) throws -> Int32 {
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else {
                throw TrustdStartError("kms-socket \(path) exists and is not a socket; not removed")
            }
            guard unlink(path) == 0 else { throw TrustdStartError("kms-socket \(path): unlink: errno \(errno)") }
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw TrustdStartError("kms-socket \(path) is longer than a socket path may be")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TrustdStartError("kms-socket \(path): socket: errno \(errno)") }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        // Bound but not listening: a connect is refused until the mode is 0600.
        guard bound == 0, chmod(path, 0o600) == 0, Glibc.listen(fd, 128) == 0 else {
            let saved = errno
            close(fd)
            throw TrustdStartError("kms-socket \(path): bind, chmod or listen: errno \(saved)")
        }
        return fd
    }
}
