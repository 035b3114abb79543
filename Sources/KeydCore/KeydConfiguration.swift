/// keyd's configuration, read from a small `key = value` file.
///
/// The file format is ``ConfigurationText``'s; lists are comma-separated (an empty value is an
/// empty list).
///
/// ```
/// # /etc/keyd/keyd.conf
/// trustd-uids = 990
/// admin-uids = 0
/// max-connections = 1024
/// max-connections-per-uid = 256
/// max-admin-connections = 32
/// frame-timeout-ms = 5000
/// hello-timeout-ms = 2000
/// idle-timeout-ms = 60000
/// evidence-per-second = 4
/// evidence-burst = 8
/// evidence-per-second-per-connection = 2
/// evidence-burst-per-connection = 4
/// trustd-socket-mode = 0660
/// disk-allow-initialize = false
/// disk-profile = asterism
/// state-disk-device = /dev/disk/by-id/virtio-state
/// state-disk-mapping = state
/// constellation-compatibility = false
/// kubernetes-ca-certificate = /etc/kubernetes/pki/ca.crt
/// kubernetes-ca-key = /etc/kubernetes/pki/ca.key
/// tpm-tcti = device:/dev/tpmrm0
/// tpm-ak-algorithm = ecc-p256
/// tpm-ak-handle = 0x81010a57
/// tpm-kek-handle = 0x81010a58
/// tpm-audit-key-handle = 0x81010a59
/// tpm-audit-counter-index = 0x01a57e00
/// tpm-trust-counter-index = 0x01a57e01
/// tpm-pcrs = 0-23
/// tpm-event-log = /sys/kernel/security/tpm0/binary_bios_measurements
/// ```
public struct KeydConfiguration: Equatable, Sendable {
    /// Users whose connections on the trustd socket are the trustd peer.
    public var trustdUIDs: [UInt32] = []
    /// Groups whose connections on the trustd socket are the trustd peer.
    public var trustdGIDs: [UInt32] = []
    /// Users whose connections on the admin socket are the admin peer.
    public var adminUIDs: [UInt32] = [0]
    /// Groups whose connections on the admin socket are the admin peer.
    public var adminGIDs: [UInt32] = []
    /// Connections open at once on the trustd socket; more are answered `busy` (1…65536).
    public var maxConnections: Int = 1024
    /// Connections open at once on the trustd socket from one uid; more are answered `busy` (1…65536).
    public var maxConnectionsPerUID: Int = 256
    /// Connections open at once on the admin socket, which trustd can never use; more are `busy` (1…65536).
    public var maxAdminConnections: Int = 32
    /// Time keyd may spend reading a frame it has not completed (100…600000 ms).
    public var frameTimeoutMilliseconds: Int = 5000
    /// Time from accept to the first complete request (100…600000 ms).
    public var helloTimeoutMilliseconds: Int = 2000
    /// Time a connection may go without a request or the reading of an answer (1000…86400000 ms).
    public var idleTimeoutMilliseconds: Int = 60_000
    /// `evidence.issue` requests per second one trustd uid may make, over all its connections (1…100000).
    public var evidencePerSecond: Int = 4
    /// `evidence.issue` requests one trustd uid may make at once after a pause (1…100000).
    public var evidenceBurst: Int = 8
    /// `evidence.issue` requests per second on one trustd connection (1…100000).
    public var evidencePerSecondPerConnection: Int = 2
    /// `evidence.issue` requests at once on one trustd connection after a pause (1…100000).
    public var evidenceBurstPerConnection: Int = 4
    /// Permission bits of the trustd socket when keyd binds it itself (≤ 0o777).
    public var trustdSocketMode: UInt32 = 0o660
    /// Permission bits of the admin socket when keyd binds it itself (≤ 0o777).
    public var adminSocketMode: UInt32 = 0o600
    /// Whether `disk.format` may initialize a device that holds no LUKS2 header (`true`/`false`).
    public var diskAllowInitialize: Bool = false
    /// The profile `disk.format` writes: `asterism` (PBKDF2, fast unlock) or `constellation` (argon2id).
    public var diskProfile: DiskProfile = .asterism
    /// The state disk (an absolute path): the device a disk request with an empty device field acts
    /// on, and the only one trustd's requests reach; nil when none is configured.
    public var stateDiskDevice: String?
    /// The device-mapper name `envelope.accept` and `init.accept` activate the state disk under.
    public var stateDiskMapping: String = "state"
    /// Whether `compat.release` hands Constellation's bootstrapper keys in plain (through trustd).
    public var constellationCompatibility: Bool = false
    /// The Kubernetes CA certificate (PEM) keyd signs kubelet certificates with; nil: it signs none.
    public var kubernetesCACertificate: String?
    /// The Kubernetes CA's private key (PEM, a root-only file); set together with the certificate.
    public var kubernetesCAKey: String?
    /// The TCTI that reaches the TPM, always named (`device:…`, `swtpm:…`): never the loader's auto-probe.
    public var tpmTCTI: String = "device:/dev/tpmrm0"
    /// The attestation key's algorithm: `ecc-p256` or `rsa-2048`.
    public var tpmAKAlgorithm: String = "ecc-p256"
    /// The owner persistent handle of the attestation key (0x81000000…0x817fffff).
    public var tpmAKHandle: UInt32 = 0x8101_0A57
    /// The owner persistent handle of the sealed KEK's wrapping key; `kek.lock` evicts it.
    public var tpmKEKHandle: UInt32 = 0x8101_0A58
    /// The owner persistent handle of the audit chain's sealed HMAC key.
    public var tpmAuditKeyHandle: UInt32 = 0x8101_0A59
    /// The owner NV index of the audit log's record counter (0x01000000…0x01bfffff).
    public var tpmAuditCounterIndex: UInt32 = 0x01A5_7E00
    /// The owner NV index counting changes of the trust state (operator key, policy) against rollback.
    public var tpmTrustCounterIndex: UInt32 = 0x01A5_7E01
    /// The SHA-256 PCRs that quotes cover and the sealed KEK's policy binds, ascending.
    public var tpmPCRs: [Int] = Array(0..<24)
    /// The firmware event log added to evidence when the file exists.
    public var tpmEventLog: String = "/sys/kernel/security/tpm0/binary_bios_measurements"

