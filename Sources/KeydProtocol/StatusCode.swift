/// The closed list of answer statuses (PROTOCOL.md, "Status codes"). Code 13 (`kekPresent`) is retired:
/// `kek.import` while a KEK is held is `wrongPhase`, and 13 is never reused.
public enum StatusCode: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case ok = 0
    case unsupported = 1
    case malformed = 2
    case unknownRequest = 3
    case denied = 4
    case wrongPhase = 5
    case versionUnsupported = 6
    case sequenceError = 7
    case frameLength = 8
    case helloRequired = 9
    case alreadyUsed = 10
    case invalidArgument = 11
    case kekAbsent = 12
    case auditFailure = 14
    case `internal` = 15
    case busy = 16
    case timeout = 17
    case rateLimited = 18
    case tpmFailure = 32
    case evidenceRejected = 33
    case challengeUnknown = 34
    case challengeExpired = 35
    case policyRejected = 36
    case tpmUnavailable = 37
    case stateRejected = 38
    case revoked = 39
    case challengeEvicted = 40
    case envelopeRejected = 41
    case policyMissing = 42
    case diskMissing = 48
    case diskNotLUKS2 = 49
    case diskHeaderRejected = 50
    case diskWrongKey = 51
    case diskBusy = 52
    case diskHeadersDestroyed = 53
    case diskActivationUnavailable = 54
    case diskNotInitialized = 55
    case diskIOError = 56
    case diskUnusable = 57

    /// Whether keyd closes the connection after answering with this status.
    public var closesConnection: Bool {
        switch self {
        case .malformed, .unknownRequest, .denied, .versionUnsupported, .sequenceError,
            .frameLength, .helloRequired, .alreadyUsed, .busy, .timeout:
            return true
        default:
            return false
        }
    }

    /// The name used in PROTOCOL.md, audit records and keydctl output.
    public var description: String {
        switch self {
        case .ok: "ok"
        case .unsupported: "unsupported"
        case .malformed: "malformed"
        case .unknownRequest: "unknownRequest"
        case .denied: "denied"
        case .wrongPhase: "wrongPhase"
        case .versionUnsupported: "versionUnsupported"
        case .sequenceError: "sequenceError"
        case .frameLength: "frameLength"
        case .helloRequired: "helloRequired"
        case .alreadyUsed: "alreadyUsed"
        case .invalidArgument: "invalidArgument"
        case .kekAbsent: "kekAbsent"
        case .auditFailure: "auditFailure"
        case .internal: "internal"
        case .busy: "busy"
        case .timeout: "timeout"
        case .rateLimited: "rateLimited"
        case .tpmFailure: "tpmFailure"
        case .evidenceRejected: "evidenceRejected"
        case .challengeUnknown: "challengeUnknown"
        case .challengeExpired: "challengeExpired"
        case .policyRejected: "policyRejected"
        case .tpmUnavailable: "tpmUnavailable"
        case .stateRejected: "stateRejected"
        case .revoked: "revoked"
        case .challengeEvicted: "challengeEvicted"
        case .envelopeRejected: "envelopeRejected"
        case .policyMissing: "policyMissing"
        case .diskMissing: "diskMissing"
        case .diskNotLUKS2: "diskNotLUKS2"
        case .diskHeaderRejected: "diskHeaderRejected"
        case .diskWrongKey: "diskWrongKey"
        case .diskBusy: "diskBusy"
        case .diskHeadersDestroyed: "diskHeadersDestroyed"
        case .diskActivationUnavailable: "diskActivationUnavailable"
        case .diskNotInitialized: "diskNotInitialized"
        case .diskIOError: "diskIOError"
        case .diskUnusable: "diskUnusable"
        }
    }

    /// One sentence for operators, safe to show to any peer.
    public var explanation: String {
        switch self {
        case .ok: "done"
        case .unsupported: "this keyd does not serve that request yet"
        case .malformed: "the request payload does not decode"
        case .unknownRequest: "the request kind is not in keyd's table"
        case .denied: "this peer may not send that request"
        case .wrongPhase: "the request is not allowed in keyd's current phase"
        case .versionUnsupported: "no common protocol version"
        case .sequenceError: "request sequence number out of order"
        case .frameLength: "frame length out of range"
        case .helloRequired: "the first request must be hello"
        case .alreadyUsed: "that request may be used only once"
        case .invalidArgument: "a request value was refused"
        case .kekAbsent: "keyd holds no key-encryption key"
        case .auditFailure: "the audit record could not be written; nothing was done"
        case .internal: "keyd failed; see its log"
        case .busy: "keyd's connections on this socket (or from this user) are at their limit"
        case .timeout: "a frame was not completed in time, hello did not come in time, or the connection was idle"
        case .rateLimited: "this peer asked for more TPM work than its rate allows; retry later"
        case .tpmFailure: "the TPM refused or failed"
        case .evidenceRejected: "the evidence failed validation"
        case .challengeUnknown: "no such challenge, or it was already used"
        case .challengeExpired: "the challenge expired"
        case .policyRejected: "the policy was refused"
        case .tpmUnavailable: "keyd has no TPM (none configured, or it could not be opened at start)"
        case .stateRejected:
            "an entry of keyd's state directory is not what keyd made (a symlink, FIFO or device); nothing was done"
        case .revoked: "the policy revokes this disk or attestation key"
        case .challengeEvicted: "the challenge was evicted by newer ones before it was used"
        case .envelopeRejected:
            "the envelope does not open with this keyd's boot key, or binds another disk, node or role"
        case .policyMissing: "keyd holds no measurement policy yet (init.accept or policy.set first)"
        case .diskMissing: "no such device"
        case .diskNotLUKS2: "the device holds no LUKS2 header"
        case .diskHeaderRejected: "the LUKS2 header was refused (a value fits no known profile)"
        case .diskWrongKey: "no keyslot opens with this key (or the keyslot area is damaged)"
        case .diskBusy: "the device is in use"
        case .diskHeadersDestroyed: "both LUKS2 headers are unreadable"
        case .diskActivationUnavailable: "key verified; no device mapper here to activate it"
        case .diskNotInitialized: "the state disk was never bound"
        case .diskIOError: "the device could not be read or written (I/O error, read-only, no space)"
        case .diskUnusable: "the path names nothing keyd uses as a disk (not a block device or image file, or refused)"
        }
    }
}

/// Who is on the other end of a connection, decided once from SO_PEERCRED and the socket.
public enum PeerClass: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// A peer keyd does not know; every request is denied.
    case stranger = 0
    /// The unprivileged network daemon on the trustd socket.
    case trustd = 1
    /// An administrator on the admin socket.
    case admin = 2

    public var description: String {
        switch self {
        case .stranger: "stranger"
        case .trustd: "trustd"
        case .admin: "admin"
        }
    }
}

/// keyd's lifecycle phase, shared by all connections.
public enum Phase: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// No key-encryption key is held.
    case awaitingKEK = 0
    /// A key-encryption key is held.
    case holdingKEK = 1
    /// The key-encryption key was zeroed by `kek.lock`.
    case locked = 2

    public var description: String {
        switch self {
        case .awaitingKEK: "awaitingKEK"
        case .holdingKEK: "holdingKEK"
        case .locked: "locked"
        }
    }
}
