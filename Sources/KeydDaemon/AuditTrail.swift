import KeydCore
import KeydPlatform
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// keyd's audit log on disk: one chain in segment files, each line under the TPM-sealed audit key,
/// every line counted by the TPM's NV counter, so that keyd finds at start (and `audit.verify` at any
/// time) a log cut at a line boundary, rewritten without the key, rolled back or removed.
///
/// Files in the state directory: `audit.log` (the segment being written) and `audit.log.<n>` (earlier
/// segments of the chain, `n` the sequence number of their first record, 12 digits). A chain keyd can
/// no longer check (written under another key) is kept as `audit.archive.<time>.<name>`, unread.
/// Verification streams the files in bounded memory: a large log slows start-up, never stops it.
final class AuditTrail {
    /// The segment being written.
    static let currentName = "audit.log"
    /// A segment is closed and a new one begun once it holds this many bytes.
    static let segmentLimit = 8 << 20

    /// The state directory.
    private let state: StateDirectory
    /// The TPM that holds the audit key and counter, or nil (an unanchored chain).
    private let tpm: TPMService?
    /// The chain's head.
    private(set) var chain: AuditChain
    /// The segment being written.
    private var current: AppendOnlyFile
    /// Its size in bytes.
    private var currentSize: Int
    /// The chain's segments, oldest first, with the sequence number of their first record; the last is `current`.
    private var segments: [(name: String, firstSequence: UInt64)]
    /// The anchor of the last group made durable (the TPM counter's value once it is counted), or nil
    /// when the chain is not anchored in a TPM.
    private var committedAnchor: UInt64?
    /// The last group is durable but the TPM did not count it: it is counted before the next one is written.
    private var uncountedGroup = false
    /// Records staged for the next group, in order; written by ``commit()``.
    private var staged: [StagedRecord] = []
    /// Records staged since the last commit.
    var stagedCount: Int { staged.count }
    /// Bumped by every ``commit()`` that had records: the group staged records belong to.
    private(set) var openGroup: UInt64 = 0

    /// A record waiting for its group's commit.
    private struct StagedRecord {
        var event: AuditEvent
        var granted: Bool
        var status: StatusCode
        var peer: AuditPeer
        var detail: [(key: String, value: String)]
        var time: Int64
    }
    /// What the start-up check found.
    let startCheck: AuditVerification
    /// Notes keyd writes after `keyd.start`: what start-up moved aside, began or found.
    private(set) var startNotes:
        [(event: AuditEvent, granted: Bool, status: StatusCode, detail: [(key: String, value: String)])] = []

    /// Whether the chain is anchored in the TPM (keyed and counted).
    var anchored: Bool { committedAnchor != nil }

