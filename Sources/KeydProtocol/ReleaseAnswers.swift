/// Answers of the sealed-release requests (PROTOCOL.md, "Sealed key release").

/// Answer of `bootKey.get`: this keyd's X25519 boot public key.
public struct BootKeyAnswer: Hashable, Sendable {
    /// The 32-byte X25519 public key, new at every keyd start.
    public var publicKey: [UInt8]

    /// Creates an answer.
    public init(publicKey: [UInt8]) { self.publicKey = publicKey }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) { w.fixed(publicKey, count: 32) }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> BootKeyAnswer {
        BootKeyAnswer(publicKey: try r.fixed(32, "publicKey"))
    }
}

/// Answer of `challenge.issue`: a single-use challenge.
public struct ChallengeAnswer: Hashable, Sendable {
    /// The challenge's 16-byte ID.
    public var challengeID: [UInt8]
    /// The 32-byte nonce the joining node's evidence must bind.
    public var nonce: [UInt8]
    /// Seconds the challenge stays usable.
    public var lifetimeSeconds: UInt32

    /// Creates an answer.
    public init(challengeID: [UInt8], nonce: [UInt8], lifetimeSeconds: UInt32) {
        self.challengeID = challengeID
        self.nonce = nonce
        self.lifetimeSeconds = lifetimeSeconds
    }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) {
        w.fixed(challengeID, count: 16)
        w.fixed(nonce, count: 32)
        w.u32(lifetimeSeconds)
    }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> ChallengeAnswer {
        ChallengeAnswer(
            challengeID: try r.fixed(16, "challengeID"),
            nonce: try r.fixed(32, "nonce"),
            lifetimeSeconds: try r.u32("lifetimeSeconds")
        )
    }
}

/// Answer of `joinEvidence.issue`: the join evidence and what keyd bound into it itself.
public struct JoinEvidenceAnswer: Hashable, Sendable {
    /// The native evidence document whose quote binds the join claims.
    public var document: [UInt8]
    /// This keyd's boot public key, bound into the quote.
    public var bootPublicKey: [UInt8]
    /// The UUID of this keyd's state disk, bound into the quote.
    public var diskUUID: String

    /// Creates an answer.
    public init(document: [UInt8], bootPublicKey: [UInt8], diskUUID: String) {
        self.document = document
        self.bootPublicKey = bootPublicKey
        self.diskUUID = diskUUID
    }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) {
        w.blob32(document, max: Limits.maxEvidenceDocument)
        w.fixed(bootPublicKey, count: 32)
        w.text(diskUUID, max: 36)
    }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> JoinEvidenceAnswer {
        JoinEvidenceAnswer(
            document: try r.blob32(max: Limits.maxEvidenceDocument, "document"),
            bootPublicKey: try r.fixed(32, "bootPublicKey"),
            diskUUID: try r.text(max: 36, "diskUUID")
        )
    }
}

/// Answer of `key.release`: the envelope sealed to the joining node's boot key, and the kubelet
/// certificate keyd signed (empty when none was asked for).
public struct KeyReleaseAnswer: Hashable, Sendable {
    /// The sealed envelope.
    public var envelope: [UInt8]
    /// The kubelet certificate (PEM), or empty.
    public var kubeletCertificate: [UInt8]

    /// Creates an answer.
    public init(envelope: [UInt8], kubeletCertificate: [UInt8] = []) {
        self.envelope = envelope
        self.kubeletCertificate = kubeletCertificate
    }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) {
        w.bytes(envelope, max: Limits.maxEnvelope)
        w.bytes(kubeletCertificate, max: Limits.maxKubeletCSR)
    }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> KeyReleaseAnswer {
        KeyReleaseAnswer(
            envelope: try r.bytes(max: Limits.maxEnvelope, "envelope"),
            kubeletCertificate: try r.bytes(max: Limits.maxKubeletCSR, "kubeletCertificate")
        )
    }
}

/// Answer of `envelope.accept`: what keyd did with the keys it received.
public struct EnvelopeAcceptAnswer: Hashable, Sendable {
    /// The state disk opens with the received disk key (re-keyed to it first when never initialized).
    public var diskOpened: Bool
    /// `/dev/mapper/<name>` was activated (false where there is no device mapper).
    public var activated: Bool
    /// keyd now holds the cluster's KEK (a control-plane envelope).
    public var holdsKEK: Bool
    /// The cluster ID PCR 15 was marked with.
    public var clusterID: [UInt8]

    /// Creates an answer.
    public init(diskOpened: Bool, activated: Bool, holdsKEK: Bool, clusterID: [UInt8]) {
        self.diskOpened = diskOpened
        self.activated = activated
        self.holdsKEK = holdsKEK
        self.clusterID = clusterID
    }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) {
        w.bool(diskOpened)
        w.bool(activated)
        w.bool(holdsKEK)
        w.fixed(clusterID, count: 32)
    }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> EnvelopeAcceptAnswer {
        EnvelopeAcceptAnswer(
            diskOpened: try r.bool("diskOpened"),
            activated: try r.bool("activated"),
            holdsKEK: try r.bool("holdsKEK"),
            clusterID: try r.fixed(32, "clusterID")
        )
    }
}

