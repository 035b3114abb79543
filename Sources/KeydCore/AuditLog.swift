import Crypto
import KeydProtocol

// keyd's audit log: one JSON object per line, each line carrying the MAC of the line before it
// (`prev`) and its own (`mac`):
//
//     {"seq":1,"time":"2026-11-25T13:50:41Z","event":"kek.import","decision":"granted","status":"ok",
//      "peer":{"class":"admin","uid":0,"gid":0,"pid":812},"detail":{},"prev":"3f…","mac":"9c…"}
//
// (one line in the file). Fields come in exactly this order with no spaces, so a record has one
// encoding and its MAC is well defined. `mac` is HMAC-SHA-256 under the audit key that keyd keeps
// sealed in the TPM, over the line up to and including `prev` (SHA-256 when keyd has no TPM, which
// proves only that lines were not reordered). Record 0 of a chain is its genesis (`audit.chain`).
// Everything here is pure: keyd reads and appends the files.

/// Whether keyd did what was asked.
public enum AuditDecision: String, Sendable, Hashable, CaseIterable {
    case granted
    case refused
}

/// Who asked, as keyd classified the connection (`keyd` for keyd's own actions).
public enum AuditPeerClass: String, Sendable, Hashable, CaseIterable {
    case trustd
    case admin
    case stranger
    case keyd
}

/// The peer's class and `SO_PEERCRED` credentials.
public struct AuditPeer: Sendable, Hashable {
    public var peerClass: AuditPeerClass
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32

    /// Makes a peer entry.
    public init(peerClass: AuditPeerClass, uid: UInt32, gid: UInt32, pid: Int32) {
        self.peerClass = peerClass
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }
}

/// One audit record before it is chained: everything but `prev` and `mac`.
///
/// - Important: Nothing secret goes into an audit record: no key, secret, salt, passphrase or
///   anything derived from them. `detail` is for names, UUIDs, paths, counts and reasons.
public struct AuditRecord: Sendable {
    /// Position in the log, from 0.
    public var sequence: UInt64
    /// Seconds since the epoch, written as RFC 3339 UTC.
    public var time: Int64
    /// What happened, from the closed list of audit events.
    public var event: AuditEvent
    /// Granted or refused.
    public var decision: AuditDecision
    /// The keyd status name answered, e.g. `ok`, `denied`.
    public var status: String
    /// Who asked.
    public var peer: AuditPeer
    /// Extra key/value text in the given order; long values are cut (see ``AuditChain/maxDetailValueLength``).
    public var detail: [(key: String, value: String)]
    /// On the last line of a commit group of an anchored chain: the TPM counter's value once the
    /// group is counted (``AuditAnchor``); nil on every other line.
    public var anchor: UInt64?

    /// Makes a record.
    public init(
        sequence: UInt64,
        time: Int64,
        event: AuditEvent,
        decision: AuditDecision,
        status: String,
        peer: AuditPeer,
        detail: [(key: String, value: String)] = [],
        anchor: UInt64? = nil
    ) {
        self.anchor = anchor
        self.sequence = sequence
        self.time = time
        self.event = event
        self.decision = decision
        self.status = status
        self.peer = peer
        self.detail = detail
    }

