import KeydClient
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