/// Answer of `init.accept`: the cluster's ID.
public struct InitAcceptAnswer: Hashable, Sendable {
    /// HKDF(measurementSecret, measurementSalt, "key-clusterID", 32).
    public var clusterID: [UInt8]

    /// Creates an answer.
    public init(clusterID: [UInt8]) { self.clusterID = clusterID }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) { w.fixed(clusterID, count: 32) }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> InitAcceptAnswer {
        InitAcceptAnswer(clusterID: try r.fixed(32, "clusterID"))
    }
}

/// Answer of `policy.get`: the signed policy in force and the pinned operator key (each empty when none).
public struct PolicyGetAnswer: Hashable, Sendable {
    /// The signed policy as keyd accepted it.
    public var signedPolicy: [UInt8]
    /// The pinned operator key (`algorithm u8 | key`).
    public var operatorKey: [UInt8]

    /// Creates an answer.
    public init(signedPolicy: [UInt8], operatorKey: [UInt8]) {
        self.signedPolicy = signedPolicy
        self.operatorKey = operatorKey
    }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) {
        w.bytes(signedPolicy, max: Limits.maxSignedPolicy)
        w.bytes(operatorKey, max: Limits.maxOperatorKey)
    }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> PolicyGetAnswer {
        PolicyGetAnswer(
            signedPolicy: try r.bytes(max: Limits.maxSignedPolicy, "signedPolicy"),
            operatorKey: try r.bytes(max: Limits.maxOperatorKey, "operatorKey")
        )
    }
}

/// Answer of `compat.release` (Constellation compatibility): the keys in plain, as positions in the
/// frame body. The client copies them into its key storage and wipes the body.
///
/// - Important: with `dataKey.open`'s (a data key only), the one answer of protocol v1 that carries key
///   bytes; keyd sends it only when its configuration enables Constellation compatibility.
public struct CompatReleaseAnswer: Hashable, Sendable {
    /// The 32-byte state-disk key.
    public var diskKey: SecretField
    /// The 32-byte measurement secret.
    public var measurementSecret: SecretField
    /// The 32-byte measurement salt (not secret).
    public var measurementSalt: [UInt8]
    /// Control planes: the master secret; workers: empty.
    public var masterSecret: SecretField
    /// Control planes: the salt; workers: empty.
    public var salt: SecretField

    /// Reads the payload (positions of the secrets in `r`'s buffer).
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> CompatReleaseAnswer {
        let disk = try r.secret(max: 32, "diskKey")
        let measurement = try r.secret(max: 32, "measurementSecret")
        let measurementSalt = try r.fixed(32, "measurementSalt")
        return CompatReleaseAnswer(
            diskKey: disk,
            measurementSecret: measurement,
            measurementSalt: measurementSalt,
            masterSecret: try r.secret(max: Limits.masterSecretLength.upperBound, "masterSecret"),
            salt: try r.secret(max: Limits.saltLength.upperBound, "salt")
        )
    }
}

/// Answer of `dataKey.release`: the data key sealed to the requesting node's boot key.
public struct DataKeyReleaseAnswer: Hashable, Sendable {
    /// The data-key envelope.
    public var envelope: [UInt8]

    /// Creates an answer.
    public init(envelope: [UInt8]) { self.envelope = envelope }

    /// Writes the payload.
    public func write(_ w: inout WireWriter) { w.bytes(envelope, max: Limits.maxDataKeyEnvelope) }

    /// Reads the payload.
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> DataKeyReleaseAnswer {
        DataKeyReleaseAnswer(envelope: try r.bytes(max: Limits.maxDataKeyEnvelope, "envelope"))
    }
}

/// Answer of `dataKey.open`: the data key, as its position in the frame body. The client copies it
/// out and wipes the body.
///
/// - Important: besides Constellation compatibility, the one answer that carries key bytes: a data key
///   for the node's own Kubernetes KMS plugin, never a KEK, disk key or measurement secret.
public struct DataKeyOpenAnswer: Hashable, Sendable {
    /// The data key, 16…64 bytes.
    public var dataKey: SecretField

    /// Reads the payload (the key's position in `r`'s buffer).
    public static func read(_ r: inout WireReader) throws(ProtocolError) -> DataKeyOpenAnswer {
        let key = try r.secret(max: Limits.dataKeyLength.upperBound, "dataKey")
        guard Limits.dataKeyLength.contains(key.count) else {
            throw .fieldLength(field: "dataKey", length: key.count, bounds: Limits.dataKeyLength)
        }
        return DataKeyOpenAnswer(dataKey: key)
    }
}