    /// Opens the log in `state`: moves aside a `audit.log` that is not a regular file, checks the
    /// chain against the key and the counter, and begins a new chain when there is none it can check.
    init(state: StateDirectory, tpm: TPMService?, keyd: AuditPeer, now: () -> Int64) throws {
        self.state = state
        self.tpm = tpm
        var notes: [(event: AuditEvent, granted: Bool, status: StatusCode, detail: [(key: String, value: String)])] = []

        // An audit.log the host replaced with a symlink, FIFO or directory is renamed, never opened.
        do {
            current = try state.openLog(Self.currentName, mode: 0o600)
        } catch let error as SystemError where error.code == .unexpectedFileType {
            let aside = "audit.log.rejected-\(now())"
            try state.moveAside(Self.currentName, to: aside)
            notes.append(
                (.stateRejected, false, .ok, [("entry", Self.currentName), ("movedTo", aside), ("reason", "\(error)")])
            )
            Log.error("Audit log was not a regular file; moved aside", ["audit.entry": aside, "error": "\(error)"])
            current = try state.openLog(Self.currentName, mode: 0o600)
        }
        segments = try Self.closedSegments(in: state) + [(Self.currentName, 0)]
        let (link, newKeyReason) = tpm?.auditLink() ?? (.unkeyed, nil)

        // Check the chain as it stands.
        var scanner = AuditScanner(link: link)
        var torn = 0
        var firstSequences: [UInt64] = []
        for segment in segments {
            firstSequences.append(scanner.records)
            var splitter = AuditLineSplitter()
            let feed: (UnsafeRawBufferPointer) -> Void = { chunk in splitter.feed(chunk) { scanner.consume($0) } }
            if segment.name == Self.currentName {
                try current.stream(feed)
            } else {
                _ = try state.stream(segment.name, feed)
            }
            torn = splitter.pendingBytes
        }
        currentSize = try current.size()
        for index in segments.indices { segments[index].firstSequence = firstSequences[index] }
        var verification = scanner.result(tornBytes: 0)
        if torn > 0 {
            // A torn last line (keyd stopped mid-write) is cut so the next record starts on its own line.
            try current.truncate(to: currentSize - torn)
            currentSize -= torn
            Log.warning("Audit log ended in a torn record; cut it", ["audit.path": current.path, "bytes": "\(torn)"])
        }

        let counter = try tpm?.auditCounter()
        var beginReason: String?
        if scanner.records == 0 {
            // Nothing to check: a first start, unless the TPM has counted records of a log now gone.
            if let counter, newKeyReason == nil {
                verification = verification.reporting(
                    .truncated,
                    at: 0,
                    "the log is empty but the TPM counter stands at \(counter): the log was removed"
                )
                beginReason = "the log was removed (TPM counter at \(counter))"
            } else {
                beginReason = newKeyReason ?? "first start"
            }
        } else if verification.problem == .unverifiable || newKeyReason != nil || scanner.genesis == nil {
            // A chain under another key, or none keyd can read: keep it aside and begin anew.
            let why = newKeyReason ?? verification.explanation
            verification = verification.reporting(.unverifiable, at: 0, "the chain cannot be checked: \(why)")
            let archived = try Self.archive(segments.map(\.name), in: state, stamp: now())
            notes.append(
                (.auditCheck, false, .ok, [("problem", "unverifiable"), ("archived", archived.joined(separator: ","))])
            )
            beginReason = "the previous chain cannot be checked (\(why)); archived"
            current = try state.openLog(Self.currentName, mode: 0o600)
            currentSize = 0
        } else if case .keyed = link, scanner.genesis?.counterBase != nil, let lastAnchor = scanner.lastAnchor {
            if let counter {
                switch AuditAnchor.compare(lastAnchor: lastAnchor, counter: counter) {
                case .consistent: break
                case .lastGroupUncounted: try tpm?.countAuditRecord()
                case .groupsMissing(let missing):
                    verification = verification.reporting(
                        .truncated,
                        at: scanner.records - scanner.uncommittedRecords,
                        "the TPM counted \(missing) more commits than the log holds: records were removed at the end"
                    )
                case .counterBehind(let extra):
                    verification = verification.reporting(
                        .unverifiable,
                        at: scanner.records,
                        "the log holds \(extra) more commits than the TPM counted: another TPM, or its state was rolled back"
                    )
                }
            } else {
                // The counter the chain was anchored in is gone: nothing left to compare its length with.
                verification = verification.reporting(
                    .unverifiable,
                    at: scanner.records,
                    "the TPM counter the chain was anchored in is gone"
                )
                let archived = try Self.archive(segments.map(\.name), in: state, stamp: now())
                notes.append(
                    (
                        .auditCheck, false, .ok,
                        [("problem", "unverifiable"), ("archived", archived.joined(separator: ","))]
                    )
                )
                beginReason = "the TPM counter of the previous chain is gone; archived"
                current = try state.openLog(Self.currentName, mode: 0o600)
                currentSize = 0
            }
        }

        if let beginReason {
            segments = [(Self.currentName, 0)]
            chain = AuditChain(link: link)
            committedAnchor = nil
            startCheck = verification
            startNotes = notes
            try begin(reason: beginReason, keyd: keyd, time: now())
        } else {
            chain = AuditChain(link: link, nextSequence: scanner.records, headMAC: scanner.headMAC)
            committedAnchor = scanner.genesis?.counterBase == nil ? nil : scanner.lastAnchor
            startCheck = verification
            startNotes = notes
        }
        if !verification.intact {
            startNotes.append(
                (
                    .auditCheck, false, .ok,
                    [("problem", verification.problem.description), ("explanation", verification.explanation)]
                )
            )
            Log.error(
                "Audit log check failed at start",
                ["audit.problem": "\(verification.problem)", "reason": verification.explanation]
            )
        }
    }

    /// Writes a chain's genesis: the counter's present value (defining the counter when needed) and why.
    private func begin(reason: String, keyd: AuditPeer, time: Int64) throws {
        var base: UInt64?
        if case .keyed = chain.link, let tpm {
            do {
                base = try tpm.definedAuditCounter()
            } catch {
                Log.error("Audit counter unavailable; the chain is not anchored", ["error": "\(error)"])
            }
        }
        committedAnchor = base
        try append(
            event: .auditChain,
            granted: true,
            status: .ok,
            peer: keyd,
            detail: AuditChain.genesisDetail(link: chain.link, counterBase: base, reason: reason),
            time: time
        )
    }