    /// The defaults.
    public init() {}

    /// The largest configuration text accepted, in bytes.
    public static let maxTextLength = 65_536
    /// Accepted ``maxConnections``.
    public static let maxConnectionsRange: ClosedRange<Int> = 1...65_536
    /// Accepted ``frameTimeoutMilliseconds`` and ``helloTimeoutMilliseconds``.
    public static let frameTimeoutRange: ClosedRange<Int> = 100...600_000
    /// Accepted ``idleTimeoutMilliseconds``.
    public static let idleTimeoutRange: ClosedRange<Int> = 1000...86_400_000
    /// Accepted evidence rates and bursts.
    public static let evidenceRateRange: ClosedRange<Int> = 1...100_000
    /// Accepted uids and gids: every `u32` but 4294967295, which is `(uid_t)-1`, "no user".
    public static let idRange: ClosedRange<UInt32> = 0...(UInt32.max - 1)
    /// Accepted socket modes.
    public static let socketModeRange: ClosedRange<UInt32> = 0...0o777

    /// Every key a file may set, in the order they are documented: the one list of keys, each with
    /// its parser in ``apply(_:to:)`` (an exhaustive switch: a key cannot be listed without one).
    enum Key: String, CaseIterable {
        case trustdUIDs = "trustd-uids"
        case trustdGIDs = "trustd-gids"
        case adminUIDs = "admin-uids"
        case adminGIDs = "admin-gids"
        case maxConnections = "max-connections"
        case maxConnectionsPerUID = "max-connections-per-uid"
        case maxAdminConnections = "max-admin-connections"
        case frameTimeout = "frame-timeout-ms"
        case helloTimeout = "hello-timeout-ms"
        case idleTimeout = "idle-timeout-ms"
        case evidencePerSecond = "evidence-per-second"
        case evidenceBurst = "evidence-burst"
        case evidencePerSecondPerConnection = "evidence-per-second-per-connection"
        case evidenceBurstPerConnection = "evidence-burst-per-connection"
        case trustdSocketMode = "trustd-socket-mode"
        case adminSocketMode = "admin-socket-mode"
        case diskAllowInitialize = "disk-allow-initialize"
        case diskProfile = "disk-profile"
        case stateDiskDevice = "state-disk-device"
        case stateDiskMapping = "state-disk-mapping"
        case constellationCompatibility = "constellation-compatibility"
        case kubernetesCACertificate = "kubernetes-ca-certificate"
        case kubernetesCAKey = "kubernetes-ca-key"
        case tpmTCTI = "tpm-tcti"
        case tpmAKAlgorithm = "tpm-ak-algorithm"
        case tpmAKHandle = "tpm-ak-handle"
        case tpmKEKHandle = "tpm-kek-handle"
        case tpmAuditKeyHandle = "tpm-audit-key-handle"
        case tpmAuditCounterIndex = "tpm-audit-counter-index"
        case tpmTrustCounterIndex = "tpm-trust-counter-index"
        case tpmPCRs = "tpm-pcrs"
        case tpmEventLog = "tpm-event-log"