    /// The record's line without the newline, chained to `previousMAC`, and the line's own MAC.
    ///
    /// A line longer than ``AuditChain/maxLineLength`` is our bug (too much detail) and traps.
    public func line(previousMAC: [UInt8], link: AuditLink) -> (line: [UInt8], mac: [UInt8]) {
        precondition(previousMAC.count == 32, "previous MAC of \(previousMAC.count) bytes, expected 32")
        var out: [UInt8] = []
        out.reserveCapacity(448)
        out.append(contentsOf: #"{"seq":"#.utf8)
        out.append(contentsOf: String(sequence).utf8)
        out.append(contentsOf: #","time":""#.utf8)
        out.append(contentsOf: RFC3339.format(secondsSinceEpoch: time).utf8)
        out.append(contentsOf: #"","event":"#.utf8)
        AuditJSON.appendString(event.description, to: &out)
        out.append(contentsOf: #","decision":""#.utf8)
        out.append(contentsOf: decision.rawValue.utf8)
        out.append(contentsOf: #"","status":"#.utf8)
        AuditJSON.appendString(status, to: &out)
        out.append(contentsOf: #","peer":{"class":""#.utf8)
        out.append(contentsOf: peer.peerClass.rawValue.utf8)
        out.append(contentsOf: #"","uid":"#.utf8)
        out.append(contentsOf: String(peer.uid).utf8)
        out.append(contentsOf: #","gid":"#.utf8)
        out.append(contentsOf: String(peer.gid).utf8)
        out.append(contentsOf: #","pid":"#.utf8)
        out.append(contentsOf: String(peer.pid).utf8)
        out.append(contentsOf: #"},"detail":{"#.utf8)
        for (index, pair) in detail.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            AuditJSON.appendString(pair.key, to: &out)
            out.append(UInt8(ascii: ":"))
            AuditJSON.appendString(pair.value, to: &out, maxEscapedLength: AuditChain.maxDetailValueLength)
        }
        out.append(UInt8(ascii: "}"))
        if let anchor {
            out.append(contentsOf: #","anchor":"#.utf8)
            out.append(contentsOf: String(anchor).utf8)
        }
        out.append(contentsOf: #","prev":""#.utf8)
        out.append(contentsOf: lowercaseHex(previousMAC).utf8)
        out.append(UInt8(ascii: "\""))
        let mac = link.mac(out[...])
        out.append(contentsOf: #","mac":""#.utf8)
        out.append(contentsOf: lowercaseHex(mac).utf8)
        out.append(contentsOf: #""}"#.utf8)
        precondition(
            out.count <= AuditChain.maxLineLength,
            "audit line of \(out.count) bytes exceeds limit \(AuditChain.maxLineLength)"
        )
        return (out, mac)
    }
}

/// How each line authenticates itself and its predecessor: HMAC-SHA-256 under the audit key keyd
/// keeps sealed in its TPM, or plain SHA-256 when keyd has no TPM (a chain anyone can rewrite).
public enum AuditLink: Sendable {
    /// SHA-256: detects reordering and accidental damage only.
    case unkeyed
    /// HMAC-SHA-256 under the audit key; `keyName` is the TPM name of the sealed key object.
    case keyed(SymmetricKey, keyName: [UInt8])

    /// HMAC under a copy of `keyBytes` (32 bytes the TPM unsealed); `keyName` is its sealed object's TPM name.
    public static func keyed(keyBytes: UnsafeRawBufferPointer, keyName: [UInt8]) -> AuditLink {
        .keyed(SymmetricKey(data: keyBytes), keyName: keyName)
    }

    /// The name written into a chain's genesis record (`hmac-sha256` or `sha256`).
    public var name: String {
        switch self {
        case .unkeyed: "sha256"
        case .keyed: "hmac-sha256"
        }
    }

    /// The key's TPM name in hex, or `none`.
    public var keyNameHex: String {
        switch self {
        case .unkeyed: "none"
        case .keyed(_, let keyName): lowercaseHex(keyName)
        }
    }

    /// The 32-byte MAC of `bytes`.
    public func mac(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        bytes.withUnsafeBytes { mac($0) }
    }

    /// The 32-byte MAC of `bytes`, read in place.
    public func mac(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        switch self {
        case .unkeyed: Array(SHA256.hash(data: bytes))
        case .keyed(let key, _): Array(HMAC<SHA256>.authenticationCode(for: bytes, using: key))
        }
    }
}

/// The head of an audit chain: the next sequence number, the MAC of the last line and the link.
public struct AuditChain: Sendable {
    /// The longest line, without its newline (the `text<8192>` of `audit.read`).
    public static let maxLineLength = 8192
    /// The longest JSON-escaped detail value, quotes excluded; longer ones are cut and end in "…".
    public static let maxDetailValueLength = 256
    /// The `prev` of a genesis record.
    public static let genesisMAC = [UInt8](repeating: 0, count: 32)

    /// How lines are authenticated.
    public let link: AuditLink
    /// The sequence number the next record gets (= records in the chain).
    public private(set) var nextSequence: UInt64
    /// The MAC of the last line; zeros for an empty chain.
    public private(set) var headMAC: [UInt8]

    /// An empty chain.
    public init(link: AuditLink) {
        self.link = link
        nextSequence = 0
        headMAC = Self.genesisMAC
    }

    /// A chain continuing after `nextSequence` records whose last line has `headMAC`.
    public init(link: AuditLink, nextSequence: UInt64, headMAC: [UInt8]) {
        precondition(headMAC.count == 32, "head MAC of \(headMAC.count) bytes, expected 32")
        self.link = link
        self.nextSequence = nextSequence
        self.headMAC = headMAC
    }

    /// The line to write (with its trailing newline) and the chain after it, leaving `self` as is,
    /// so that a failed write leaves the head where the file ends.
    /// - Important: Nothing secret may go into `status` or `detail`.
    public func appending(
        event: AuditEvent,
        decision: AuditDecision,
        status: String,
        peer: AuditPeer,
        detail: [(key: String, value: String)] = [],
        anchor: UInt64? = nil,
        time: Int64
    ) -> (line: [UInt8], next: AuditChain) {
        let record = AuditRecord(
            sequence: nextSequence,
            time: time,
            event: event,
            decision: decision,
            status: status,
            peer: peer,
            detail: detail,
            anchor: anchor
        )
        var (line, mac) = record.line(previousMAC: headMAC, link: link)
        line.append(UInt8(ascii: "\n"))
        return (line, AuditChain(link: link, nextSequence: nextSequence + 1, headMAC: mac))
    }

    /// Returns the line to write (with its trailing newline) and advances the head past it.
    /// - Important: Nothing secret may go into `status` or `detail`.
    public mutating func append(
        event: AuditEvent,
        decision: AuditDecision,
        status: String,
        peer: AuditPeer,
        detail: [(key: String, value: String)] = [],
        anchor: UInt64? = nil,
        time: Int64
    ) -> [UInt8] {
        let (line, next) = appending(
            event: event,
            decision: decision,
            status: status,
            peer: peer,
            detail: detail,
            anchor: anchor,
            time: time
        )
        self = next
        return line
    }

    /// The detail of a chain's genesis record: the link, the key's TPM name, the TPM counter's value
    /// before the genesis was written (`none` without a TPM), and why the chain starts.
    public static func genesisDetail(
        link: AuditLink,
        counterBase: UInt64?,
        reason: String
    ) -> [(key: String, value: String)] {
        [
            ("link", link.name), ("key", link.keyNameHex), ("counter", counterBase.map(String.init) ?? "none"),
            ("reason", reason),
        ]
    }
}

/// JSON string encoding for audit lines and keyd's other JSON reports.
public enum AuditJSON {
    /// `text` as a quoted JSON string literal, escaped as in audit lines.
    public static func quoted(_ text: String) -> String {
        var out: [UInt8] = []
        appendString(text, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `text` as a quoted JSON string. `"` and `\` are escaped, and so are C0 controls, DEL,
    /// C1 controls and U+2028/U+2029 (as `\u00XX`), so a line holds no raw control character and
    /// prints safely on a terminal; other non-ASCII text is passed through as UTF-8.
    ///
    /// With `maxEscapedLength`, a value whose escaped form is longer is cut at a character
    /// boundary and ends with "…", the whole escaped form staying within the limit.
    static func appendString(_ text: String, to out: inout [UInt8], maxEscapedLength: Int? = nil) {
        out.append(UInt8(ascii: "\""))
        let start = out.count
        var pieceEnds: [Int] = []  // where each escaped character ends, to cut on a boundary
        for scalar in text.unicodeScalars {
            appendEscaped(scalar, to: &out)
            pieceEnds.append(out.count)
            if let limit = maxEscapedLength, out.count - start > limit {
                let ellipsis = "\u{2026}".utf8
                // Keep the longest prefix of whole characters that leaves room for the ellipsis.
                var keep = start
                for end in pieceEnds where end - start + ellipsis.count <= limit {
                    keep = end
                }
                out.removeSubrange(keep...)
                out.append(contentsOf: ellipsis)
                break
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Appends one scalar, escaped as needed.
    static func appendEscaped(_ scalar: Unicode.Scalar, to out: inout [UInt8]) {
        switch scalar.value {
        case 0x22:
            out.append(contentsOf: #"\""#.utf8)
        case 0x5C:
            out.append(contentsOf: #"\\"#.utf8)
        case 0x00..<0x20, 0x7F...0x9F, 0x2028, 0x2029:
            out.append(contentsOf: #"\u"#.utf8)
            let value = scalar.value
            for shift in stride(from: 12, through: 0, by: -4) {
                out.append(hexDigits[Int((value >> UInt32(shift)) & 0xF)])
            }
        default:
            out.append(contentsOf: scalar.utf8)
        }
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)

/// Lowercase hexadecimal of `bytes`, for hashes, names and PCR values (never for secrets).
public func lowercaseHex(_ bytes: some Sequence<UInt8>) -> String {
    var out: [UInt8] = []
    for byte in bytes {
        out.append(hexDigits[Int(byte >> 4)])
        out.append(hexDigits[Int(byte & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
}