    /// Stages one record for the next group; nothing is written until ``commit()``.
    func stage(
        event: AuditEvent,
        granted: Bool,
        status: StatusCode,
        peer: AuditPeer,
        detail: [(key: String, value: String)],
        time: Int64
    ) {
        staged.append(
            StagedRecord(event: event, granted: granted, status: status, peer: peer, detail: detail, time: time)
        )
    }

    /// Writes the staged records as one group: one write, one fsync, then one count in the TPM (the
    /// group's last line carries the counter's value once counted). A group that cannot be made
    /// durable throws, is dropped whole and leaves the head where the file ends; a group the TPM did
    /// not count is counted before the next one is written, and that failing fails the next commit.
    func commit() throws {
        guard !staged.isEmpty else { return }
        openGroup &+= 1
        defer { staged.removeAll(keepingCapacity: staged.count <= 64) }
        if uncountedGroup, let tpm {
            try tpm.countAuditRecord()
            uncountedGroup = false
        }
        let anchor = committedAnchor.map { $0 + 1 }
        var next = chain
        var bytes: [UInt8] = []
        bytes.reserveCapacity(staged.count * 448)
        for (index, record) in staged.enumerated() {
            let (line, after) = next.appending(
                event: record.event,
                decision: record.granted ? .granted : .refused,
                status: record.status.description,
                peer: record.peer,
                detail: record.detail,
                anchor: index == staged.count - 1 ? anchor : nil,
                time: record.time
            )
            bytes += line
            next = after
        }
        do {
            try current.append(bytes)
            try current.sync()
        } catch {
            // Nothing of a failed group may stay: the next group chains to the head keyd holds.
            try? current.truncate(to: currentSize)
            throw error
        }
        chain = next
        currentSize += bytes.count
        committedAnchor = anchor
        if anchor != nil {
            do {
                try tpm?.countAuditRecord()
            } catch {
                uncountedGroup = true
                Log.error("Audit group not counted in the TPM", ["error": "\(error)"])
            }
        }
        if currentSize >= Self.segmentLimit { rotate() }
    }

    /// Stages one record and commits it with whatever else is staged.
    func append(
        event: AuditEvent,
        granted: Bool,
        status: StatusCode,
        peer: AuditPeer,
        detail: [(key: String, value: String)],
        time: Int64
    ) throws {
        stage(event: event, granted: granted, status: status, peer: peer, detail: detail, time: time)
        try commit()
    }

    /// Closes the current segment under its first record's number and begins a new one.
    private func rotate() {
        guard let first = segments.last?.firstSequence else { return }
        let closed = Self.segmentName(first)
        do {
            try state.rename(Self.currentName, to: closed)
            try state.sync()
            current = try state.openLog(Self.currentName, mode: 0o600)
            currentSize = 0
            segments[segments.count - 1].name = closed
            segments.append((Self.currentName, chain.nextSequence))
        } catch {
            Log.error("Audit segment not rotated; the current one grows", ["error": "\(error)"])
        }
    }

