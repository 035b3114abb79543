import FoundationEssentials
import Testing

@testable import KeydCore

/// keyd's `key = value` configuration file.
@Suite struct KeydConfigurationTests {
    /// The key list every unknown-key message names; the keys themselves are checked by `documentedKeys`.
    static let knownKeys = KeydConfiguration.keys.joined(separator: ", ")

    @Test func documentedKeys() throws {
        // The README's keyd configuration table lists exactly the keys keyd accepts, in the same order.
        let readme = try String(
            contentsOfFile: String(#filePath.prefix(upTo: #filePath.range(of: "/Tests/")!.lowerBound)) + "/README.md",
            encoding: .utf8
        )
        // Only keyd's section: trustd's table has keys of the same names.
        let section = try #require(readme.range(of: "\n## keyd\n"))
        var documented: [String] = []
        for line in readme[section.upperBound...].split(separator: "\n").prefix(while: { !$0.hasPrefix("## ") })
        where line.hasPrefix("| `") {
            let cell = line.dropFirst(2).prefix { $0 != "|" }
            let names = cell.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard names.allSatisfy({ $0.hasPrefix("`") && $0.hasSuffix("`") }) else { continue }
            let keys = names.map { String($0.dropFirst().dropLast()) }
            if keys.allSatisfy(KeydConfiguration.keys.contains) { documented += keys }
        }
        #expect(documented == KeydConfiguration.keys)
        #expect(
            try KeydConfiguration.parse("tpm-kek-handle = 0x81010b00\ntpm-audit-counter-index = 0x01000001")
                .tpmKEKHandle
                == 0x8101_0B00
        )
        #expect(throws: CoreError.self) { try KeydConfiguration.parse("tpm-audit-counter-index = 0x81000000") }
    }

    @Test func defaults() throws {
        let configuration = try KeydConfiguration.parse("")
        #expect(configuration == KeydConfiguration())
        #expect(configuration.trustdUIDs == [])
        #expect(configuration.trustdGIDs == [])
        #expect(configuration.adminUIDs == [0])
        #expect(configuration.adminGIDs == [])
        #expect(configuration.maxConnections == 1024)
        #expect(configuration.maxConnectionsPerUID == 256)
        #expect(configuration.maxAdminConnections == 32)
        #expect(configuration.frameTimeoutMilliseconds == 5000)
        #expect(configuration.helloTimeoutMilliseconds == 2000)
        #expect(configuration.idleTimeoutMilliseconds == 60_000)
        #expect(configuration.evidencePerSecond == 4 && configuration.evidenceBurst == 8)
        #expect(configuration.evidencePerSecondPerConnection == 2 && configuration.evidenceBurstPerConnection == 4)
        #expect(configuration.trustdSocketMode == 0o660)
        #expect(configuration.adminSocketMode == 0o600)
        #expect(configuration.diskAllowInitialize == false)
    }

    @Test func fullFile() throws {
        let text = """
            # keyd configuration
            trustd-uids = 990, 991
            trustd-gids = 990

              admin-uids=0,1000\t
            admin-gids = 
            \t# indented comment
            max-connections = 64
            max-connections-per-uid = 16
            max-admin-connections = 4
            frame-timeout-ms = 100
            hello-timeout-ms = 250
            idle-timeout-ms = 1000
            evidence-per-second = 100000
            evidence-burst = 1
            evidence-per-second-per-connection = 3
            evidence-burst-per-connection = 5
            trustd-socket-mode = 0666
            admin-socket-mode = 600
            disk-allow-initialize = true
            state-disk-mapping = asterism-state_1
            constellation-compatibility = true
            kubernetes-ca-certificate = /etc/kubernetes/pki/ca.crt
            kubernetes-ca-key = /etc/kubernetes/pki/ca.key
            tpm-trust-counter-index = 0x01a57e07
            """
        var expected = KeydConfiguration()
        expected.trustdUIDs = [990, 991]
        expected.trustdGIDs = [990]
        expected.adminUIDs = [0, 1000]
        expected.adminGIDs = []
        expected.maxConnections = 64
        expected.maxConnectionsPerUID = 16
        expected.maxAdminConnections = 4
        expected.frameTimeoutMilliseconds = 100
        expected.helloTimeoutMilliseconds = 250
        expected.idleTimeoutMilliseconds = 1000
        expected.evidencePerSecond = 100_000
        expected.evidenceBurst = 1
        expected.evidencePerSecondPerConnection = 3
        expected.evidenceBurstPerConnection = 5
        expected.trustdSocketMode = 0o666
        expected.adminSocketMode = 0o600
        expected.diskAllowInitialize = true
        expected.stateDiskMapping = "asterism-state_1"
        expected.constellationCompatibility = true
        expected.kubernetesCACertificate = "/etc/kubernetes/pki/ca.crt"
        expected.kubernetesCAKey = "/etc/kubernetes/pki/ca.key"
        expected.tpmTrustCounterIndex = 0x01A5_7E07
        #expect(try KeydConfiguration.parse(text) == expected)
    }

