import Glibc
import KeydPlatform
import Testing

/// Tests that change this process's environment; serialized so they never see each other's values.
@Suite("Process environment", .serialized)
struct EnvironmentTests {
    /// Runs `body` with `name` set to `value` (nil: unset), restoring the previous value afterwards.
    func withEnvironment<R>(_ name: String, _ value: String?, _ body: () throws -> R) rethrows -> R {
        let saved = getenv(name).map { String(cString: $0) }
        if let value { setenv(name, value, 1) } else { unsetenv(name) }
        defer {
            if let saved { setenv(name, saved, 1) } else { unsetenv(name) }
        }
        return try body()
    }

    /// Binds a datagram socket at `path` and returns it.
    func datagramSocket(path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0)
        return fd
    }

    @Test("SystemdNotify sends READY=1 as one datagram to NOTIFY_SOCKET")
    func notifyPath() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/notify"
            let receiver = try datagramSocket(path: path)
            defer { close(receiver) }
            let sent = try withEnvironment("NOTIFY_SOCKET", path) { try SystemdNotify.send("READY=1") }
            #expect(sent)
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            #expect(count == 7)
            #expect(Array(buffer.prefix(max(count, 0))) == Array("READY=1".utf8))
        }
    }

    @Test("SystemdNotify reaches an abstract socket given as @name")
    func notifyAbstract() throws {
        let name = "keyd-test-notify-\(getpid())"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let nameBytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw[0] = 0
            for (index, byte) in nameBytes.enumerated() { raw[index + 1] = byte }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + 1 + nameBytes.count)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        #expect(bound == 0)
        let sent = try withEnvironment("NOTIFY_SOCKET", "@" + name) { try SystemdNotify.send("STATUS=serving") }
        #expect(sent)
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        #expect(Array(buffer.prefix(max(count, 0))) == Array("STATUS=serving".utf8))
    }

    @Test("SystemdNotify returns false without NOTIFY_SOCKET and refuses a relative one")
    func notifyUnset() throws {
        #expect(try withEnvironment("NOTIFY_SOCKET", nil) { try SystemdNotify.send("READY=1") } == false)
        #expect(throws: SystemError.invalidEnvironment(variable: "NOTIFY_SOCKET", "")) {
            try withEnvironment("NOTIFY_SOCKET", "relative/path") { try SystemdNotify.send("READY=1") }
        }
    }

    @Test("processEnvironment reads LISTEN_* and unsetEnvironment removes them")
    func listenEnvironment() throws {
        let names = SocketActivation.variables
        let saved = names.map { name in getenv(name).map { String(cString: $0) } }
        defer {
            for (name, value) in zip(names, saved) {
                if let value { setenv(name, value, 1) } else { unsetenv(name) }
            }
        }
        setenv("LISTEN_PID", "\(getpid())", 1)
        setenv("LISTEN_FDS", "1", 1)
        setenv("LISTEN_FDNAMES", "keyd", 1)
        let environment = SocketActivation.processEnvironment()
        #expect(environment == ["LISTEN_PID": "\(getpid())", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "keyd"])
        #expect(try SocketActivation.parse(environment: environment, currentPID: getpid()) == ["keyd": 3])

        SocketActivation.unsetEnvironment()
        for name in names { #expect(getenv(name) == nil) }
        #expect(SocketActivation.processEnvironment().isEmpty)
    }
}
