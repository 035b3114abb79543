import Glibc
import KeydPlatform
import Testing

@Suite("Socket activation")
struct SocketActivationTests {
    static let pid: Int32 = 4242

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let environment: [String: String]
        /// nil: parse must throw.
        let expected: [String: Int32]?
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "not activated", environment: [:], expected: [:]),
        Case(name: "unrelated variables", environment: ["PATH": "/bin"], expected: [:]),
        Case(
            name: "two named sockets",
            environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "keyd:admin"],
            expected: ["keyd": 3, "admin": 4]
        ),
        Case(
            name: "one socket without names",
            environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "1"],
            expected: ["unknown": 3]
        ),
        Case(
            name: "empty name defaults to unknown",
            environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "keyd:"],
            expected: ["keyd": 3, "unknown": 4]
        ),
        Case(name: "zero descriptors", environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "0"], expected: [:]),
        Case(
            name: "zero descriptors, empty names",
            environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "0", "LISTEN_FDNAMES": ""],
            expected: [:]
        ),
        Case(
            name: "LISTEN_PID of another process",
            environment: ["LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "keyd"],
            expected: nil
        ),
        Case(name: "LISTEN_PID missing", environment: ["LISTEN_FDS": "1"], expected: nil),
        Case(name: "LISTEN_FDS missing", environment: ["LISTEN_PID": "4242"], expected: nil),
        Case(name: "names without the rest", environment: ["LISTEN_FDNAMES": "keyd"], expected: nil),
        Case(name: "LISTEN_PID not a number", environment: ["LISTEN_PID": "42a", "LISTEN_FDS": "1"], expected: nil),
        Case(name: "LISTEN_PID zero", environment: ["LISTEN_PID": "0", "LISTEN_FDS": "1"], expected: nil),
        Case(name: "LISTEN_PID with sign", environment: ["LISTEN_PID": "+4242", "LISTEN_FDS": "1"], expected: nil),
        Case(name: "LISTEN_FDS not a number", environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "two"], expected: nil),
        Case(name: "LISTEN_FDS negative", environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "-1"], expected: nil),
        Case(name: "LISTEN_FDS empty", environment: ["LISTEN_PID": "4242", "LISTEN_FDS": ""], expected: nil),
        Case(
            name: "LISTEN_FDS overflows",
            environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "99999999999999999999999"],
            expected: nil
        ),
        Case(name: "too many descriptors", environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "17"], expected: nil),
        Case(
            name: "fewer names than descriptors",
            environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "keyd"],
            expected: nil
        ),
        Case(
            name: "more names than descriptors",
            environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "keyd:admin"],
            expected: nil
        ),
        Case(
            name: "duplicate names",
            environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "keyd:keyd"],
            expected: nil
        ),
        Case(
            name: "two unnamed descriptors collide",
            environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "2"],
            expected: nil
        ),
    ]

    @Test("parse", arguments: cases)
    func parse(_ testCase: Case) throws {
        if let expected = testCase.expected {
            #expect(try SocketActivation.parse(environment: testCase.environment, currentPID: Self.pid) == expected)
        } else {
            let error = #expect(throws: SystemError.self) {
                try SocketActivation.parse(environment: testCase.environment, currentPID: Self.pid)
            }
            #expect(error?.code == .invalidEnvironment)
        }
    }

    @Test("the maximum count is accepted and numbered from 3")
    func maximumCount() throws {
        let count = SocketActivation.maxDescriptors
        let names = (0..<count).map { "s\($0)" }
        let result = try SocketActivation.parse(
            environment: [
                "LISTEN_PID": "4242", "LISTEN_FDS": "\(count)", "LISTEN_FDNAMES": names.joined(separator: ":"),
            ],
            currentPID: Self.pid
        )
        #expect(result.count == count)
        #expect(result["s0"] == 3)
        #expect(result["s\(count - 1)"] == Int32(2 + count))
    }

    @Test("messages name the value and the limit")
    func messages() {
        let mismatch = #expect(throws: SystemError.self) {
            try SocketActivation.parse(environment: ["LISTEN_PID": "7", "LISTEN_FDS": "1"], currentPID: 8)
        }
        #expect(mismatch?.description == "environment(LISTEN_PID): 7 is not this process 8")
        let tooMany = #expect(throws: SystemError.self) {
            try SocketActivation.parse(environment: ["LISTEN_PID": "8", "LISTEN_FDS": "100"], currentPID: 8)
        }
        #expect(tooMany?.description == "environment(LISTEN_FDS): count 100 exceeds limit 16")
    }

    @Test("a listening Unix socket is accepted")
    func validateListener() throws {
        try withTemporaryDirectory { directory in
            let listener = try UnixListener.bind(path: directory + "/k.sock", mode: 0o600)
            defer { try? listener.close(unlinkingPath: true) }
            try SocketActivation.validateListeningUnixSocket(fd: listener.fd.rawValue)
        }
    }

    @Test("a socketpair end is not a listening socket")
    func validateSocketPair() throws {
        let (a, b) = try UnixSocket.socketPair()
        defer {
            try? a.close()
            try? b.close()
        }
        let error = #expect(throws: SystemError.self) {
            try SocketActivation.validateListeningUnixSocket(fd: a.rawValue)
        }
        #expect(error?.code == .notListeningUnixSocket)
    }

    @Test("a datagram socket and a regular file are refused")
    func validateOthers() throws {
        let datagram = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(datagram >= 0)
        defer { close(datagram) }
        #expect(throws: SystemError.notListeningUnixSocket(fd: datagram, "")) {
            try SocketActivation.validateListeningUnixSocket(fd: datagram)
        }
        let file = open("/proc/self/status", O_RDONLY)
        #expect(file >= 0)
        defer { close(file) }
        #expect(throws: SystemError.errno(ENOTSOCK, call: "getsockopt")) {
            try SocketActivation.validateListeningUnixSocket(fd: file)
        }
    }

    @Test("a listening TCP socket is refused")
    func validateTCP() throws {
        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(tcp >= 0)
        defer { close(tcp) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(tcp, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        #expect(bound == 0)
        #expect(listen(tcp, 1) == 0)
        let error = #expect(throws: SystemError.self) { try SocketActivation.validateListeningUnixSocket(fd: tcp) }
        #expect(error?.description.contains("is not AF_UNIX") == true)
    }

    @Test("a descriptor number that is not open is an error, not a crash")
    func validateClosed() {
        #expect(throws: SystemError.errno(EBADF, call: "getsockopt")) {
            try SocketActivation.validateListeningUnixSocket(fd: 987_654)
        }
    }
}
