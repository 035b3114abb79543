import Foundation
import KeydProtocol

// What keydctl prints, as pure functions of keyd's answers (nothing secret ever reaches them).

/// Renders keyd's answers for people (aligned `key: value` lines) and for programs (JSON).
public enum Report {
    // MARK: status

    /// The KEK state implied by keyd's phase.
    public static func kekState(_ phase: Phase) -> String {
        switch phase {
        case .awaitingKEK: "absent"
        case .holdingKEK: "held"
        case .locked: "locked"
        }
    }

    /// `keydctl status`.
    public static func status(_ answer: StatusAnswer) -> String {
        let kek: String
        switch answer.phase {
        case .awaitingKEK: kek = "absent (awaiting kek import)"
        case .holdingKEK: kek = "held"
        case .locked: kek = "locked (zeroed by kek lock)"
        }
        return aligned([
            ("phase", answer.phase.description),
            ("kek", kek),
            ("kek at rest", sealedKEK(answer.sealedKEK)),
            (
                "tpm",
                answer.tpmAvailable ? "available (keydctl tpm status)" : "UNAVAILABLE (keydctl tpm status says why)"
            ),
            ("operator key", answer.operatorKeyPinned ? "pinned (keydctl policy show)" : "none pinned"),
            (
                "policy version",
                answer.policyVersion == 0 ? "none (keyd releases no keys)" : String(answer.policyVersion)
            ),
            ("policy sha256", answer.policyVersion == 0 ? "none" : hex(answer.policyDigest)),
            ("peer class", answer.peerClass.description),
            ("uptime", "\(duration(answer.uptimeSeconds)) (\(answer.uptimeSeconds) s)"),
            ("requests served", String(answer.requestsServed)),
            ("connections", String(answer.connections)),
            ("audit records", String(answer.auditRecords)),
            ("audit head", hex(answer.auditHead)),
            ("audit intact at start", answer.auditIntact ? "yes" : "NO (run keydctl audit verify)"),
            ("keyd version", printable(answer.keydVersion)),
            ("protocol version", String(answer.protocolVersion)),
        ])
    }

    /// What the KEK-at-rest state means for an operator.
    static func sealedKEK(_ status: SealedKEKStatus) -> String {
        switch status {
        case .none: "none"
        case .sealed: "sealed to this TPM"
        case .unsealed: "unsealed from this TPM at start"
        case .unsealFailed: "UNSEAL FAILED at start (PCRs changed or file damaged; import the KEK again)"
        case .notSealed: "NOT SEALED (memory only; lost when keyd stops)"
        }
    }

    /// `keydctl status --json`.
    public static func statusJSON(_ answer: StatusAnswer) -> String {
        var object = JSONObject()
        object.string("phase", answer.phase.description)
        object.string("kek", kekState(answer.phase))
        object.string("sealedKEK", answer.sealedKEK.description)
        object.bool("tpmAvailable", answer.tpmAvailable)
        object.bool("operatorKeyPinned", answer.operatorKeyPinned)
        object.number("policyVersion", answer.policyVersion)
        if answer.policyVersion == 0 {
            object.null("policyDigest")
        } else {
            object.string("policyDigest", hex(answer.policyDigest))
        }
        object.string("peerClass", answer.peerClass.description)
        object.number("uptimeSeconds", answer.uptimeSeconds)
        object.number("requestsServed", answer.requestsServed)
        object.number("connections", UInt64(answer.connections))
        object.number("auditRecords", answer.auditRecords)
        object.string("auditHead", hex(answer.auditHead))
        object.bool("auditIntactAtStart", answer.auditIntact)
        object.string("keydVersion", answer.keydVersion)
        object.number("protocolVersion", UInt64(answer.protocolVersion))
        return object.text
    }

    // MARK: audit verify

    /// One sentence on what `audit.verify` found.
    public static func explanation(_ answer: AuditVerifyAnswer) -> String {
        let record = answer.firstBadRecord
        switch answer.problem {
        case .none:
            return
                "every record carries its MAC, chains to the one before it, and the count matches keyd's head and TPM counter"
        case .edited:
            return
                "record \(record) was changed after it was written: its MAC no longer holds, or it is not the record the next one was chained to"
        case .reorderedOrMissing:
            return "record \(record) does not carry its position as seq: records were removed, inserted or swapped"
        case .truncated:
            return
                "the log ends after \(answer.records) records, fewer than keyd's head or its TPM counter: records were cut off its end"
        case .unparsable:
            return "record \(record) is not an audit record (a last line without newline is a torn write)"
        case .unreadable:
            return "keyd could not read its audit log; see keyd's log"
        case .unverifiable:
            return
                "the chain cannot be checked with keyd's present audit key and TPM counter (another key or TPM, or its state rolled back)"
        }
    }

