import AsterismProto
import FoundationEssentials
import GRPCCore
import KeydClient
import KeydCore
import KeydProtocol
import Logging
import Synchronization
import TrustdCore

/// Hands keyd the operator's init or recovery envelope with the operator key and policy it binds
/// (`init.accept`); answers the cluster ID.
public protocol InitAcceptor: Sendable {
    func acceptInit(envelope: [UInt8], operatorKey: [UInt8], signedPolicy: [UInt8]) async throws -> [UInt8]
    /// `policy.set`: the policy version and digest in force once keyd accepted it.
    func setPolicy(_ signedPolicy: [UInt8]) async throws -> (version: UInt64, digest: [UInt8])
}

/// ``InitAcceptor`` through trustd's keyd gateway.
public struct KeydInitAcceptor: InitAcceptor {
    public let gateway: KeydGateway

    public init(gateway: KeydGateway) { self.gateway = gateway }

    public func acceptInit(envelope: [UInt8], operatorKey: [UInt8], signedPolicy: [UInt8]) async throws -> [UInt8] {
        try await gateway.call {
            try $0.acceptInit(envelope: envelope, operatorKey: operatorKey, signedPolicy: signedPolicy).clusterID
        }
    }

    public func setPolicy(_ signedPolicy: [UInt8]) async throws -> (version: UInt64, digest: [UInt8]) {
        try await gateway.call { keyd in
            try keyd.setPolicy(signedPolicy: signedPolicy)
            let status = try keyd.status()
            return (status.policyVersion, status.policyDigest)
        }
    }
}

/// What runs on the node after keyd accepted an init: `kubeadm init`, answering the admin kubeconfig.
public protocol ControlPlaneInitializer: Sendable {
    /// Starts the cluster's first control plane; `log` streams progress lines to the operator.
    func initialize(clusterID: [UInt8], log: @Sendable (String) async throws -> Void) async throws -> [UInt8]
}

/// The operator's two requests to a control plane that holds no KEK, both carried unopened to keyd's
/// `init.accept`: Init (`init.API/Init`, the first control plane of a new cluster) and Recover
/// (`recoverproto.API/Recover`, a control plane that cannot reach another one). The master secret travels
/// sealed to keyd's boot key and bound to the operator key and policy beside it, so this process relays
/// ciphertext only and cannot substitute either. keyd decides: a node that holds a KEK answers
/// `wrongPhase` (initialized already), a pinned operator key refuses any other, and a refusal before the
/// KEK is imported leaves the request usable. One init or recovery at a time. The same listener takes the
/// operator's policy push (`policy.API/Push`), relayed to keyd's `policy.set`, which accepts only a policy the
/// pinned key signed with a higher version. Refusals reach the peer as a status and a fixed short reason; the
/// full reason goes to the log and keyd's audit.
public final class BootstrapRequests: Sendable {
    /// keyd.
    let keyd: any InitAcceptor
    /// Runs after a successful init; nil: this node runs no kubeadm (the log says so).
    let initializer: (any ControlPlaneInitializer)?
    /// Called once keyd holds the cluster's KEK (init or recovery).
    let holdsKEK: @Sendable () -> Void
    let logger: Logger
    /// Whether a request is being served.
    private let busy = Mutex(false)

    public init(
        keyd: any InitAcceptor,
        initializer: (any ControlPlaneInitializer)?,
        logger: Logger,
        holdsKEK: @escaping @Sendable () -> Void = {}
    ) {
        self.keyd = keyd
        self.initializer = initializer
        self.logger = logger
        self.holdsKEK = holdsKEK
    }

    /// The gRPC services: Init, Recover and the policy push.
    public var services: [any RegistrableRPCService] {
        [InitService(requests: self), RecoverService(requests: self), PolicyPushService(requests: self)]
    }

    /// `policy.set` with the operator's pushed policy; answers the version and digest keyd holds then.
    func push(signedPolicy: Data, peer: String) async throws -> (version: UInt64, digest: [UInt8]) {
        var log = logger
        log[metadataKey: "request"] = "policy.push"
        log[metadataKey: "peer"] = "\(peer)"
        guard !signedPolicy.isEmpty, signedPolicy.count <= SignedPolicy.maximumLength else {
            log.warning("Refused: signed policy empty or too long", metadata: ["bytes": "\(signedPolicy.count)"])
            throw RPCError(
                code: .invalidArgument,
                message: "signed_policy is empty or longer than \(SignedPolicy.maximumLength) bytes"
            )
        }
        do {
            let status = try await keyd.setPolicy(Array(signedPolicy))
            log.notice("keyd accepted the pushed policy", metadata: ["policy.version": "\(status.version)"])
            return status
        } catch let error as KeydClientError {
            log.error("keyd refused the pushed policy", metadata: ["reason": "\(error)"])
            switch error.refusal {
            case .policyRejected?:
                throw RPCError(
                    code: .permissionDenied,
                    message: "policy refused: not signed by the pinned key, or not newer"
                )
            case .wrongPhase?: throw RPCError(code: .failedPrecondition, message: "this node holds no cluster key")
            case .some: throw RPCError(code: .internalError, message: "keyd refused the request")
            case nil: throw RPCError(code: .unavailable, message: "keyd is unavailable")
            }
        } catch {
            log.error("keyd unreachable", metadata: ["reason": "\(error)"])
            throw RPCError(code: .unavailable, message: "keyd is unavailable")
        }
    }