        /// Sets what `field`'s value says.
        func apply(_ field: ConfigurationField, to configuration: inout KeydConfiguration) throws(CoreError) {
            switch self {
            case .trustdUIDs: configuration.trustdUIDs = try field.idList()
            case .trustdGIDs: configuration.trustdGIDs = try field.idList()
            case .adminUIDs: configuration.adminUIDs = try field.idList()
            case .adminGIDs: configuration.adminGIDs = try field.idList()
            case .maxConnections: configuration.maxConnections = try field.integer(in: maxConnectionsRange)
            case .maxConnectionsPerUID: configuration.maxConnectionsPerUID = try field.integer(in: maxConnectionsRange)
            case .maxAdminConnections: configuration.maxAdminConnections = try field.integer(in: maxConnectionsRange)
            case .frameTimeout: configuration.frameTimeoutMilliseconds = try field.integer(in: frameTimeoutRange)
            case .helloTimeout: configuration.helloTimeoutMilliseconds = try field.integer(in: frameTimeoutRange)
            case .idleTimeout: configuration.idleTimeoutMilliseconds = try field.integer(in: idleTimeoutRange)
            case .evidencePerSecond: configuration.evidencePerSecond = try field.integer(in: evidenceRateRange)
            case .evidenceBurst: configuration.evidenceBurst = try field.integer(in: evidenceRateRange)
            case .evidencePerSecondPerConnection:
                configuration.evidencePerSecondPerConnection = try field.integer(in: evidenceRateRange)
            case .evidenceBurstPerConnection:
                configuration.evidenceBurstPerConnection = try field.integer(in: evidenceRateRange)
            case .trustdSocketMode: configuration.trustdSocketMode = try field.mode()
            case .adminSocketMode: configuration.adminSocketMode = try field.mode()
            case .diskAllowInitialize: configuration.diskAllowInitialize = try field.boolean()
            case .diskProfile: configuration.diskProfile = try field.profile()
            case .stateDiskDevice: configuration.stateDiskDevice = try field.absolutePath()
            case .stateDiskMapping: configuration.stateDiskMapping = try field.mappingName()
            case .constellationCompatibility: configuration.constellationCompatibility = try field.boolean()
            case .kubernetesCACertificate: configuration.kubernetesCACertificate = try field.absolutePath()
            case .kubernetesCAKey: configuration.kubernetesCAKey = try field.absolutePath()
            case .tpmTCTI: configuration.tpmTCTI = try field.tcti()
            case .tpmAKAlgorithm: configuration.tpmAKAlgorithm = try field.oneOf(["ecc-p256", "rsa-2048"])
            case .tpmAKHandle: configuration.tpmAKHandle = try field.persistentHandle()
            case .tpmKEKHandle: configuration.tpmKEKHandle = try field.persistentHandle()
            case .tpmAuditKeyHandle: configuration.tpmAuditKeyHandle = try field.persistentHandle()
            case .tpmAuditCounterIndex: configuration.tpmAuditCounterIndex = try field.nvIndex()
            case .tpmTrustCounterIndex: configuration.tpmTrustCounterIndex = try field.nvIndex()
            case .tpmPCRs: configuration.tpmPCRs = try field.pcrList()
            case .tpmEventLog: configuration.tpmEventLog = try field.absolutePath()
            }
        }
    }

    /// The keys a file may set, in the order they are documented.
    public static let keys = Key.allCases.map(\.rawValue)

    /// Parses a configuration file; unset keys keep their defaults.
    /// - Throws: ``CoreError`` naming the line, the key and the limit: the text is over 64 KiB,
    ///   a line has no `=`, a key is unknown or repeated, a value is not a number or out of range.
    public static func parse(_ text: String) throws(CoreError) -> KeydConfiguration {
        var configuration = KeydConfiguration()
        try ConfigurationText.read(text, keys: Key.self, maxLength: maxTextLength) { (key, field) throws(CoreError) in
            try key.apply(field, to: &configuration)
        }
        return configuration
    }
}

