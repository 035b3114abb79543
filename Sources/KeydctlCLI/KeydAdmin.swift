import KeydClient
import KeydCore
import KeydProtocol

/// The admin requests keydctl sends; ``KeydConnection`` in production, a stub in tests.
public protocol KeydAdmin: AnyObject {
    /// `status`.
    func status() throws(KeydClientError) -> StatusAnswer
    /// `kek.import`.
    func importKEK(masterSecret: UnsafeRawBufferPointer, salt: UnsafeRawBufferPointer) throws(KeydClientError)
    /// `kek.lock`.
    func lockKEK() throws(KeydClientError)
    /// `audit.read`.
    func readAudit(firstRecord: UInt64, maxRecords: UInt16) throws(KeydClientError) -> AuditReadAnswer
    /// `audit.verify`.
    func verifyAudit() throws(KeydClientError) -> AuditVerifyAnswer
    /// `policy.get`.
    func policy() throws(KeydClientError) -> PolicyGetAnswer
    /// `policy.set`.
    func setPolicy(signedPolicy: [UInt8]) throws(KeydClientError)
    /// `operatorKey.pin`.
    func pinOperatorKey(_ operatorKey: [UInt8]) throws(KeydClientError)
}

extension KeydConnection: KeydAdmin {}

/// What the commands do once connected, with output going to `write` (one call per line).
public enum AdminActions {
    /// `status`.
    public static func status(_ keyd: any KeydAdmin, json: Bool, write: (String) -> Void) throws(KeydClientError) {
        let answer = try keyd.status()
        write(json ? Report.statusJSON(answer) : Report.status(answer))
    }

    /// `audit show`: pages through the log from `from`, at most `limit` records (nil: to the end).
    public static func auditShow(
        _ keyd: any KeydAdmin,
        from: UInt64,
        limit: UInt64?,
        json: Bool,
        write: (String) -> Void
    ) throws(KeydClientError) {
        var next = from
        var remaining = limit ?? UInt64.max
        var firstPage = true
        var seqWidth = 3
        var pendingJSON: String?
        if json { write("[") }
        while remaining > 0 {
            let ask = UInt16(min(remaining, UInt64(Limits.maxAuditRecordsPerRead)))
            let page = try keyd.readAudit(firstRecord: next, maxRecords: ask)
            if firstPage && !json {
                seqWidth = max(3, String(page.totalRecords.saturatingDecrement).count)
                write(Report.auditHeader(seqWidth: seqWidth))
            }
            firstPage = false
            // keyd never sends more than asked; trusting a longer page would overrun --limit.
            for record in page.records.prefix(Int(ask)) {
                if json {
                    // One record behind, so that every line but the last ends in a comma.
                    if let previous = pendingJSON { write(previous + ",") }
                    pendingJSON = record
                } else {
                    write(Report.auditRow(record, index: next, seqWidth: seqWidth))
                }
                next += 1
                remaining -= 1
            }
            // An empty page is the end; so is reaching the total keyd reported.
            if page.records.isEmpty || next >= page.totalRecords { break }
        }
        if json {
            if let last = pendingJSON { write(last) }
            write("]")
        }
    }

    /// `audit verify`: prints the report, then throws when the log is not intact.
    public static func auditVerify(_ keyd: any KeydAdmin, json: Bool, write: (String) -> Void) throws {
        let answer = try keyd.verifyAudit()
        write(json ? Report.verifyJSON(answer) : Report.verify(answer))
        if !answer.intact { throw KeydctlError.auditNotIntact(answer) }
    }

    /// `policy show`.
    public static func policyShow(_ keyd: any KeydAdmin, json: Bool, write: (String) -> Void) throws {
        let state = try PolicyState(try keyd.policy())
        write(json ? Report.policyJSON(state) : Report.policy(state))
    }

    /// What a refusal of `policy.set` means, where the status's own sentence says less.
    static let policySetRefusals: [StatusCode: String] = [
        .policyRejected:
            "the signature does not verify under the pinned operator key, or the version is not higher than the one in force; see `keydctl audit show` for the reason",
        .wrongPhase: "keyd takes a policy only while it holds the KEK (keydctl kek import)",
    ]

    /// What a refusal of `operatorKey.pin` means, where the status's own sentence says less.
    static let operatorKeyPinRefusals: [StatusCode: String] = [
        .policyRejected: "an operator key is pinned already, and a pinned key is never replaced (keydctl policy show)",
        .wrongPhase:
            "a key is pinned only while keyd holds no KEK (awaitingKEK, or locked after kek lock), before kek import",
    ]

    /// `policy set`: sends the checked policy in its wire form; prints its version and digest.
    public static func setPolicy(
        _ keyd: any KeydAdmin,
        _ checked: PolicyFiles.CheckedPolicy,
        write: (String) -> Void
    ) throws {
        try explainingRefusal(of: .policySet, policySetRefusals) { () throws(KeydClientError) in
            try keyd.setPolicy(signedPolicy: checked.signed.encoded)
        }
        write("policy set: version \(checked.policy.version), sha256 \(Report.hex(checked.signed.digest))")
    }

    /// `policy pin-operator-key`: sends the key in its wire form; prints its algorithm and digest.
    public static func pinOperatorKey(_ keyd: any KeydAdmin, _ key: OperatorKey, write: (String) -> Void) throws {
        try explainingRefusal(of: .operatorKeyPin, operatorKeyPinRefusals) { () throws(KeydClientError) in
            try keyd.pinOperatorKey(key.encoded)
        }
        write("operator key pinned: \(key.algorithm), sha256 \(Report.hex(key.digest))")
    }

    /// Runs `body`; a refusal with a status in `explanations` becomes keydctl's error with that sentence.
    static func explainingRefusal(
        of request: RequestKind,
        _ explanations: [StatusCode: String],
        _ body: () throws(KeydClientError) -> Void
    ) throws {
        do throws(KeydClientError) {
            try body()
        } catch {
            guard let status = error.refusal, let explanation = explanations[status] else { throw error }
            throw KeydctlError.refused(status, request: request, explanation: explanation)
        }
    }

    /// `kek import`: hands keyd the secret's bytes; they stay inside `secret`'s wiped buffers.
    public static func importKEK(_ keyd: any KeydAdmin, _ secret: borrowing MasterSecret) throws(KeydClientError) {
        try secret.key.withUnsafeBytes { (key) throws(KeydClientError) in
            try secret.salt.withUnsafeBytes { (salt) throws(KeydClientError) in
                try keyd.importKEK(masterSecret: key, salt: salt)
            }
        }
    }
}

extension UInt64 {
    fileprivate var saturatingDecrement: UInt64 { self == 0 ? 0 : self - 1 }
}