    /// Which request a peer made.
    enum Kind: String {
        case initialize = "init"
        case recover
    }

    /// Checks the sealed fields' sizes, refuses Constellation's plain master secret, and runs `init.accept`
    /// alone; answers the cluster ID or throws a sanitized RPCError.
    func accept(
        _ kind: Kind,
        sealedMasterSecret: Data,
        operatorKey: Data,
        signedPolicy: Data,
        plainSecret: String,
        peer: String
    ) async throws -> [UInt8] {
        var log = logger
        log[metadataKey: "request"] = "\(kind.rawValue)"
        log[metadataKey: "peer"] = "\(peer)"
        guard plainSecret.isEmpty else {
            log.warning("Refused: the request carries the master secret in plain (Constellation's kms_uri)")
            throw RPCError(code: .invalidArgument, message: "plain master secrets are refused; seal it to keyd")
        }
        let limits: [(String, Int, Int)] = [
            ("sealed_master_secret", sealedMasterSecret.count, InitEnvelope.maximumLength),
            ("operator_public_key", operatorKey.count, Limits.maxOperatorKey),
            ("signed_policy", signedPolicy.count, SignedPolicy.maximumLength),
        ]
        for (field, count, limit) in limits where count == 0 || count > limit {
            log.warning("Refused: a field is empty or too long", metadata: ["field": "\(field)", "bytes": "\(count)"])
            throw RPCError(code: .invalidArgument, message: "\(field) is empty or longer than \(limit) bytes")
        }
        let claimed = busy.withLock { busy in
            defer { busy = true }
            return !busy
        }
        guard claimed else {
            log.notice("Refused: another init or recovery is in progress")
            throw RPCError(code: .resourceExhausted, message: "another init or recovery is in progress")
        }
        defer { busy.withLock { $0 = false } }
        log.info("Handing the sealed master secret to keyd")
        do {
            let clusterID = try await keyd.acceptInit(
                envelope: Array(sealedMasterSecret),
                operatorKey: Array(operatorKey),
                signedPolicy: Array(signedPolicy)
            )
            log.notice("keyd holds the cluster's KEK", metadata: ["clusterID": "\(hexString(clusterID))"])
            holdsKEK()
            return clusterID
        } catch let error as KeydClientError {
            let (code, message) = Self.sanitized(error)
            log.error("keyd refused", metadata: ["reason": "\(error)"])
            throw RPCError(code: code, message: message)
        } catch {
            log.error("keyd unreachable", metadata: ["reason": "\(error)"])
            throw RPCError(code: .unavailable, message: "keyd is unavailable")
        }
    }

    /// The status and fixed reason a peer gets for keyd's refusal.
    static func sanitized(_ error: KeydClientError) -> (RPCError.Code, String) {
        switch error.refusal {
        case .wrongPhase?, .alreadyUsed?: (.failedPrecondition, "this node holds a cluster key already")
        case .policyRejected?: (.permissionDenied, "operator key or policy refused")
        case .envelopeRejected?: (.invalidArgument, "sealed master secret refused")
        case .some(let status) where status.isDiskStatus:
            (.internalError, "the cluster key is held, but the state disk did not unlock")
        case .some: (.internalError, "keyd refused the request")
        case nil: (.unavailable, "keyd is unavailable")
        }
    }
}

/// `init.API/Init`.
struct InitService: Init_API.SimpleServiceProtocol {
    let requests: BootstrapRequests