    @Test func crlfLineEndsAndTrailingNewline() throws {
        let configuration = try KeydConfiguration.parse("max-connections = 7\r\nadmin-uids = 5\r\n")
        #expect(configuration.maxConnections == 7)
        #expect(configuration.adminUIDs == [5])
    }

    /// (text, value read back)
    static let limits: [(String, KeydConfiguration)] = [
        (
            "max-connections = 1",
            {
                var c = KeydConfiguration()
                c.maxConnections = 1
                return c
            }()
        ),
        (
            "max-connections = 65536",
            {
                var c = KeydConfiguration()
                c.maxConnections = 65_536
                return c
            }()
        ),
        (
            "frame-timeout-ms = 600000",
            {
                var c = KeydConfiguration()
                c.frameTimeoutMilliseconds = 600_000
                return c
            }()
        ),
        (
            "admin-socket-mode = 0",
            {
                var c = KeydConfiguration()
                c.adminSocketMode = 0
                return c
            }()
        ),
        (
            "admin-socket-mode = 0777",
            {
                var c = KeydConfiguration()
                c.adminSocketMode = 0o777
                return c
            }()
        ),
        (
            "trustd-uids = 4294967294",
            {
                var c = KeydConfiguration()
                c.trustdUIDs = [4_294_967_294]
                return c
            }()
        ),
        (
            "admin-uids =",
            {
                var c = KeydConfiguration()
                c.adminUIDs = []
                return c
            }()
        ),
        ("disk-allow-initialize = false", KeydConfiguration()),
        (
            "disk-allow-initialize=true",
            {
                var c = KeydConfiguration()
                c.diskAllowInitialize = true
                return c
            }()
        ),
        ("disk-profile = asterism", KeydConfiguration()),
        (
            "disk-profile = constellation",
            {
                var c = KeydConfiguration()
                c.diskProfile = .constellation
                return c
            }()
        ),
        (
            "state-disk-device = /dev/disk/by-id/virtio-state",
            {
                var c = KeydConfiguration()
                c.stateDiskDevice = "/dev/disk/by-id/virtio-state"
                return c
            }()
        ),
    ]

    @Test(arguments: limits)
    func valuesAtTheirLimits(text: String, expected: KeydConfiguration) throws {
        #expect(try KeydConfiguration.parse(text) == expected)
    }

    /// One refused file: its text, the error and the exact message.
    struct Refusal: Sendable, CustomTestStringConvertible {
        let text: String
        let error: CoreError
        let message: String
        var testDescription: String { message }
    }