/// The value kinds only keyd's configuration has.
extension ConfigurationField {
    /// A comma-separated list of decimal uids or gids; empty text is an empty list.
    fileprivate func idList() throws(CoreError) -> [UInt32] {
        var ids: [UInt32] = []
        for item in items() {
            guard let number = decimal(Substring(item.value)) else {
                throw item.invalid(expected: "a comma-separated list of decimal ids")
            }
            let range = KeydConfiguration.idRange
            guard number <= UInt64(range.upperBound) else {
                throw item.outOfRange(limit: "\(range.lowerBound)…\(range.upperBound)")
            }
            ids.append(UInt32(number))
        }
        return ids
    }

    /// A state-disk profile name.
    fileprivate func profile() throws(CoreError) -> DiskProfile {
        guard let profile = DiskProfile.named(value) else { throw invalid(expected: "asterism or constellation") }
        return profile
    }

    /// A TCTI `name:configuration` (name from letters, digits and `-`), at most 512 bytes.
    fileprivate func tcti() throws(CoreError) -> String {
        guard let colon = value.firstIndex(of: ":"), colon != value.startIndex, value.utf8.count <= 512,
            value[..<colon].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
        else {
            throw invalid(expected: "a named TCTI such as device:/dev/tpmrm0")
        }
        return value
    }

    /// A device-mapper name as `disk.open` takes it: 1…64 of `A-Z a-z 0-9 - _ .`, not `.` or `..`.
    fileprivate func mappingName() throws(CoreError) -> String {
        let allowed = value.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
        }
        guard (1...64).contains(value.utf8.count), allowed, value != ".", value != ".." else {
            throw invalid(expected: "a device-mapper name of 1 to 64 letters, digits, '-', '_' or '.'")
        }
        return value
    }

    /// A hexadecimal owner persistent handle `0x81000000`…`0x817fffff`.
    fileprivate func persistentHandle() throws(CoreError) -> UInt32 {
        guard value.hasPrefix("0x"), value.count == 10, let handle = UInt32(value.dropFirst(2), radix: 16) else {
            throw invalid(expected: "a handle such as 0x81010a57")
        }
        guard (0x8100_0000...0x817F_FFFF).contains(handle) else { throw outOfRange(limit: "0x81000000…0x817fffff") }
        return handle
    }

    /// A hexadecimal owner NV index `0x01000000`…`0x01bfffff`.
    fileprivate func nvIndex() throws(CoreError) -> UInt32 {
        guard value.hasPrefix("0x"), value.count == 10, let index = UInt32(value.dropFirst(2), radix: 16) else {
            throw invalid(expected: "an NV index such as 0x01a57e00")
        }
        guard (0x0100_0000...0x01BF_FFFF).contains(index) else { throw outOfRange(limit: "0x01000000…0x01bfffff") }
        return index
    }

    /// PCR indices and ranges (`0-7,14,15`), each 0…23; not empty.
    fileprivate func pcrList() throws(CoreError) -> [Int] {
        var indices = Set<Int>()
        for item in value.split(separator: ",", omittingEmptySubsequences: false) {
            let text = trimmed(item)
            let bounds = text.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let low = decimal(bounds[0]),
                let high = decimal(bounds[bounds.count - 1]),
                low <= high
            else {
                throw invalid(expected: "PCR indices and ranges such as 0-7,14")
            }
            guard high <= 23 else {
                throw ConfigurationField(key: key, value: String(text), lineNumber: lineNumber).outOfRange(
                    limit: "0…23"
                )
            }
            indices.formUnion(Int(low)...Int(high))
        }
        return indices.sorted()
    }

    /// Octal permission bits such as `0660` or `660`, at most 0777.
    fileprivate func mode() throws(CoreError) -> UInt32 {
        let digits = value.utf8
        guard !digits.isEmpty, digits.count <= 12,
            digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "7")).contains($0) })
        else {
            throw invalid(expected: "an octal mode such as 0660")
        }
        var mode: UInt64 = 0
        for digit in digits { mode = mode * 8 + UInt64(digit - UInt8(ascii: "0")) }
        guard mode <= UInt64(KeydConfiguration.socketModeRange.upperBound) else {
            throw outOfRange(limit: "0000…0777")
        }
        return UInt32(mode)
    }
}
