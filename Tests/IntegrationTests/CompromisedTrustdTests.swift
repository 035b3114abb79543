import Foundation
import KeydClient
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The compromised-trustd table (issue 13): trustd's own uid attacks keyd's event loop. Every row ends
/// with `AttackChecks`: refused or limited with its documented status, audited where PROTOCOL.md audits
/// it (a hello or frame deadline is a violation; `busy` refusals and idle closes are routine and only
/// counted in keyd's log), the admin served within 1 s, a watched directory unchanged, memory flat.
@Suite(.serialized) struct CompromisedTrustdTests {
    /// keyd with this test's euid as trustd and `extra` configuration lines, and the rows' checks.
    static func keyd(_ extra: [String]) throws -> (KeydHarness, AttackChecks) {
        let keyd = try KeydHarness(configuration: ["trustd-uids = \(geteuid())"] + extra)
        return (keyd, try AttackChecks(keyd, watched: try WatchedDirectory(beside: keyd)))
    }

    /// `count` connections to keyd's trustd socket.
    static func connect(_ count: Int, to keyd: KeydHarness) throws -> [RawClient] {
        raiseOpenFileLimit()
        return try (0..<count).map { _ in try RawClient(path: keyd.socketPath) }
    }

    static func isConnectionError(_ answer: AnswerFrame?, _ status: StatusCode) -> Bool {
        answer?.isConnectionError == true && answer?.status == status
    }

    @Test func idleConnectionHog() throws {
        // All 1,024 slots of the trustd socket taken by hello'd, idle connections, and 6 more.
        let (keyd, checks) = try Self.keyd(["max-connections-per-uid = 1024", "hello-timeout-ms = 10000"])
        let hogs = try Self.connect(1030, to: keyd)
        for hog in hogs { hog.send(RawClient.hello()) }
        let first = hogs.map { $0.readAnswers(1).first }
        #expect(first.filter { $0?.status == .ok && $0?.isConnectionError == false }.count == 1024)
        #expect(
            first.filter { Self.isConnectionError($0, .busy) }.count == 6,
            "busy at accept, as the connection error"
        )

