import KeydClient
import KeydProtocol
import KeydctlCLI

/// A canned keyd: fixed answers, an audit log in memory, and a record of what was asked.
final class StubKeyd: KeydAdmin {
    var statusAnswer = StatusAnswer(
        protocolVersion: 1,
        phase: .holdingKEK,
        peerClass: .admin,
        uptimeSeconds: 93_784,
        requestsServed: 12,
        connections: 1,
        auditRecords: 3,
        auditHead: Array(0..<32),
        auditIntact: true,
        keydVersion: "0.1.0"
    )
    var verifyAnswer = AuditVerifyAnswer(
        intact: true,
        records: 3,
        firstBadRecord: 3,
        problem: .none,
        headHash: Array(0..<32)
    )
    /// Audit lines served by `readAudit`.
    var records: [String] = []
    /// Most records keyd puts in one answer (it stops early when the frame is full).
    var pageCapacity = Int(Limits.maxAuditRecordsPerRead)
    /// When set, every call throws it.
    var failure: KeydClientError?
    /// `readAudit` calls as (firstRecord, maxRecords).
    private(set) var reads: [(first: UInt64, max: UInt16)] = []
    /// Bytes passed to `importKEK`.
    private(set) var imported: (key: [UInt8], salt: [UInt8])?
    private(set) var locks = 0
    /// What `policy` answers (nothing pinned, no policy by default).
    var policyAnswer = PolicyGetAnswer(signedPolicy: [], operatorKey: [])
    /// Bytes passed to `setPolicy`, one entry per call.
    private(set) var policiesSet: [[UInt8]] = []
    /// Bytes passed to `pinOperatorKey`, one entry per call.
    private(set) var keysPinned: [[UInt8]] = []

    func status() throws(KeydClientError) -> StatusAnswer {
        if let failure { throw failure }
        return statusAnswer
    }

    func importKEK(masterSecret: UnsafeRawBufferPointer, salt: UnsafeRawBufferPointer) throws(KeydClientError) {
        if let failure { throw failure }
        imported = (Array(masterSecret), Array(salt))
    }

    func lockKEK() throws(KeydClientError) {
        if let failure { throw failure }
        locks += 1
    }

    func readAudit(firstRecord: UInt64, maxRecords: UInt16) throws(KeydClientError) -> AuditReadAnswer {
        if let failure { throw failure }
        reads.append((firstRecord, maxRecords))
        let start = Int(min(firstRecord, UInt64(records.count)))
        let end = min(start + min(Int(maxRecords), pageCapacity), records.count)
        return AuditReadAnswer(totalRecords: UInt64(records.count), records: Array(records[start..<end]))
    }

    func verifyAudit() throws(KeydClientError) -> AuditVerifyAnswer {
        if let failure { throw failure }
        return verifyAnswer
    }

    func policy() throws(KeydClientError) -> PolicyGetAnswer {
        if let failure { throw failure }
        return policyAnswer
    }

    func setPolicy(signedPolicy: [UInt8]) throws(KeydClientError) {
        if let failure { throw failure }
        policiesSet.append(signedPolicy)
    }

    func pinOperatorKey(_ operatorKey: [UInt8]) throws(KeydClientError) {
        if let failure { throw failure }
        keysPinned.append(operatorKey)
    }

    /// A log of `count` records shaped like keyd's.
    static func auditLines(_ count: Int) -> [String] {
        (0..<count).map { seq in
            #"{"seq":\#(seq),"time":"2026-11-25T13:50:41Z","event":"kek.import","decision":"granted","status":"ok","peer":{"class":"admin","uid":0,"gid":0,"pid":812},"detail":{"reason":"r\#(seq)","disk":"vda"},"prev":"\#(String(repeating: "0", count: 64))"}"#
        }
    }
}
