import ArgumentParser
import Crypto
import Foundation
import KeydClient
import KeydCore
import KeydProtocol
import KeydctlCLI
import Testing

/// An operator for tests: a private key, its pinned public form, and policies it signs.
struct TestOperator: Sendable, CustomTestStringConvertible {
    let key: OperatorKey
    let sign: @Sendable ([UInt8]) -> [UInt8]
    var testDescription: String { key.algorithm.description }

    static func ed25519() -> TestOperator {
        let privateKey = Curve25519.Signing.PrivateKey()
        return TestOperator(key: OperatorKey(privateKey.publicKey)) { Array(try! privateKey.signature(for: $0)) }
    }

    static func p256() -> TestOperator {
        let privateKey = P256.Signing.PrivateKey()
        return TestOperator(key: OperatorKey(privateKey.publicKey)) {
            Array(try! privateKey.signature(for: SHA256.hash(data: $0)).derRepresentation)
        }
    }

    static let both = [ed25519(), p256()]

    /// Policy JSON of `version` expecting PCR 15 to be 0xab…ab.
    static func policyJSON(version: UInt64) -> [UInt8] {
        let pcr = String(repeating: "AB", count: 32)
        return Array(
            #"{"version":\#(version),"measurements":{"15":"\#(pcr)"},"akTrust":{},"evidenceVariants":["asterism-tpm"]}"#
                .utf8
        )
    }

    /// `json` signed by this operator.
    func signed(_ json: [UInt8]) -> SignedPolicy {
        SignedPolicy(policy: json, signature: sign(SignedPolicy.signedMessage(json)))
    }

    /// A valid policy of `version`, signed.
    func signedPolicy(version: UInt64 = 7) -> SignedPolicy { signed(Self.policyJSON(version: version)) }
}

/// A directory under /tmp removed when the value goes away.
final class TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/keydctl-policy-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        path = String(cString: template)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `bytes` to `name` inside the directory and returns its path.
    func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let file = path + "/" + name
        try Data(bytes).write(to: URL(filePath: file))
        return file
    }
}

/// One refused input: its bytes, the error it must raise and words the message must hold.
struct RefusedInput: CustomTestStringConvertible, Sendable {
    var name: String
    var bytes: [UInt8]
    var error: KeydctlError
    var mentions: [String]
    var testDescription: String { name }

    /// Checks the error a parser raised for this input read from `path`: the code, exit status 3, the
    /// path first, and the words the message must hold.
    func check(_ error: KeydctlError?, path: String) {
        #expect(error == self.error)
        #expect(error?.exitCode == ExitStatus.badInput)
        #expect(error?.description.hasPrefix(path + ": ") == true)
        for word in mentions {
            #expect(error?.description.contains(word) == true, "\(error?.description ?? "") lacks \(word)")
        }
    }
}

struct SignedPolicyFileTests {
    @Test(arguments: TestOperator.both)
    func signedPolicyFileParsesToWhatIsSent(signer: TestOperator) throws {
        let directory = try TemporaryDirectory()
        let signed = signer.signedPolicy(version: 7)
        let checked = try PolicyFiles.readSignedPolicy(path: try directory.file("policy.json", signed.encoded))
        #expect(checked.signed == signed)
        #expect(checked.signed.encoded == signed.encoded)
        #expect(checked.policy.version == 7)
        #expect(checked.signed.digest == Array(SHA256.hash(data: TestOperator.policyJSON(version: 7))))
    }

    @Test func whitespaceAndMemberOrderAreNotSent() throws {
        let signed = TestOperator.ed25519().signedPolicy()
        let text = """

            {
              "signature": "\(Data(signed.signature).base64EncodedString())",
              "policy": "\(Data(signed.policy).base64EncodedString())"
            }

            """
        let checked = try PolicyFiles.signedPolicy(Array(text.utf8), path: "p.json")
        #expect(checked.signed.encoded == signed.encoded)
    }

    @Test func fileOfExactlyTheLimitIsReadAndOneByteMoreIsNot() throws {
        let directory = try TemporaryDirectory()
        let encoded = TestOperator.p256().signedPolicy().encoded
        let limit = PolicyFiles.maximumSignedPolicyLength
        #expect(limit == Limits.maxSignedPolicy)
        let padded = encoded + [UInt8](repeating: 0x20, count: limit - encoded.count)
        #expect(try PolicyFiles.readSignedPolicy(path: try directory.file("limit.json", padded)).policy.version == 7)
        let over = try directory.file("over.json", padded + [0x20])
        let error = #expect(throws: KeydctlError.self) { try PolicyFiles.readSignedPolicy(path: over) }
        #expect(error == .fileTooLarge("", path: "", size: nil, limit: 0))
        #expect(error?.description == "signed policy file \(over) is 16385 bytes, exceeds limit 16384")
        #expect(error?.exitCode == ExitStatus.badInput)
    }