    /// `keydctl audit verify`.
    public static func verify(_ answer: AuditVerifyAnswer) -> String {
        aligned([
            ("intact", answer.intact ? "yes" : "NO"),
            ("records", String(answer.records)),
            ("first bad record", answer.intact ? "none" : String(answer.firstBadRecord)),
            ("problem", answer.problem.description),
            (answer.intact ? "head hash" : "last good hash", hex(answer.headHash)),
        ]) + "\n" + explanation(answer)
    }

    /// `keydctl audit verify --json`; `firstBadRecord` is null when intact.
    public static func verifyJSON(_ answer: AuditVerifyAnswer) -> String {
        var object = JSONObject()
        object.bool("intact", answer.intact)
        object.number("records", answer.records)
        if answer.intact {
            object.null("firstBadRecord")
        } else {
            object.number("firstBadRecord", answer.firstBadRecord)
        }
        object.string("problem", answer.problem.description)
        object.string("headHash", hex(answer.headHash))
        object.string("explanation", explanation(answer))
        return object.text
    }

    // MARK: audit show

    /// Column widths of the audit table after SEQ.
    private static let columns = [20, 16, 8, 18, 8]

    /// The header of the audit table, with the SEQ column `seqWidth` wide.
    public static func auditHeader(seqWidth: Int) -> String {
        row(["SEQ", "TIME", "EVENT", "DECISION", "STATUS", "PEER", "DETAIL"], seqWidth: seqWidth)
    }

    /// One audit record (a JSON line) as a table row; a line that does not parse is shown raw.
    public static func auditRow(_ line: String, index: UInt64, seqWidth: Int) -> String {
        guard
            let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
            let seq = object["seq"].map(scalar),
            let time = object["time"].map(scalar),
            let event = object["event"].map(scalar),
            let decision = object["decision"].map(scalar),
            let status = object["status"].map(scalar),
            let peer = object["peer"] as? [String: Any],
            let peerClass = peer["class"].map(scalar)
        else {
            return row([String(index), "(not an audit record) " + line], seqWidth: seqWidth).trimmingTrailingSpaces()
        }
        let detail = (object["detail"] as? [String: Any] ?? [:])
            .sorted { $0.key < $1.key }
            .map { "\($0.key)=\(scalar($0.value))" }
            .joined(separator: " ")
        return row([seq, time, event, decision, status, peerClass, detail], seqWidth: seqWidth)
    }

    private static func row(_ cells: [String], seqWidth: Int) -> String {
        var out = ""
        for (index, cell) in cells.enumerated() {
            let text = printable(cell)
            if index == cells.count - 1 {
                out += text
                break
            }
            let width = index == 0 ? seqWidth : columns[index - 1]
            out += text + String(repeating: " ", count: max(width - text.count, 0)) + "  "
        }
        return out.trimmingTrailingSpaces()
    }

    /// A JSON scalar as text; nested values as compact JSON.
    private static func scalar(_ value: Any) -> String {
        switch value {
        case let string as String: return string
        case let number as NSNumber: return number.stringValue
        case is NSNull: return "null"
        default:
            guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]) else {
                return "?"
            }
            return String(decoding: data, as: UTF8.self)
        }
    }

    // MARK: helpers

    /// Lowercase hex.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `2d 3h 4m 5s`, dropping leading zero units.
    public static func duration(_ seconds: UInt64) -> String {
        let parts: [(UInt64, String)] = [
            (seconds / 86_400, "d"), (seconds / 3600 % 24, "h"), (seconds / 60 % 60, "m"), (seconds % 60, "s"),
        ]
        let shown = parts.drop { $0.0 == 0 && $0.1 != "s" }
        return shown.map { "\($0.0)\($0.1)" }.joined(separator: " ")
    }

    /// `key: value` lines with the values aligned.
    static func aligned(_ pairs: [(String, String)]) -> String {
        let width = pairs.map(\.0.count).max() ?? 0
        return pairs.map { key, value in
            key + ":" + String(repeating: " ", count: width - key.count + 1) + value
        }.joined(separator: "\n")
    }

    /// `text` with control characters replaced, so keyd's or the log's text cannot drive the terminal.
    static func printable(_ text: String) -> String {
        var out = ""
        out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var copy = self
        while copy.last == " " { copy.removeLast() }
        return copy
    }
}

/// A JSON object built member by member, keys in insertion order.
struct JSONObject {
    private var members: [String] = []

    mutating func string(_ key: String, _ value: String) { members.append(Self.quoted(key) + ":" + Self.quoted(value)) }
    mutating func number(_ key: String, _ value: UInt64) { members.append(Self.quoted(key) + ":" + String(value)) }
    mutating func bool(_ key: String, _ value: Bool) {
        members.append(Self.quoted(key) + ":" + (value ? "true" : "false"))
    }
    mutating func null(_ key: String) { members.append(Self.quoted(key) + ":null") }
    /// A member whose value is JSON text made by an encoder (never text from keyd or a file).
    mutating func json(_ key: String, _ value: String) { members.append(Self.quoted(key) + ":" + value) }

    /// The object on one line.
    var text: String { "{" + members.joined(separator: ",") + "}" }

    /// `value` as a JSON string literal.
    static func quoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
