/// keyd's configuration, read from a small `key = value` file.
///
/// One setting per line; blank lines and lines starting with `#` are ignored; whitespace around
/// keys and values is trimmed; lists are comma-separated (an empty value is an empty list).
/// Comments take a whole line: `#` after a value is part of the value.
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
/// tpm-tcti = device:/dev/tpmrm0
/// tpm-ak-algorithm = ecc-p256
/// tpm-ak-handle = 0x81010a57
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
    /// The TCTI that reaches the TPM, always named (`device:…`, `swtpm:…`): never the loader's auto-probe.
    public var tpmTCTI: String = "device:/dev/tpmrm0"
    /// The attestation key's algorithm: `ecc-p256` or `rsa-2048`.
    public var tpmAKAlgorithm: String = "ecc-p256"
    /// The owner persistent handle of the attestation key (0x81000000…0x817fffff).
    public var tpmAKHandle: UInt32 = 0x8101_0A57
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

    /// The keys a file may set, in the order they are documented.
    public static let keys = [
        "trustd-uids", "trustd-gids", "admin-uids", "admin-gids",
        "max-connections", "max-connections-per-uid", "max-admin-connections", "frame-timeout-ms", "hello-timeout-ms",
        "idle-timeout-ms", "evidence-per-second", "evidence-burst", "evidence-per-second-per-connection",
        "evidence-burst-per-connection", "trustd-socket-mode", "admin-socket-mode",
        "disk-allow-initialize", "disk-profile", "tpm-tcti", "tpm-ak-algorithm", "tpm-ak-handle", "tpm-pcrs",
        "tpm-event-log",
    ]

    /// Parses a configuration file; unset keys keep their defaults.
    /// - Throws: ``CoreError`` naming the line, the key and the limit: the text is over 64 KiB,
    ///   a line has no `=`, a key is unknown or repeated, a value is not a number or out of range.
    public static func parse(_ text: String) throws(CoreError) -> KeydConfiguration {
        let byteCount = text.utf8.count
        guard byteCount <= maxTextLength else {
            throw .configurationTooLarge(byteCount: byteCount, limit: maxTextLength)
        }
        var configuration = KeydConfiguration()
        var firstSeen: [String: Int] = [:]
        var lineNumber = 0
        // "\r\n" is one Character, so split on both spellings of a line end.
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            let line = trimmed(rawLine)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let equals = line.firstIndex(of: "=") else {
                throw .configurationMissingEquals(lineNumber: lineNumber)
            }
            let key = String(trimmed(line[..<equals]))
            let value = String(trimmed(line[line.index(after: equals)...]))
            guard keys.contains(key) else {
                throw .configurationUnknownKey(lineNumber: lineNumber, key: key, known: keys)
            }
            if let first = firstSeen[key] {
                throw .configurationDuplicateKey(lineNumber: lineNumber, key: key, firstLineNumber: first)
            }
            firstSeen[key] = lineNumber
            let field = Field(key: key, value: value, lineNumber: lineNumber)
            switch key {
            case "trustd-uids": configuration.trustdUIDs = try field.idList()
            case "trustd-gids": configuration.trustdGIDs = try field.idList()
            case "admin-uids": configuration.adminUIDs = try field.idList()
            case "admin-gids": configuration.adminGIDs = try field.idList()
            case "max-connections": configuration.maxConnections = try field.integer(in: maxConnectionsRange)
            case "max-connections-per-uid":
                configuration.maxConnectionsPerUID = try field.integer(in: maxConnectionsRange)
            case "max-admin-connections": configuration.maxAdminConnections = try field.integer(in: maxConnectionsRange)
            case "frame-timeout-ms": configuration.frameTimeoutMilliseconds = try field.integer(in: frameTimeoutRange)
            case "hello-timeout-ms": configuration.helloTimeoutMilliseconds = try field.integer(in: frameTimeoutRange)
            case "idle-timeout-ms": configuration.idleTimeoutMilliseconds = try field.integer(in: idleTimeoutRange)
            case "evidence-per-second": configuration.evidencePerSecond = try field.integer(in: evidenceRateRange)
            case "evidence-burst": configuration.evidenceBurst = try field.integer(in: evidenceRateRange)
            case "evidence-per-second-per-connection":
                configuration.evidencePerSecondPerConnection = try field.integer(in: evidenceRateRange)
            case "evidence-burst-per-connection":
                configuration.evidenceBurstPerConnection = try field.integer(in: evidenceRateRange)
            case "trustd-socket-mode": configuration.trustdSocketMode = try field.mode()
            case "admin-socket-mode": configuration.adminSocketMode = try field.mode()
            case "disk-allow-initialize": configuration.diskAllowInitialize = try field.boolean()
            case "disk-profile": configuration.diskProfile = try field.profile()
            case "tpm-tcti": configuration.tpmTCTI = try field.tcti()
            case "tpm-ak-algorithm": configuration.tpmAKAlgorithm = try field.oneOf(["ecc-p256", "rsa-2048"])
            case "tpm-ak-handle": configuration.tpmAKHandle = try field.persistentHandle()
            case "tpm-pcrs": configuration.tpmPCRs = try field.pcrList()
            case "tpm-event-log": configuration.tpmEventLog = try field.absolutePath()
            default: preconditionFailure("key '\(key)' listed in keys but not parsed")
            }
        }
        return configuration
    }

    /// One `key = value` line being converted.
    private struct Field {
        var key: String
        var value: String
        var lineNumber: Int

        /// A comma-separated list of decimal uids or gids; empty text is an empty list.
        func idList() throws(CoreError) -> [UInt32] {
            if value.isEmpty { return [] }
            var ids: [UInt32] = []
            for item in value.split(separator: ",", omittingEmptySubsequences: false) {
                let text = trimmed(item)
                guard let number = decimal(text) else {
                    throw .configurationBadNumber(
                        lineNumber: lineNumber,
                        key: key,
                        value: String(text),
                        expected: "a comma-separated list of decimal ids"
                    )
                }
                guard number <= UInt64(KeydConfiguration.idRange.upperBound) else {
                    throw .configurationOutOfRange(
                        lineNumber: lineNumber,
                        key: key,
                        value: String(text),
                        limit: "\(KeydConfiguration.idRange.lowerBound)…\(KeydConfiguration.idRange.upperBound)"
                    )
                }
                ids.append(UInt32(number))
            }
            return ids
        }

        /// A decimal integer inside `range`.
        func integer(in range: ClosedRange<Int>) throws(CoreError) -> Int {
            guard let number = decimal(Substring(value)) else {
                throw .configurationBadNumber(
                    lineNumber: lineNumber,
                    key: key,
                    value: value,
                    expected: "a decimal number"
                )
            }
            guard number <= UInt64(range.upperBound), range.contains(Int(number)) else {
                throw .configurationOutOfRange(
                    lineNumber: lineNumber,
                    key: key,
                    value: value,
                    limit: "\(range.lowerBound)…\(range.upperBound)"
                )
            }
            return Int(number)
        }

        /// Exactly `true` or `false`.
        func boolean() throws(CoreError) -> Bool {
            switch value {
            case "true": return true
            case "false": return false
            default:
                throw .configurationBadNumber(lineNumber: lineNumber, key: key, value: value, expected: "true or false")
            }
        }

        /// A state-disk profile name.
        func profile() throws(CoreError) -> DiskProfile {
            guard let profile = DiskProfile.named(value) else {
                throw .configurationBadNumber(
                    lineNumber: lineNumber,
                    key: key,
                    value: value,
                    expected: "asterism or constellation"
                )
            }
            return profile
        }

        /// A TCTI `name:configuration` (name from letters, digits and `-`), at most 512 bytes.
        func tcti() throws(CoreError) -> String {
            guard let colon = value.firstIndex(of: ":"), colon != value.startIndex, value.utf8.count <= 512,
                value[..<colon].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
            else {
                throw .configurationBadNumber(
                    lineNumber: lineNumber,
                    key: key,
                    value: value,
                    expected: "a named TCTI such as device:/dev/tpmrm0"
                )
            }
            return value
        }

        /// One of `choices`, exactly.
        func oneOf(_ choices: [String]) throws(CoreError) -> String {
            guard choices.contains(value) else {
                throw .configurationBadNumber(
                    lineNumber: lineNumber,
                    key: key,
                    value: value,
                    expected: choices.joined(separator: " or ")
                )
            }
            return value
        }

        /// A hexadecimal owner persistent handle `0x81000000`…`0x817fffff`.
        func persistentHandle() throws(CoreError) -> UInt32 {
            guard value.hasPrefix("0x"), value.count == 10, let handle = UInt32(value.dropFirst(2), radix: 16) else {
                throw .configurationBadNumber(
                    lineNumber: lineNumber,
                    key: key,
                    value: value,
                    expected: "a handle such as 0x81010a57"
                )
            }
            guard (0x8100_0000...0x817F_FFFF).contains(handle) else {
                throw .configurationOutOfRange(
                    lineNumber: lineNumber,
                    key: key,
                    value: value,
                    limit: "0x81000000…0x817fffff"
                )
            }
            return handle
        }

        /// PCR indices and ranges (`0-7,14,15`), each 0…23; not empty.
        func pcrList() throws(CoreError) -> [Int] {
            var indices = Set<Int>()
            for item in value.split(separator: ",", omittingEmptySubsequences: false) {
                let text = trimmed(item)
                let bounds = text.split(separator: "-", omittingEmptySubsequences: false)
                guard (1...2).contains(bounds.count), let low = decimal(bounds[0]),
                    let high = decimal(bounds[bounds.count - 1]),
                    low <= high
                else {
                    throw .configurationBadNumber(
                        lineNumber: lineNumber,
                        key: key,
                        value: value,
                        expected: "PCR indices and ranges such as 0-7,14"
                    )
                }
                guard high <= 23 else {
                    throw .configurationOutOfRange(lineNumber: lineNumber, key: key, value: String(text), limit: "0…23")
                }
                indices.formUnion(Int(low)...Int(high))
            }
            return indices.sorted()
        }

        /// An absolute path without NUL, at most 4096 bytes.
        func absolutePath() throws(CoreError) -> String {
            guard value.hasPrefix("/"), value.utf8.count <= 4096 else {
                throw .configurationBadNumber(
                    lineNumber: lineNumber,
                    key: key,
                    value: value,
                    expected: "an absolute path"
                )
            }
            return value
        }

        /// Octal permission bits such as `0660` or `660`, at most 0777.
        func mode() throws(CoreError) -> UInt32 {
            let digits = value.utf8
            guard !digits.isEmpty, digits.count <= 12,
                digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "7")).contains($0) })
            else {
                throw .configurationBadNumber(
                    lineNumber: lineNumber,
                    key: key,
                    value: value,
                    expected: "an octal mode such as 0660"
                )
            }
            var mode: UInt64 = 0
            for digit in digits { mode = mode * 8 + UInt64(digit - UInt8(ascii: "0")) }
            guard mode <= UInt64(KeydConfiguration.socketModeRange.upperBound) else {
                throw .configurationOutOfRange(lineNumber: lineNumber, key: key, value: value, limit: "0000…0777")
            }
            return UInt32(mode)
        }
    }
}

/// `text` without leading and trailing spaces, tabs and carriage returns.
private func trimmed(_ text: Substring) -> Substring {
    let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
    guard let first = text.firstIndex(where: { !isBlank($0) }),
        let last = text.lastIndex(where: { !isBlank($0) })
    else { return text[text.endIndex...] }
    return text[first...last]
}

/// A run of decimal digits as a number, saturating at `UInt64.max` (so it reads as out of
/// range rather than malformed); nil for anything else.
private func decimal(_ text: Substring) -> UInt64? {
    let digits = text.utf8
    guard !digits.isEmpty, digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
        return nil
    }
    var number: UInt64 = 0
    for digit in digits {
        let (times10, overflowA) = number.multipliedReportingOverflow(by: 10)
        let (sum, overflowB) = times10.addingReportingOverflow(UInt64(digit - UInt8(ascii: "0")))
        if overflowA || overflowB { return .max }
        number = sum
    }
    return number
}