    static let refusals: [Refusal] = [
        Refusal(
            text: "max-connections = 10\nnonsense",
            error: .configurationMissingEquals(lineNumber: 0),
            message: "configuration line 2: expected 'key = value', found no '='"
        ),
        Refusal(
            text: "# comment\n\nmax-conections = 10",
            error: .configurationUnknownKey(lineNumber: 0, key: "", known: []),
            message: "configuration line 3: unknown key 'max-conections'; known keys: " + Self.knownKeys
        ),
        Refusal(
            text: "Admin-UIDs = 0",
            error: .configurationUnknownKey(lineNumber: 0, key: "", known: []),
            message: "configuration line 1: unknown key 'Admin-UIDs'; known keys: " + Self.knownKeys
        ),
        Refusal(
            text: "= 5",
            error: .configurationUnknownKey(lineNumber: 0, key: "", known: []),
            message: "configuration line 1: unknown key ''; known keys: " + Self.knownKeys
        ),
        Refusal(
            text: "admin-uids = 0\nmax-connections = 5\nadmin-uids = 1",
            error: .configurationDuplicateKey(lineNumber: 0, key: "", firstLineNumber: 0),
            message: "configuration line 3: key 'admin-uids' already set on line 1"
        ),
        Refusal(
            text: "max-connections = ten",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'max-connections' value 'ten' is not a decimal number"
        ),
        Refusal(
            text: "max-connections = -1",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'max-connections' value '-1' is not a decimal number"
        ),
        Refusal(
            text: "frame-timeout-ms =",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'frame-timeout-ms' value '' is not a decimal number"
        ),
        Refusal(
            text: "max-connections = 10 # ten",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'max-connections' value '10 # ten' is not a decimal number"
        ),
        Refusal(
            text: "trustd-uids = 990,,991",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'trustd-uids' value '' is not a comma-separated list of decimal ids"
        ),
        Refusal(
            text: "trustd-gids = 990,",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'trustd-gids' value '' is not a comma-separated list of decimal ids"
        ),
        Refusal(
            text: "admin-gids = wheel",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'admin-gids' value 'wheel' is not a comma-separated list of decimal ids"
        ),
        Refusal(
            text: "trustd-socket-mode = 0o660",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'trustd-socket-mode' value '0o660' is not an octal mode such as 0660"
        ),
        Refusal(
            text: "trustd-socket-mode = 0680",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'trustd-socket-mode' value '0680' is not an octal mode such as 0660"
        ),
        Refusal(
            text: "max-connections = 0",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'max-connections' value 0 is outside 1…65536"
        ),
        Refusal(
            text: "max-connections = 65537",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'max-connections' value 65537 is outside 1…65536"
        ),
        Refusal(
            text: "max-admin-connections = 0",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'max-admin-connections' value 0 is outside 1…65536"
        ),
        Refusal(
            text: "hello-timeout-ms = 99",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'hello-timeout-ms' value 99 is outside 100…600000"
        ),
        Refusal(
            text: "idle-timeout-ms = 999",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'idle-timeout-ms' value 999 is outside 1000…86400000"
        ),
        Refusal(
            text: "evidence-per-second = 0",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'evidence-per-second' value 0 is outside 1…100000"
        ),
        Refusal(
            text: "evidence-burst-per-connection = 100001",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'evidence-burst-per-connection' value 100001 is outside 1…100000"
        ),
        Refusal(
            text: "max-connections = 99999999999999999999999",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'max-connections' value 99999999999999999999999 is outside 1…65536"
        ),
        Refusal(
            text: "max-connections = " + String(repeating: "9", count: 5000),
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'max-connections' value 999999999999999999999999… is outside 1…65536"
        ),
        Refusal(
            text: "frame-timeout-ms = 99",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'frame-timeout-ms' value 99 is outside 100…600000"
        ),
        Refusal(
            text: "frame-timeout-ms = 600001",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'frame-timeout-ms' value 600001 is outside 100…600000"
        ),
        Refusal(
            text: "trustd-uids = 1, 4294967295",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'trustd-uids' value 4294967295 is outside 0…4294967294"
        ),
        Refusal(
            text: "admin-gids = 4294967296",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'admin-gids' value 4294967296 is outside 0…4294967294"
        ),
        Refusal(
            text: "admin-socket-mode = 1777",
            error: .configurationOutOfRange(lineNumber: 0, key: "", value: "", limit: ""),
            message: "configuration line 1: 'admin-socket-mode' value 1777 is outside 0000…0777"
        ),
        Refusal(
            text: "# big\n" + String(repeating: "#", count: 65_536),
            error: .configurationTooLarge(byteCount: 0, limit: 0),
            message: "configuration is 65542 bytes, exceeds limit 65536"
        ),
        Refusal(
            text: "bad\u{1B}[2Jkey\n",
            error: .configurationMissingEquals(lineNumber: 0),
            message: "configuration line 1: expected 'key = value', found no '='"
        ),
        Refusal(
            text: "bad\u{1B}[2Jkey = 1\n",
            error: .configurationUnknownKey(lineNumber: 0, key: "", known: []),
            message: #"configuration line 1: unknown key 'bad\u{1b}[2Jkey'; known keys: "# + Self.knownKeys
        ),
        Refusal(
            text: "disk-allow-initialize = yes",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'disk-allow-initialize' value 'yes' is not true or false"
        ),
        Refusal(
            text: "disk-allow-initialize = TRUE",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'disk-allow-initialize' value 'TRUE' is not true or false"
        ),
        Refusal(
            text: "disk-profile = luks1",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'disk-profile' value 'luks1' is not asterism or constellation"
        ),
        Refusal(
            text: "state-disk-device = dev/vdb",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'state-disk-device' value 'dev/vdb' is not an absolute path"
        ),
        Refusal(
            text: "state-disk-mapping = ../state",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message:
                "configuration line 1: 'state-disk-mapping' value '../state' is not a device-mapper name of 1 to 64 letters, digits, '-', '_' or '.'"
        ),
        Refusal(
            text: "kubernetes-ca-key = ca.key",
            error: .configurationBadNumber(lineNumber: 0, key: "", value: "", expected: ""),
            message: "configuration line 1: 'kubernetes-ca-key' value 'ca.key' is not an absolute path"
        ),
    ]

    @Test(arguments: refusals)
    func refused(refusal: Refusal) {
        do {
            let configuration = try KeydConfiguration.parse(refusal.text)
            Issue.record("accepted: \(configuration)")
        } catch {
            #expect(error == refusal.error)
            #expect(error.message == refusal.message)
        }
    }

    @Test func largestFileIsAccepted() throws {
        let text = "max-connections = 3\n" + String(repeating: "#", count: 65_536 - 20)
        #expect(text.utf8.count == 65_536)
        #expect(try KeydConfiguration.parse(text).maxConnections == 3)
    }

    @Test func firstErrorWins() {
        #expect(throws: CoreError.configurationUnknownKey(lineNumber: 0, key: "", known: [])) {
            try KeydConfiguration.parse("unknown = 1\nmax-connections = 0")
        }
    }
}