    func `init`(
        request: Init_InitRequest,
        response: RPCWriter<Init_InitResponse>,
        context: ServerContext
    ) async throws {
        let clusterID = try await requests.accept(
            .initialize,
            sealedMasterSecret: request.sealedMasterSecret,
            operatorKey: request.operatorPublicKey,
            signedPolicy: request.signedPolicy,
            plainSecret: request.kmsUri,
            peer: context.remotePeer
        )
        @Sendable func log(_ line: String) async throws {
            var message = Init_InitResponse()
            message.log.log = Data((line + "\n").utf8)
            try await response.write(message)
        }
        try await log("keyd accepted the master secret; cluster ID \(hexString(clusterID))")
        var kubeconfig: [UInt8] = []
        if let initializer = requests.initializer {
            do {
                kubeconfig = try await initializer.initialize(clusterID: clusterID, log: log)
            } catch {
                requests.logger.error("kubeadm init failed", metadata: ["reason": "\(error)"])
                var failure = Init_InitResponse()
                failure.initFailure.error = "kubeadm init failed; see the node's log"
                try await response.write(failure)
                return
            }
        } else {
            try await log("no kubeadm configured on this node: no Kubernetes control plane was started")
        }
        var success = Init_InitResponse()
        success.initSuccess.clusterID = Data(clusterID)
        success.initSuccess.kubeconfig = Data(kubeconfig)
        try await response.write(success)
    }
}

/// `recoverproto.API/Recover`.
struct RecoverService: Recoverproto_API.SimpleServiceProtocol {
    let requests: BootstrapRequests

    func recover(
        request: Recoverproto_RecoverMessage,
        context: ServerContext
    ) async throws
        -> Recoverproto_RecoverResponse
    {
        let clusterID = try await requests.accept(
            .recover,
            sealedMasterSecret: request.sealedMasterSecret,
            operatorKey: request.operatorPublicKey,
            signedPolicy: request.signedPolicy,
            plainSecret: request.kmsUri,
            peer: context.remotePeer
        )
        var answer = Recoverproto_RecoverResponse()
        answer.clusterID = Data(clusterID)
        return answer
    }
}

/// `policy.API/Push`.
struct PolicyPushService: Policy_API.SimpleServiceProtocol {
    let requests: BootstrapRequests

    func push(request: Policy_PushRequest, context: ServerContext) async throws -> Policy_PushResponse {
        let (version, digest) = try await requests.push(signedPolicy: request.signedPolicy, peer: context.remotePeer)
        var answer = Policy_PushResponse()
        answer.version = version
        answer.digest = Data(digest)
        return answer
    }
}

extension StatusCode {
    /// A state-disk status (the KEK may be held while the disk stayed locked).
    var isDiskStatus: Bool { (48..<64).contains(rawValue) }
}

/// Lowercase hex.
func hexString(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

/// `kubeadm init` after keyd accepted an init: the configuration rendered 0600 into the output directory,
/// kubeadm run (its output in the node's log), then the admin kubeconfig kubeadm wrote, read back bounded.
public struct KubeadmControlPlaneInitializer: ControlPlaneInitializer {
    public let runner: any KubeadmRunner
    public let configuration: KubeadmInitConfiguration
    /// Where the configuration file goes.
    public let outputDirectory: String
    /// The admin kubeconfig kubeadm writes (`/etc/kubernetes/admin.conf`).
    public let adminKubeconfig: String

    public init(
        runner: any KubeadmRunner,
        configuration: KubeadmInitConfiguration,
        outputDirectory: String,
        adminKubeconfig: String
    ) {
        self.runner = runner
        self.configuration = configuration
        self.outputDirectory = outputDirectory
        self.adminKubeconfig = adminKubeconfig
    }

    public func initialize(clusterID: [UInt8], log: @Sendable (String) async throws -> Void) async throws -> [UInt8] {
        let file = try KubeadmConfigFile.write(configuration, directory: outputDirectory)
        try await log("running kubeadm init (its output is in the node's log)")
        try await runner.initialize(configuration, configFile: file)
        try await log("kubeadm init completed")
        return try BoundedFile.read(adminKubeconfig, limit: 1 << 20)
    }
}

/// `kubeadm init` handed to its own root unit (`kubeadm-handoff`): the 0600 configuration written where
/// `asterism-kubeadm-init.path` watches for it; Init answers without a kubeconfig (kubeadm writes
/// `/etc/kubernetes/admin.conf` on the node).
public struct KubeadmInitHandoff: ControlPlaneInitializer {
    public let configuration: KubeadmInitConfiguration
    public let outputDirectory: String

    public init(configuration: KubeadmInitConfiguration, outputDirectory: String) {
        self.configuration = configuration
        self.outputDirectory = outputDirectory
    }

    public func initialize(clusterID: [UInt8], log: @Sendable (String) async throws -> Void) async throws -> [UInt8] {
        let file = try KubeadmConfigFile.write(configuration, directory: outputDirectory)
        try await log("kubeadm init handed to asterism-kubeadm-init.service (root) with \(file)")
        try await log("the admin kubeconfig will be /etc/kubernetes/admin.conf on the node")
        return []
    }
}
