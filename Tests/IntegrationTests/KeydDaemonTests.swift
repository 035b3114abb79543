import Foundation
import KeydClient
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Constellation master-secret JSON with random bytes of the given lengths.
func masterSecretJSON(keyLength: Int = 32, saltLength: Int = 32) -> Data {
    func random(_ count: Int) -> String {
        Data((0..<count).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }
    return Data("{\"key\":\"\(random(keyLength))\",\"salt\":\"\(random(saltLength))\"}".utf8)
}

/// The real keyd binary, driven over its sockets by KeydClient, keydctl and hostile clients.
@Suite(.serialized) struct KeydDaemonTests {
    @Test func statusHelloAndCleanShutdown() throws {
        let keyd = try KeydHarness()
        let admin = try keyd.admin()
        #expect(admin.hello.peerClass == .admin)
        #expect(admin.hello.version == 1)
        let status = try admin.status()
        #expect(status.phase == .awaitingKEK)
        #expect(status.auditIntact)
        #expect(status.auditRecords == 2, "the chain's genesis, then keyd.start")
        admin.close()
        #expect(keyd.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: keyd.socketPath), "socket files removed on SIGTERM")
    }

    @Test func kekLifecycleThroughKeydctl() throws {
        let keyd = try KeydHarness()
        let secret = masterSecretJSON()
        let imported = try keyd.keydctl(["kek", "import", "--file", "-"], stdin: secret)
        #expect(imported.status == 0, "\(imported.stderr)")
        let status = try keyd.keydctl(["status", "--json"])
        #expect(status.status == 0)
        #expect(status.stdout.contains("holdingKEK"))

        // A second import while a KEK is held is refused and changes nothing.
        let again = try keyd.keydctl(["kek", "import", "--file", "-"], stdin: masterSecretJSON())
        #expect(again.status == 1)
        #expect(again.stderr.contains("wrongPhase"))

        #expect(try keyd.keydctl(["kek", "lock"]).status == 0)
        #expect(try keyd.admin().status().phase == .locked)
        // After lock a new KEK may be imported.
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: masterSecretJSON()).status == 0)

        let verify = try keyd.keydctl(["audit", "verify"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let show = try keyd.keydctl(["audit", "show", "--json"])
        #expect(show.status == 0)
        let records = try #require(try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [[String: Any]])
        let events = records.compactMap { $0["event"] as? String }
        #expect(events.filter { $0 == "kek.import" }.count == 3)
        #expect(events.contains("kek.lock"))

        // No secret byte reaches the audit log or keyd's log.
        let object = try #require(try JSONSerialization.jsonObject(with: secret) as? [String: String])
        for value in object.values {
            #expect(!keyd.auditLines.joined().contains(value))
            #expect(!keyd.log.contains(value))
        }
    }

    @Test(arguments: [(15, 32), (32, 31), (65, 32)])
    func badSecretLengthsRefusedByKeydctl(_ keyLength: Int, _ saltLength: Int) throws {
        let keyd = try KeydHarness()
        let result = try keyd.keydctl(
            ["kek", "import", "--file", "-"],
            stdin: masterSecretJSON(keyLength: keyLength, saltLength: saltLength)
        )
        #expect(result.status == 3, "\(result.stderr)")
        #expect(try keyd.admin().status().phase == .awaitingKEK)
    }

    @Test(arguments: [(15, 32), (32, 31), (65, 32)])
    func secretLengthsEnforcedByKeydItself(_ masterLength: Int, _ saltLength: Int) throws {
        let keyd = try KeydHarness()
        // Bypass keydctl's checks: under the minimum is invalidArgument (connection kept), over the
        // maximum is malformed (connection closed), as PROTOCOL.md's secret<min,max> says.
        let client = try RawClient(path: keyd.adminSocketPath)
        let master = [UInt8](repeating: 1, count: masterLength)
        let salt = [UInt8](repeating: 2, count: saltLength)
        let frame = master.withUnsafeBytes { m in
            salt.withUnsafeBytes { s in RequestFrame.encodeKEKImport(sequence: 1, masterSecret: m, salt: s) }
        }
        client.send(RawClient.hello() + frame + RequestFrame(sequence: 2, request: .status).encodeFrame())
        let answers = client.readAnswers(3)
        let tooLong = masterLength > 64
        #expect(answers.map(\.status) == (tooLong ? [.ok, .malformed] : [.ok, .invalidArgument, .ok]))
        #expect(try keyd.admin().status().phase == .awaitingKEK)
        let record = try #require(keyd.auditLines.last { !$0.contains("\"status\":\"ok\"") })
        if tooLong {
            #expect(record.contains("protocol.violation") && record.contains("malformed"))
        } else {
            #expect(record.contains("\"event\":\"kek.import\"") && record.contains("invalidArgument"))
        }
    }

    @Test func garbageBytesCloseOnlyThatConnection() throws {
        let keyd = try KeydHarness()
        let bystander = try keyd.admin()
        let hostile = try RawClient(path: keyd.adminSocketPath)
        hostile.send(RawClient.hello() + [0x00, 0x00, 0x00, 0x08, 0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x00, 0x00, 0x01])
        let answers = RawClient.answers(in: hostile.readToEnd())
        #expect(answers.last?.status == .unknownRequest)
        #expect(try bystander.status().phase == .awaitingKEK, "other connections keep being served")
        #expect(keyd.auditLines.contains { $0.contains("protocol.violation") && $0.contains("unknownRequest") })
    }

    @Test func hugeLengthPrefixIsRefusedBeforeAllocation() throws {
        let keyd = try KeydHarness()
        let hostile = try RawClient(path: keyd.adminSocketPath)
        hostile.send([0x40, 0x00, 0x00, 0x00])  // 1 GiB
        let answers = RawClient.answers(in: hostile.readToEnd())
        #expect(answers.count == 1)
        #expect(answers.first?.isConnectionError == true)
        #expect(answers.first?.status == .frameLength)
        #expect(keyd.auditLines.contains { $0.contains("exceeds limit 65536") })
        #expect(try keyd.admin().status().auditIntact)
    }

    @Test func halfFrameThenDisconnectIsAudited() throws {
        let keyd = try KeydHarness()
        do {
            let hostile = try RawClient(path: keyd.adminSocketPath)
            hostile.send(Array(RawClient.hello().prefix(7)))
        }
        // keyd notices the hang-up and records it; then it still serves.
        var found = false
        for _ in 0..<100 where !found {
            found = keyd.auditLines.contains { $0.contains("disconnected mid-frame") }
            if !found { usleep(20_000) }
        }
        #expect(found)
        #expect(try keyd.admin().status().phase == .awaitingKEK)
    }

    @Test func slowFrameTimesOut() throws {
        let keyd = try KeydHarness(configuration: ["frame-timeout-ms = 300"])
        let hostile = try RawClient(path: keyd.adminSocketPath)
        hostile.send([0x00, 0x00, 0x00])
        let answers = RawClient.answers(in: hostile.readToEnd())
        #expect(answers.first?.status == .timeout)
        #expect(answers.first?.isConnectionError == true)
    }

    @Test func unsupportedRequestKeepsTheConnection() throws {
        let keyd = try KeydHarness(configuration: ["trustd-uids = \(geteuid())"])
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: masterSecretJSON()).status == 0)
        // compat.release is served only with constellation-compatibility on (off by default).
        let trustd = try KeydConnection(path: keyd.socketPath)
        let request = CompatReleaseRequest(
            challengeID: [UInt8](repeating: 2, count: 16),
            evidence: [1],
            certificateKeyHash: [UInt8](repeating: 1, count: 32),
            diskUUID: "00000000-0000-0000-0000-000000000000",
            role: .worker,
            nodeName: "node-1"
        )
        let answer = try trustd.roundTrip(.compatRelease(request))
        #expect(answer.status == .unsupported)
        #expect(try trustd.status().phase == .holdingKEK)
    }

    @Test func thousandConcurrentConnections() throws {
        raiseOpenFileLimit()
        // trustd's socket: the admin socket has a budget of its own (32 by default).
        let keyd = try KeydHarness(configuration: ["trustd-uids = \(geteuid())", "max-connections-per-uid = 1024"])
        var clients: [RawClient] = []
        for _ in 0..<1000 { clients.append(try RawClient(path: keyd.socketPath)) }
        let request = RawClient.hello() + RequestFrame(sequence: 1, request: .status).encodeFrame()
        for client in clients { client.send(request) }
        // Each client reads its two answers (hello, status).
        let answered = clients.filter { $0.readAnswers(2).map(\.status) == [.ok, .ok] }.count
        #expect(answered == 1000)
        let status = try keyd.admin().status()
        #expect(status.connections >= 1000)
        clients.removeAll()
    }

    @Test(.needsRoot) func clientUnderAnotherUIDIsDenied() throws {
        let keyd = try KeydHarness(configuration: ["admin-socket-mode = 0666", "trustd-socket-mode = 0666"])
        let result = try keyd.keydctl(["status"], asUser: 65534)
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        #expect(result.stderr.contains("denied"))
        #expect(keyd.auditLines.contains { $0.contains("\"status\":\"denied\"") && $0.contains("\"uid\":65534") })
        // The trustd socket with no trustd uid configured: a stranger too.
        let trustd = try runCommand(
            "/usr/bin/setpriv",
            [
                "--reuid=65534", "--regid=65534", "--clear-groups", BuiltProducts.keydctl, "--socket", keyd.socketPath,
                "status",
            ]
        )
        #expect(trustd.status == 1)
        #expect(try keyd.admin().status().phase == .awaitingKEK)
    }

    @Test(.needsRoot) func capabilitiesAreReducedAndSealed() throws {
        let keyd = try KeydHarness()
        let status = try String(contentsOfFile: "/proc/\(keyd.pid)/status", encoding: .utf8)
        func field(_ name: String) -> String? {
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }.map {
                $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)
            }
        }
        // CAP_SYS_ADMIN (21) and CAP_IPC_LOCK (14) only.
        let expected = String(format: "%016llx", (UInt64(1) << 21) | (UInt64(1) << 14))
        #expect(field("CapEff") == expected)
        #expect(field("CapPrm") == expected)
        #expect(field("CapInh") == "0000000000000000")
        #expect(field("CapBnd") == expected)
        #expect(field("CapAmb") == "0000000000000000")
        #expect(field("NoNewPrivs") == "1")
        #expect(keyd.log.contains("memory=locked on fault"))
    }

    @Test func auditVerifyDetectsEditsAndTruncation() throws {
        let keyd = try KeydHarness()
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: masterSecretJSON()).status == 0)
        #expect(try keyd.keydctl(["kek", "lock"]).status == 0)
        let path = keyd.stateDirectory + "/audit.log"
        let original = try String(contentsOfFile: path, encoding: .utf8)

        // Edited: change a decision in record 2 (0 is the chain's genesis, 1 keyd.start).
        let edited = original.replacingOccurrences(
            of: "\"event\":\"kek.import\",\"decision\":\"granted\"",
            with: "\"event\":\"kek.import\",\"decision\":\"refused\""
        )
        try edited.write(toFile: path, atomically: false, encoding: .utf8)
        let afterEdit = try keyd.admin().verifyAudit()
        #expect(!afterEdit.intact && afterEdit.problem == .edited && afterEdit.firstBadRecord == 2)
        #expect(try keyd.keydctl(["audit", "verify"]).status == 1)

        // Truncated: drop the last record.
        var lines = original.split(separator: "\n")
        lines.removeLast()
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        let afterCut = try keyd.admin().verifyAudit()
        #expect(!afterCut.intact && afterCut.problem == .truncated)

        // Reordered: swap records 1 and 2.
        var swapped = original.split(separator: "\n")
        swapped.swapAt(1, 2)
        try (swapped.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        #expect(try keyd.admin().verifyAudit().problem == .reorderedOrMissing)

        try original.write(toFile: path, atomically: false, encoding: .utf8)
        #expect(try keyd.admin().verifyAudit().intact)
    }

    @Test func socketActivationAndReadyNotification() throws {
        // python3 plays systemd: two listening sockets on fds 3 and 4, LISTEN_* set, NOTIFY_SOCKET bound.
        var template = Array("/tmp/keyd-sa-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let script = """
            import os, socket, sys, time, signal
            d = sys.argv[1]; keyd = sys.argv[2]
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); notify.bind(d + "/notify")
            s1 = socket.socket(socket.AF_UNIX); s1.bind(d + "/keyd.sock"); s1.listen(16)
            s2 = socket.socket(socket.AF_UNIX); s2.bind(d + "/admin.sock"); s2.listen(16)
            pid = os.fork()
            if pid == 0:
                os.dup2(s1.fileno(), 3); os.dup2(s2.fileno(), 4)
                os.set_inheritable(3, True); os.set_inheritable(4, True)
                env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS="2", LISTEN_FDNAMES="keyd:admin", NOTIFY_SOCKET=d + "/notify")
                with open(d + "/admin-uids.conf", "w") as f: f.write("admin-uids = %d\\n" % os.geteuid())
                os.execve(keyd, [keyd, "--state-dir", d + "/state", "--config", d + "/admin-uids.conf"], env)
            notify.settimeout(10)
            message = notify.recv(4096).decode()
            print("NOTIFY " + message.replace("\\n", " "))
            c = socket.socket(socket.AF_UNIX); c.connect(d + "/admin.sock")
            c.sendall(bytes([0,0,0,10, 0,1, 0,0,0,0, 0,1, 0,1]))
            answer = c.recv(64)
            print("ANSWER " + answer.hex())
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
            print("EXIT %d" % os.waitstatus_to_exitcode(status))
            """
        let result = try runCommand("/usr/bin/env", ["python3", "-c", script, directory, BuiltProducts.keyd])
        #expect(result.stdout.contains("NOTIFY READY=1"), "\(result.stdout)\(result.stderr)")
        // hello answer: kind 0x8001, sequence 0, status ok, version 1, peer admin (2).
        #expect(result.stdout.contains("ANSWER 0000000c80010000000000000001"), "\(result.stdout)")
        #expect(result.stdout.contains("EXIT 0"))
        #expect(result.stderr.contains("socket.activated=true"))
    }

    @Test func badCommandLineIsAUsageError() throws {
        let result = try runCommand(BuiltProducts.keyd, ["--socket", "/tmp/x.sock"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("--state-dir is required"))
        let relative = try runCommand(
            BuiltProducts.keyd,
            ["--state-dir", "state", "--socket", "a", "--admin-socket", "b"]
        )
        #expect(relative.status == 64)
    }

    @Test func badConfigurationStopsStartup() throws {
        var template = Array("/tmp/keyd-cfg-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "max-connections = lots\n".write(toFile: directory + "/keyd.conf", atomically: true, encoding: .utf8)
        let result = try runCommand(
            BuiltProducts.keyd,
            [
                "--state-dir", directory + "/state", "--socket", directory + "/k.sock", "--admin-socket",
                directory + "/a.sock",
                "--config", directory + "/keyd.conf",
            ]
        )
        #expect(result.status == 1)
        #expect(result.stderr.contains("max-connections"))
    }
}