    /// Checks the whole chain now: every line, the head keyd holds in memory, and the TPM counter.
    func verify() -> AuditVerification {
        var scanner = AuditScanner(link: chain.link, expectedHead: (records: chain.nextSequence, mac: chain.headMAC))
        var torn = 0
        do {
            for segment in segments {
                var splitter = AuditLineSplitter()
                let feed: (UnsafeRawBufferPointer) -> Void = { chunk in splitter.feed(chunk) { scanner.consume($0) } }
                if segment.name == Self.currentName {
                    try current.stream(feed)
                } else if try !state.stream(segment.name, feed) {
                    return AuditVerification.unreadable("segment \(segment.name) is missing")
                }
                torn = splitter.pendingBytes
            }
        } catch {
            return AuditVerification.unreadable("\(error)")
        }
        var verification = scanner.result(tornBytes: torn)
        if verification.intact && scanner.records > chain.nextSequence {
            // Lines keyd never wrote were appended after its head.
            verification = verification.reporting(
                .edited,
                at: chain.nextSequence,
                "records after keyd's head \(chain.nextSequence) were not written by keyd"
            )
        }
        if committedAnchor != nil {
            guard let lastAnchor = scanner.lastAnchor else {
                return verification.reporting(.unparsable, at: 0, "the anchored chain carries no anchor")
            }
            let counter: UInt64
            do {
                guard let value = try tpm?.auditCounter() else {
                    return verification.reporting(.unverifiable, at: scanner.records, "the TPM counter is gone")
                }
                counter = value
            } catch {
                Log.error("Audit counter unreadable", ["error": "\(error)"])
                return verification.reporting(
                    .unverifiable,
                    at: scanner.records,
                    "the TPM counter could not be read: \(error)"
                )
            }
            switch AuditAnchor.compare(lastAnchor: lastAnchor, counter: counter) {
            case .consistent: break
            case .lastGroupUncounted where uncountedGroup: break
            case .lastGroupUncounted:
                verification = verification.reporting(
                    .unverifiable,
                    at: scanner.records,
                    "the log's last commit is one ahead of the TPM counter, which keyd counted"
                )
            case .groupsMissing(let missing):
                verification = verification.reporting(
                    .truncated,
                    at: scanner.records - scanner.uncommittedRecords,
                    "the TPM counted \(missing) more commits than the log holds"
                )
            case .counterBehind(let extra):
                verification = verification.reporting(
                    .unverifiable,
                    at: scanner.records,
                    "the log holds \(extra) more commits than the TPM counted"
                )
            }
        }
        return verification
    }

    /// Up to `maxRecords` records from `first` on that fit in `budget` answer bytes, and the total.
    func read(first: UInt64, maxRecords: Int, budget: Int) -> (records: [String], total: UInt64)? {
        var records: [String] = []
        var remaining = budget
        // Start in the segment that holds `first`.
        let start = segments.lastIndex { $0.firstSequence <= first } ?? 0
        var index = segments[start].firstSequence
        do {
            for segment in segments[start...] {
                guard records.count < maxRecords, remaining > 0 else { break }
                var splitter = AuditLineSplitter()
                let feed: (UnsafeRawBufferPointer) -> Void = { chunk in
                    splitter.feed(chunk) { line in
                        defer { index += 1 }
                        guard index >= first, records.count < maxRecords, remaining > 0 else { return }
                        let text = Self.printable(line, index: index)
                        let size = AuditReadAnswer.encodedSize(ofRecord: text.utf8.count)
                        guard size <= remaining else {
                            remaining = 0
                            return
                        }
                        remaining -= size
                        records.append(text)
                    }
                }
                if segment.name == Self.currentName {
                    try current.stream(feed)
                } else {
                    _ = try state.stream(segment.name, feed)
                }
            }
        } catch {
            Log.error("Audit log unreadable", ["error": "\(error)"])
            return nil
        }
        return (records, chain.nextSequence)
    }

    /// A line as `audit.read` hands it out: the record, or a note that it is not printable text.
    private static func printable(_ line: UnsafeRawBufferPointer, index: UInt64) -> String {
        let valid =
            line.count <= Limits.maxAuditRecord && !line.contains(where: { $0 < 0x20 || $0 == 0x7F })
            && String(validating: line, as: UTF8.self) != nil
        guard valid else {
            return
                "{\"seq\":\(index),\"invalid\":\"record is not printable text of at most \(Limits.maxAuditRecord) bytes\"}"
        }
        return String(decoding: line, as: UTF8.self)
    }

    /// `audit.log.<first sequence, 12 digits>`.
    static func segmentName(_ firstSequence: UInt64) -> String {
        let digits = String(firstSequence)
        return "audit.log." + String(repeating: "0", count: max(0, 12 - digits.count)) + digits
    }

    /// The closed segments in `state`, by their first sequence number.
    private static func closedSegments(in state: StateDirectory) throws -> [(name: String, firstSequence: UInt64)] {
        try state.entries().compactMap { name -> (name: String, firstSequence: UInt64)? in
            guard name.hasPrefix("audit.log."), name.count == "audit.log.".count + 12,
                let first = UInt64(name.dropFirst("audit.log.".count)), segmentName(first) == name
            else { return nil }
            return (name, first)
        }.sorted { $0.firstSequence < $1.firstSequence }
    }

    /// Renames `names` to `audit.archive.<stamp>.<name>`; the new names.
    private static func archive(_ names: [String], in state: StateDirectory, stamp: Int64) throws -> [String] {
        var archived: [String] = []
        for name in names where try state.contains(name) {
            let aside = "audit.archive.\(stamp).\(name)"
            try state.moveAside(name, to: aside)
            archived.append(aside)
        }
        return archived
    }
}