    @Test func hugeFileIsRefusedByItsSizeWithoutBeingRead() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.file("huge.json", [])
        // Sparse: 1 TiB that nobody could read; the message names the size fstat gave.
        #expect(truncate(path, 1 << 40) == 0)
        let error = #expect(throws: KeydctlError.self) { try PolicyFiles.readSignedPolicy(path: path) }
        #expect(error?.description.contains("is 1099511627776 bytes, exceeds limit 16384") == true)
    }

    @Test func nonRegularFilesAreRefusedWithoutReading() throws {
        let directory = try TemporaryDirectory()
        let fifo = directory.path + "/fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        // A FIFO without a writer would block a reader forever; it is refused at once.
        for path in [directory.path, fifo, "/dev/zero", "/dev/null"] {
            let error = #expect(throws: KeydctlError.self, "\(path)") { try PolicyFiles.readSignedPolicy(path: path) }
            #expect(error == .notRegularFile("", path: ""), "\(path)")
            #expect(
                error?.description
                    == "signed policy file \(path) is not a regular file (directory, FIFO, device or socket)"
            )
        }
    }

    @Test func missingAndEmptyFilesAreNamed() throws {
        let directory = try TemporaryDirectory()
        let missing = directory.path + "/missing.json"
        let error = #expect(throws: KeydctlError.self) { try PolicyFiles.readSignedPolicy(path: missing) }
        #expect(error == .cannotOpen("", path: "", errno: 0))
        #expect(error?.description.hasPrefix("cannot open signed policy file \(missing): ") == true)
        let empty = try directory.file("empty.json", [])
        #expect(throws: KeydctlError.fileEmpty("", path: "")) { try PolicyFiles.readSignedPolicy(path: empty) }
    }

    static let signer = TestOperator.ed25519()
    static let refused: [RefusedInput] = {
        let valid = signer.signedPolicy()
        let policy = Data(valid.policy).base64EncodedString()
        let signature = Data(valid.signature).base64EncodedString()
        let bad = KeydctlError.invalidSignedPolicy(path: "", "")
        return [
            RefusedInput(name: "not JSON", bytes: Array("policy v7".utf8), error: bad, mentions: ["does not decode"]),
            RefusedInput(name: "an array", bytes: Array("[]".utf8), error: bad, mentions: ["signed policy"]),
            RefusedInput(
                name: "signature missing",
                bytes: Array(#"{"policy":"\#(policy)"}"#.utf8),
                error: bad,
                mentions: ["signature", "missing"]
            ),
            RefusedInput(
                name: "unknown member",
                bytes: Array(#"{"policy":"\#(policy)","signature":"\#(signature)","version":7}"#.utf8),
                error: bad,
                mentions: ["version"]
            ),
            RefusedInput(
                name: "base64 without padding",
                bytes: Array(#"{"policy":"\#(policy)","signature":"\#(signature.filter { $0 != "=" })"}"#.utf8),
                error: bad,
                mentions: ["signature", "base64"]
            ),
            RefusedInput(
                name: "signed bytes that are no policy",
                bytes: signer.signed(Array("{}".utf8)).encoded,
                error: .invalidPolicy(path: "", ""),
                mentions: ["policy:", "version"]
            ),
            RefusedInput(
                name: "policy version 0",
                bytes: signer.signed(TestOperator.policyJSON(version: 0)).encoded,
                error: .invalidPolicy(path: "", ""),
                mentions: ["version 0"]
            ),
        ]
    }()

    @Test(arguments: refused)
    func malformedSignedPolicyIsRefusedNamingTheProblem(row: RefusedInput) {
        let error = #expect(throws: KeydctlError.self) { try PolicyFiles.signedPolicy(row.bytes, path: "p.json") }
        row.check(error, path: "p.json")
    }
}

struct OperatorKeyFileTests {
    @Test(arguments: TestOperator.both)
    func pemAndWireFormGiveTheKey(signer: TestOperator) throws {
        let directory = try TemporaryDirectory()
        let pem = signer.key.pem
        #expect(try PolicyFiles.readOperatorKey(path: try directory.file("key.pem", Array(pem.utf8))) == signer.key)
        #expect(try PolicyFiles.operatorKey(Array("\n \(pem)\n\n".utf8), path: "k") == signer.key)
        #expect(try PolicyFiles.readOperatorKey(path: try directory.file("key.bin", signer.key.encoded)) == signer.key)
    }

    static let refused: [RefusedInput] = {
        let bad = KeydctlError.invalidOperatorKey(path: "", "")
        return [
            RefusedInput(
                name: "P-384 public key",
                bytes: Array(P384.Signing.PrivateKey().publicKey.pemRepresentation.utf8),
                error: bad,
                mentions: ["other than Ed25519 or ECDSA P-256"]
            ),
            RefusedInput(
                name: "P-256 private key",
                bytes: Array(P256.Signing.PrivateKey().pemRepresentation.utf8),
                error: bad,
                mentions: ["private key", "openssl pkey"]
            ),
            RefusedInput(
                name: "PEM of no key",
                bytes: Array("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".utf8),
                error: bad,
                mentions: ["not a PEM PUBLIC KEY"]
            ),
            RefusedInput(
                name: "text",
                bytes: Array("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI operator\n".utf8),
                error: bad,
                mentions: ["neither a PEM PUBLIC KEY nor keyd's wire form", "algorithm 115"]
            ),
            RefusedInput(
                name: "wire form one byte short",
                bytes: [1] + [UInt8](repeating: 7, count: 31),
                error: bad,
                mentions: ["ed25519 key of 31 bytes"]
            ),
            RefusedInput(
                name: "wire form of a point off the curve",
                bytes: [2, 4] + [UInt8](repeating: 1, count: 64),
                error: bad,
                mentions: ["not an uncompressed point on the curve"]
            ),
        ]
    }()

    @Test(arguments: refused)
    func wrongKindOfKeyIsRefused(row: RefusedInput) {
        let error = #expect(throws: KeydctlError.self) { try PolicyFiles.operatorKey(row.bytes, path: "k.pem") }
        row.check(error, path: "k.pem")
        // Nothing of the file is echoed: no line of a PEM body appears in the message.
        let body = String(decoding: row.bytes, as: UTF8.self).split(separator: "\n").filter { !$0.hasPrefix("-----") }
        #expect(body.allSatisfy { !(error?.description.contains($0) ?? false) })
    }

    @Test func oversizedKeyFileIsRefused() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.file("big.pem", [UInt8](repeating: 0x41, count: PolicyFiles.maximumKeyFileLength + 1))
        #expect(throws: KeydctlError.fileTooLarge("", path: "", size: nil, limit: 0)) {
            try PolicyFiles.readOperatorKey(path: path)
        }
    }
}