        // The admin socket has its own budget: while the hogs hold on, every keydctl command works.
        try withExtendedLifetime(hogs) {
            let commands: [[String]] = [
                ["status"], ["kek", "import", "--file", "-"], ["audit", "verify"], ["audit", "show"],
                ["tpm", "status"], ["kek", "lock"],
            ]
            for command in commands {
                let result = try keyd.keydctl(command, stdin: command.contains("import") ? masterSecretJSON() : nil)
                #expect(result.status == 0, "keydctl \(command): \(result.stdout)\(result.stderr)")
            }
            #expect(try keyd.admin().status().connections >= 1024)
            #expect(keyd.log.contains("Connections refused busy"), "busy refusals are counted in keyd's log")
            try checks.verify(notAudited: { $0.contains("protocol.violation") }, "idle-connection hog")
        }
    }

    @Test func idleConnectionsAreClosedAtTheIdleDeadlineUnaudited() throws {
        let (keyd, checks) = try Self.keyd(["max-connections-per-uid = 50", "idle-timeout-ms = 1000"])
        let hogs = try Self.connect(60, to: keyd)
        for hog in hogs { hog.send(RawClient.hello()) }
        let greeted = hogs.filter { $0.readAnswers(1).first?.status == .ok }
        #expect(greeted.count == 50, "one uid holds its share of the trustd socket, no more")
        // Each idle connection gets the connection error `timeout`, then end of file.
        for hog in greeted {
            let rest = hog.readAnswers(2)
            #expect(rest.count == 1 && Self.isConnectionError(rest.first, .timeout), "\(rest)")
        }
        // The slots are free again.
        #expect(try KeydConnection(path: keyd.socketPath).hello.peerClass == .trustd)
        #expect(keyd.log.contains("Idle connections closed"), "idle closes are counted in keyd's log")
        try checks.verify(notAudited: { $0.contains("protocol.violation") }, "idle connections")
    }

    @Test func helloHog() throws {
        let (keyd, checks) = try Self.keyd(["max-connections-per-uid = 1024", "hello-timeout-ms = 300"])
        // Connections that never say hello, and some that start it and stop.
        let silent = try Self.connect(300, to: keyd)
        let halfway = try Self.connect(20, to: keyd)
        for client in halfway { client.send(Array(RawClient.hello().prefix(3))) }
        #expect(try checks.adminStatusSeconds() < 1.0)
        for client in silent + halfway {
            let answers = client.readAnswers(2)
            #expect(answers.count == 1 && Self.isConnectionError(answers.first, .timeout), "\(answers)")
        }
        try checks.verify(
            audited: { $0.contains("protocol.violation") && $0.contains("hello not received in time") },
            "hello hog"
        )
    }

    @Test(.needsSwtpm) func evidenceFlood() throws {
        let tpm = try SoftwareTPM()
        let (keyd, checks) = try Self.keyd([
            "tpm-tcti = \(tpm.tcti)", "max-connections-per-uid = 1024", "hello-timeout-ms = 10000",
        ])
        let flood = try Self.connect(1000, to: keyd)
        let evidence = EvidenceRequest(
            variant: .native,
            nonce: [UInt8](repeating: 1, count: 32),
            userDataDigest: [UInt8](repeating: 2, count: 32)
        )
        let pipeline =
            RawClient.hello() + RequestFrame(sequence: 1, request: .evidenceIssue(evidence)).encodeFrame()
            + RequestFrame(sequence: 2, request: .evidenceIssue(evidence)).encodeFrame()
        let began = Date()
        for client in flood { client.send(pipeline) }
        // While keyd works through the 2,000 evidence requests, the admin is served first.
        for _ in 0..<5 { #expect(try checks.adminStatusSeconds() < 1.0) }

        var evidenceStatuses: [StatusCode: Int] = [:]
        for client in flood {
            let answers = client.readAnswers(3)
            #expect(answers.count == 3, "rateLimited keeps the connection: \(answers)")
            for answer in answers.dropFirst() { evidenceStatuses[answer.status, default: 0] += 1 }
        }
        let issued = evidenceStatuses[.ok, default: 0]
        #expect(Set(evidenceStatuses.keys).isSubset(of: [.ok, .rateLimited]), "\(evidenceStatuses)")
        // The uid's bucket (defaults: bursts of 8, 4 per second) bounds what reached the TPM.
        let allowed = 8 + Int(4 * Date().timeIntervalSince(began)) + 1
        #expect(issued >= 1 && issued <= allowed, "\(issued) issued, at most \(allowed) allowed: \(evidenceStatuses)")
        #expect(evidenceStatuses[.rateLimited, default: 0] == 2000 - issued, "\(evidenceStatuses)")
        #expect(
            try KeydTPMTests.tpmStatus(keyd)["evidenceIssued"] as? Int == issued,
            "only admitted work reached the TPM"
        )
        try checks.verify(
            audited: { $0.contains("\"event\":\"evidence.issue\"") && $0.contains("\"status\":\"rateLimited\"") },
            "evidence flood"
        )
    }

    @Test func pipelinedStatusReadLateIsNotCutOff() throws {
        let (keyd, checks) = try Self.keyd(["frame-timeout-ms = 200"])
        let client = try RawClient(path: keyd.socketPath)
        var pipeline = RawClient.hello()
        for sequence in 1...5000 {
            pipeline += RequestFrame(sequence: UInt32(sequence), request: .status).encodeFrame()
        }
        client.send(pipeline)
        // The attack is the pause itself: nothing is read for five frame timeouts while keyd's answers
        // fill the socket (there is no event to wait for: keyd must simply not cut the peer off).
        usleep(1_000_000)
        #expect(try checks.adminStatusSeconds() < 1.0)
        let answers = client.readAnswers(5001)
        #expect(answers.count == 5001 && answers.allSatisfy { $0.status == .ok })
        #expect(answers.map(\.sequence) == Array(0...5000))
        // The connection is still open.
        client.send(RequestFrame(sequence: 5001, request: .status).encodeFrame())
        #expect(client.readAnswers(1).first?.status == .ok)
        try checks.verify(notAudited: { $0.contains("protocol.violation") }, "pipelined status read late")
    }

    @Test func inspectFloodIsCountedNotWrittenRecordByRecord() throws {
        // 10,000 routine inspections of the configured state disk, then 2,000 refused ones (a path named).
        let image = try KeydStateDiskTests.makeImage(in: FileManager.default.temporaryDirectory.path)
        defer { try? FileManager.default.removeItem(atPath: image) }
        let (keyd, checks) = try Self.keyd(["state-disk-device = \(image)", "max-connections-per-uid = 1024"])
        let before = keyd.auditLines.count
        let client = try RawClient(path: keyd.socketPath)
        var pipeline = RawClient.hello()
        for sequence in 1...10_000 {
            pipeline += RequestFrame(sequence: UInt32(sequence), request: .diskInspect(device: "")).encodeFrame()
        }
        client.send(pipeline)
        let answers = client.readAnswers(10_001)
        #expect(answers.count == 10_001 && answers.allSatisfy { $0.status == .ok })
        let afterRoutine = keyd.auditLines.count
        #expect(
            afterRoutine == before,
            "routine inspections are counted, not written: \(afterRoutine - before) records"
        )

        // Probing paths: each is denied and closes its connection; the repeats fold into one record.
        for _ in 0..<2000 {
            let probe = try RawClient(path: keyd.socketPath)
            probe.send(
                RawClient.hello()
                    + RequestFrame(sequence: 1, request: .diskInspect(device: "/etc/shadow")).encodeFrame()
            )
            _ = probe.readAnswers(2)
        }
        let afterProbes = keyd.auditLines.count
        #expect(afterProbes - afterRoutine == 1, "\(afterProbes - afterRoutine) records for 2,000 probes")
        try checks.verify(
            audited: { $0.contains("\"status\":\"denied\"") && $0.contains("/etc/shadow") },
            "inspect flood"
        )

        // At stop the counts and the repeats are written: two records for 12,000 requests.
        keyd.waitForExit(afterSignal: SIGTERM)
        let lines = keyd.auditLines
        #expect(lines.contains { $0.contains("\"audit.summary\"") && $0.contains("\"disk.inspect\":\"10000\"") })
        #expect(lines.contains { $0.contains("\"audit.repeated\"") && $0.contains("\"repeats\":\"1999\"") })
        #expect(lines.count - before <= 4, "summary, repeats, keyd.stop: \(lines.count - before)")
    }

}