struct PolicyActionTests {
    @Test(arguments: TestOperator.both)
    func setSendsTheWireFormAndPrintsVersionAndDigest(signer: TestOperator) throws {
        let keyd = StubKeyd()
        let signed = signer.signedPolicy(version: 9)
        let checked = try PolicyFiles.signedPolicy(signed.encoded, path: "p.json")
        let out = Output()
        try AdminActions.setPolicy(keyd, checked, write: out.write)
        #expect(keyd.policiesSet == [signed.encoded])
        #expect(out.lines == ["policy set: version 9, sha256 \(Report.hex(signed.digest))"])
    }

    @Test(arguments: TestOperator.both)
    func pinSendsTheWireFormAndPrintsItsDigest(signer: TestOperator) throws {
        let keyd = StubKeyd()
        let out = Output()
        try AdminActions.pinOperatorKey(keyd, signer.key, write: out.write)
        #expect(keyd.keysPinned == [signer.key.encoded])
        #expect(
            out.lines == [
                "operator key pinned: \(signer.key.algorithm), sha256 \(Report.hex(Array(SHA256.hash(data: signer.key.encoded))))"
            ]
        )
    }

    /// (request, status keyd answers, what keydctl's message must say)
    static let refusals: [(RequestKind, StatusCode, String)] = [
        (
            .policySet, .policyRejected,
            "keyd refused policy.set: policyRejected (the signature does not verify under the pinned operator key, or the version is not higher than the one in force; see `keydctl audit show` for the reason)"
        ),
        (
            .policySet, .wrongPhase,
            "keyd refused policy.set: wrongPhase (keyd takes a policy only while it holds the KEK"
        ),
        (.policySet, .denied, "keyd refused policy.set: denied (this peer may not send that request)"),
        (.policySet, .auditFailure, "keyd refused policy.set: auditFailure (the audit record could not be written"),
        (
            .operatorKeyPin, .policyRejected,
            "keyd refused operatorKey.pin: policyRejected (an operator key is pinned already, and a pinned key is never replaced"
        ),
        (
            .operatorKeyPin, .wrongPhase,
            "keyd refused operatorKey.pin: wrongPhase (a key is pinned only while keyd holds no KEK"
        ),
        (.operatorKeyPin, .denied, "keyd refused operatorKey.pin: denied (this peer may not send that request)"),
    ]

    @Test(arguments: refusals.indices)
    func refusalsExplainThemselvesAndExitOne(row: Int) throws {
        let (request, status, message) = Self.refusals[row]
        let keyd = StubKeyd()
        keyd.failure = .refused(status, request: request)
        let signer = TestOperator.ed25519()
        let out = Output()
        let error = #expect(throws: (any Error).self) {
            if request == .policySet {
                try AdminActions.setPolicy(
                    keyd,
                    try PolicyFiles.signedPolicy(signer.signedPolicy().encoded, path: "p"),
                    write: out.write
                )
            } else {
                try AdminActions.pinOperatorKey(keyd, signer.key, write: out.write)
            }
        }
        #expect(out.lines.isEmpty)
        #expect(error.map { "\($0)".hasPrefix(message) } == true, "\(String(describing: error))")
        #expect(error.map(ExitStatus.code) == ExitStatus.refused)
    }

    @Test(arguments: TestOperator.both)
    func showPrintsKeyPolicyPEMAndCanonicalJSON(signer: TestOperator) throws {
        let keyd = StubKeyd()
        let signed = signer.signedPolicy(version: 12)
        keyd.policyAnswer = PolicyGetAnswer(signedPolicy: signed.encoded, operatorKey: signer.key.encoded)
        let out = Output()
        try AdminActions.policyShow(keyd, json: false, write: out.write)
        let sections = out.text.components(separatedBy: "\n\n")
        #expect(sections.count == 3)
        #expect(
            sections[0] == """
                operator key:        \(signer.key.algorithm)
                operator key sha256: \(Report.hex(signer.key.digest))
                policy version:      12
                policy sha256:       \(Report.hex(Array(SHA256.hash(data: signed.policy))))
                policy signature:    verifies under the pinned operator key
                """
        )
        #expect(try OperatorKey(pem: sections[1]) == signer.key)
        let canonical = try MeasurementPolicy(json: signed.policy).canonicalJSON
        #expect(sections[2] == String(decoding: canonical, as: UTF8.self))
        // The canonical form spells hex in lowercase, whatever the signed bytes used.
        #expect(sections[2].contains(String(repeating: "ab", count: 32)))
    }

    @Test func showJSONIsOneObjectWithTheStatusNames() throws {
        let keyd = StubKeyd()
        let signer = TestOperator.p256()
        let signed = signer.signedPolicy(version: 3)
        keyd.policyAnswer = PolicyGetAnswer(signedPolicy: signed.encoded, operatorKey: signer.key.encoded)
        let out = Output()
        try AdminActions.policyShow(keyd, json: true, write: out.write)
        #expect(out.lines.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out.text.utf8)) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "operatorKeyPinned", "operatorKeyAlgorithm", "operatorKeyDigest", "operatorKeyPEM", "policyVersion",
                "policyDigest", "policySignatureVerifies", "policy",
            ]
        )
        #expect(object["operatorKeyPinned"] as? Bool == true)
        #expect(object["operatorKeyAlgorithm"] as? String == "ecdsa-p256")
        #expect(object["operatorKeyDigest"] as? String == Report.hex(signer.key.digest))
        #expect(try OperatorKey(pem: try #require(object["operatorKeyPEM"] as? String)) == signer.key)
        #expect((object["policyVersion"] as? NSNumber)?.intValue == 3)
        #expect(object["policyDigest"] as? String == Report.hex(signed.digest))
        #expect(object["policySignatureVerifies"] as? Bool == true)
        let policy = try #require(object["policy"] as? [String: Any])
        #expect((policy["version"] as? NSNumber)?.intValue == 3)
        #expect(policy["evidenceVariants"] as? [String] == ["asterism-tpm"])
    }

    @Test func showWithNothingPinnedSaysSoAndSucceeds() throws {
        let keyd = StubKeyd()
        let out = Output()
        try AdminActions.policyShow(keyd, json: false, write: out.write)
        #expect(
            out.lines == [
                """
                operator key: none pinned (keydctl policy pin-operator-key, or init.accept)
                policy:       none: keyd releases no keys until one is set (keydctl policy set)
                """
            ]
        )
        let json = Output()
        try AdminActions.policyShow(keyd, json: true, write: json.write)
        #expect(
            json.text
                == #"{"operatorKeyPinned":false,"operatorKeyAlgorithm":null,"operatorKeyDigest":null,"operatorKeyPEM":null,"policyVersion":0,"policyDigest":null,"policySignatureVerifies":null,"policy":null}"#
        )
    }

    @Test func showWithAKeyButNoPolicyPrintsTheKey() throws {
        let keyd = StubKeyd()
        let signer = TestOperator.ed25519()
        keyd.policyAnswer = PolicyGetAnswer(signedPolicy: [], operatorKey: signer.key.encoded)
        let out = Output()
        try AdminActions.policyShow(keyd, json: false, write: out.write)
        #expect(out.text.contains("policy:              none: keyd releases no keys"))
        #expect(out.text.hasSuffix(signer.key.pem.trimmingCharacters(in: .newlines)))
    }

    @Test func showFlagsAPolicyThatTheKeyDidNotSign() throws {
        let keyd = StubKeyd()
        keyd.policyAnswer = PolicyGetAnswer(
            signedPolicy: TestOperator.ed25519().signedPolicy().encoded,
            operatorKey: TestOperator.ed25519().key.encoded
        )
        let out = Output()
        try AdminActions.policyShow(keyd, json: false, write: out.write)
        #expect(out.text.contains("policy signature:    DOES NOT VERIFY under the pinned operator key"))
    }

    @Test(arguments: [
        PolicyGetAnswer(signedPolicy: Array("{}".utf8), operatorKey: []),
        PolicyGetAnswer(signedPolicy: [], operatorKey: [9, 9, 9]),
    ])
    func showRefusesAnAnswerItCannotReadWithTwo(answer: PolicyGetAnswer) {
        let keyd = StubKeyd()
        keyd.policyAnswer = answer
        let error = #expect(throws: KeydctlError.self) {
            try AdminActions.policyShow(keyd, json: false, write: { _ in })
        }
        #expect(error?.description.hasPrefix("keyd's policy.get answer does not parse: ") == true)
        #expect(error?.exitCode == ExitStatus.unreachable)
    }
}

/// The commands over a real socket: the request frames keyd receives, and what keydctl makes of the answers.
struct PolicyWireTests {
    /// The body keyd decodes for `request` as the connection's second frame (after hello).
    static func body(_ request: Request) -> [UInt8] {
        Array(RequestFrame(sequence: 1, request: request).encodeFrame().dropFirst(4))
    }

    @Test func policySetFrameCarriesTheSignedPolicy() throws {
        let keyd = try ScriptedKeyd {
            AnswerFrame.encodeStatus(answering: $0.request.kind, sequence: $0.sequence, status: .ok)
        }
        defer { keyd.stop() }
        let signed = TestOperator.p256().signedPolicy().encoded
        let connection = try KeydConnection(path: keyd.path)
        try connection.setPolicy(signedPolicy: signed)
        connection.close()
        let bodies = keyd.requestBodies()
        let length = [UInt8(signed.count >> 8), UInt8(signed.count & 0xFF)]
        #expect(bodies == [[0x00, 0x46, 0, 0, 0, 1] + length + signed])
        #expect(try bodies.map { try RequestFrame.decode(body: $0).request } == [.policySet(signedPolicy: signed)])
    }

    @Test func operatorKeyPinFrameCarriesTheWireForm() throws {
        let keyd = try ScriptedKeyd {
            AnswerFrame.encodeStatus(answering: $0.request.kind, sequence: $0.sequence, status: .ok)
        }
        defer { keyd.stop() }
        let key = TestOperator.ed25519().key.encoded
        let connection = try KeydConnection(path: keyd.path)
        try connection.pinOperatorKey(key)
        connection.close()
        #expect(keyd.requestBodies() == [[0x00, 0x48, 0, 0, 0, 1, 0, 33] + key])
    }

    @Test func oversizedValuesAreRefusedBeforeSending() throws {
        let keyd = try ScriptedKeyd {
            AnswerFrame.encodeStatus(answering: $0.request.kind, sequence: $0.sequence, status: .ok)
        }
        defer { keyd.stop() }
        let connection = try KeydConnection(path: keyd.path)
        #expect(throws: KeydClientError.invalidArgument("")) {
            try connection.setPolicy(signedPolicy: [UInt8](repeating: 0x20, count: Limits.maxSignedPolicy + 1))
        }
        #expect(throws: KeydClientError.invalidArgument("")) {
            try connection.pinOperatorKey([UInt8](repeating: 1, count: Limits.maxOperatorKey + 1))
        }
        connection.close()
        #expect(keyd.requestBodies().isEmpty)
    }

    @Test func policyGetAnswerIsReadAndShown() throws {
        let signer = TestOperator.ed25519()
        let signed = signer.signedPolicy(version: 5)
        let keyd = try ScriptedKeyd { frame in
            AnswerFrame.encode(answering: .policyGet, sequence: frame.sequence, status: .ok, capacity: 2048) {
                PolicyGetAnswer(signedPolicy: signed.encoded, operatorKey: signer.key.encoded).write(&$0)
            }
        }
        defer { keyd.stop() }
        let connection = try KeydConnection(path: keyd.path)
        let out = Output()
        try AdminActions.policyShow(connection, json: false, write: out.write)
        connection.close()
        #expect(keyd.requestBodies() == [Self.body(.policyGet)])
        #expect(out.lines.first?.contains("policy version:      5") == true)
    }

    @Test func policySetCommandSendsTheFileAndExitsOneWhenRefused() throws {
        let directory = try TemporaryDirectory()
        let signed = TestOperator.p256().signedPolicy()
        // Pretty-printed on disk; keyd gets the compact wire form.
        let text =
            #"{ "policy": "\#(Data(signed.policy).base64EncodedString())", "signature": "\#(Data(signed.signature).base64EncodedString())" }"#
        let file = try directory.file("policy.json", Array((text + "\n").utf8))
        let keyd = try ScriptedKeyd {
            AnswerFrame.encodeStatus(answering: $0.request.kind, sequence: $0.sequence, status: .policyRejected)
        }
        defer { keyd.stop() }
        var command = try Keydctl.parseAsRoot(["policy", "set", file, "--socket", keyd.path])
        #expect(throws: ExitCode(ExitStatus.refused)) { try command.run() }
        #expect(keyd.requestBodies() == [Self.body(.policySet(signedPolicy: signed.encoded))])
    }

    @Test(arguments: [["policy", "set"], ["policy", "pin-operator-key"]])
    func badFileEndsWithThreeAndNeverConnects(command: [String]) throws {
        let directory = try TemporaryDirectory()
        let file = try directory.file("bad", Array("{\"policy\":1}".utf8))
        let keyd = try ScriptedKeyd {
            AnswerFrame.encodeStatus(answering: $0.request.kind, sequence: $0.sequence, status: .ok)
        }
        var parsed = try Keydctl.parseAsRoot(command + [file, "--socket", keyd.path])
        #expect(throws: ExitCode(ExitStatus.badInput)) { try parsed.run() }
        keyd.stop()
        #expect(!keyd.wasConnected)
    }

    @Test func pinCommandSendsThePEMKeyInWireForm() throws {
        let directory = try TemporaryDirectory()
        let signer = TestOperator.p256()
        let file = try directory.file("operator.pem", Array(signer.key.pem.utf8))
        let keyd = try ScriptedKeyd {
            AnswerFrame.encodeStatus(answering: $0.request.kind, sequence: $0.sequence, status: .ok)
        }
        defer { keyd.stop() }
        var command = try Keydctl.parseAsRoot(["--socket", keyd.path, "policy", "pin-operator-key", file])
        try command.run()
        #expect(keyd.requestBodies() == [Self.body(.operatorKeyPin(operatorKey: signer.key.encoded))])
    }
}

struct PolicyParsingTests {
    @Test(arguments: [
        ["policy", "set"],
        ["policy", "set", "a.json", "b.json"],
        ["policy", "pin-operator-key"],
        ["policy", "show", "extra"],
        ["policy", "replace", "a.json"],
    ])
    func wrongArgumentsAreUsageErrors(arguments: [String]) {
        let error = #expect(throws: (any Error).self) { try Keydctl.parseAsRoot(arguments) }
        #expect(error.map { Keydctl.exitCode(for: $0).rawValue } == ExitStatus.usage)
    }

    @Test(arguments: [
        ["policy", "show", "--json"],
        ["policy", "set", "-"],
        ["policy", "pin-operator-key", "/etc/keyd/operator.pem"],
    ])
    func wellFormedCommandsParse(arguments: [String]) {
        #expect(throws: Never.self) { try Keydctl.parseAsRoot(arguments) }
    }
}
