import Glibc
import KeydPlatform
import Testing

@Suite("Unix sockets and peer credentials")
struct SocketTests {
    @Test("socketpair peer credentials are this process")
    func socketPairCredentials() throws {
        let (a, b) = try UnixSocket.socketPair()
        defer {
            try? a.close()
            try? b.close()
        }
        let credentials = try PeerCredentials.read(from: a)
        #expect(credentials == PeerCredentials(pid: getpid(), uid: geteuid(), gid: getegid()))
        #expect(try PeerCredentials.read(from: b) == credentials)
    }

    @Test("a bound listener accepts a connection whose credentials match both ends")
    func listenerAccepts() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/keyd.sock"
            let listener = try UnixListener.bind(path: path, mode: 0o660)
            defer { try? listener.close(unlinkingPath: true) }
            #expect(fileMode(path)?.type == S_IFSOCK)
            #expect(fileMode(path)?.permissions == 0o660)
            #expect(try listener.accept() == nil)  // nothing waiting yet

            let client = try UnixSocket.connect(path: path)
            defer { try? client.close() }
            #expect(try waitReadable(listener.fd))
            let server = try #require(try listener.accept())
            defer { try? server.close() }
            let expected = PeerCredentials(pid: getpid(), uid: geteuid(), gid: getegid())
            #expect(try PeerCredentials.read(from: server) == expected)
            #expect(try PeerCredentials.read(from: client) == expected)

            // The accepted socket is nonblocking and close-on-exec.
            #expect(fcntl(server.rawValue, F_GETFL) & O_NONBLOCK != 0)
            #expect(fcntl(server.rawValue, F_GETFD) & FD_CLOEXEC != 0)
            #expect(fcntl(listener.fd.rawValue, F_GETFD) & FD_CLOEXEC != 0)

            try client.writeAll(Array("ping".utf8))
            #expect(try waitReadable(server))
            #expect(try readSome(server) == Array("ping".utf8))
        }
    }

    @Test("close(unlinkingPath:) removes the socket file")
    func closeUnlinks() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/keyd.sock"
            let listener = try UnixListener.bind(path: path, mode: 0o600)
            #expect(fileMode(path)?.permissions == 0o600)
            try listener.close(unlinkingPath: true)
            #expect(fileMode(path) == nil)
        }
    }

    @Test("a stale socket file is replaced")
    func staleSocketReplaced() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/keyd.sock"
            // Leave a socket file behind with nobody listening.
            try UnixListener.bind(path: path, mode: 0o600).close(unlinkingPath: false)
            #expect(fileMode(path)?.type == S_IFSOCK)
            #expect(throws: SystemError.errno(ECONNREFUSED, call: "connect")) { try UnixSocket.connect(path: path) }

            let listener = try UnixListener.bind(path: path, mode: 0o600)
            defer { try? listener.close(unlinkingPath: true) }
            let client = try UnixSocket.connect(path: path)
            try client.close()
        }
    }

    @Test("a live listener's socket file is not taken over")
    func liveSocketRefused() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/keyd.sock"
            let first = try UnixListener.bind(path: path, mode: 0o600)
            defer { try? first.close(unlinkingPath: true) }
            #expect(throws: SystemError.errno(EADDRINUSE, call: "bind")) {
                try UnixListener.bind(path: path, mode: 0o600)
            }
            // The first listener still works.
            let client = try UnixSocket.connect(path: path)
            try client.close()
        }
    }

    @Test("a regular file at the socket path is refused and left in place")
    func regularFileRefused() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/keyd.sock"
            try StateDirectory(path: directory, creatingWith: 0o700).writeAtomically(
                "keyd.sock",
                bytes: Array("precious".utf8),
                mode: 0o644
            )
            let error = #expect(throws: SystemError.self) { try UnixListener.bind(path: path, mode: 0o600) }
            #expect(error?.code == .refusedExistingFile)
            #expect(error?.description == "bind(\(path)): refusing to replace existing regular file")
            #expect(try readWholeFile(path: path, limit: 100) == Array("precious".utf8))
        }
    }

    @Test("a symlink at the socket path is refused")
    func symlinkRefused() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/keyd.sock"
            #expect(symlink(directory, path) == 0)
            #expect(throws: SystemError.refusedExistingFile(call: "bind", path: path, found: "")) {
                try UnixListener.bind(path: path, mode: 0o600)
            }
            #expect(fileMode(path)?.type == S_IFLNK)
        }
    }

    @Test("a path longer than sun_path is refused before any syscall")
    func pathTooLong() throws {
        let path = "/tmp/" + String(repeating: "x", count: 200)
        let error = #expect(throws: SystemError.self) { try UnixListener.bind(path: path, mode: 0o600) }
        #expect(error?.code == .pathTooLong)
        #expect(error?.description.hasSuffix("path length 205 exceeds limit 107") == true)
    }

    @Test("connect to a missing path fails with ENOENT")
    func connectMissing() throws {
        #expect(throws: SystemError.errno(ENOENT, call: "connect")) {
            try UnixSocket.connect(path: "/tmp/keyd-test-does-not-exist.sock")
        }
    }

    @Test("an adopted descriptor becomes nonblocking and close-on-exec")
    func adopt() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/a.sock"
            let raw = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            #expect(raw >= 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            #expect(bound == 0)
            #expect(listen(raw, 4) == 0)
            let listener = try UnixListener.adopt(FileDescriptor(rawValue: raw))
            defer { try? listener.close(unlinkingPath: false) }
            #expect(listener.path == nil)
            #expect(fcntl(raw, F_GETFL) & O_NONBLOCK != 0)
            #expect(fcntl(raw, F_GETFD) & FD_CLOEXEC != 0)
            #expect(try listener.accept() == nil)
        }
    }
}

@Suite("File descriptors and poll")
struct FileDescriptorTests {
    @Test("read on a nonblocking socket: wouldBlock, then data, then eof")
    func readSequence() throws {
        let (a, b) = try UnixSocket.socketPair(nonBlocking: true)
        defer { try? a.close() }
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(try buffer.withUnsafeMutableBytes { try a.read(into: $0) } == .wouldBlock)

        #expect(try b.write([1, 2, 3]) == .bytes(3))
        #expect(try buffer.withUnsafeMutableBytes { try a.read(into: $0) } == .bytes(3))
        #expect(buffer.prefix(3) == [1, 2, 3])

        try b.close()
        #expect(try buffer.withUnsafeMutableBytes { try a.read(into: $0) } == .eof)
    }

    @Test("write reports wouldBlock once the socket buffer is full")
    func writeWouldBlock() throws {
        let (a, b) = try UnixSocket.socketPair(nonBlocking: true)
        defer {
            try? a.close()
            try? b.close()
        }
        let chunk = [UInt8](repeating: 0x5A, count: 65536)
        var total = 0
        var blocked = false
        for _ in 0..<1000 {
            switch try a.write(chunk) {
            case .bytes(let count): total += count
            case .wouldBlock: blocked = true
            }
            if blocked { break }
        }
        #expect(blocked)
        #expect(total > 0)
    }

    @Test("write to a closed peer throws EPIPE instead of raising SIGPIPE")
    func writeToClosedPeer() throws {
        let (a, b) = try UnixSocket.socketPair()
        defer { try? a.close() }
        try b.close()
        #expect(throws: SystemError.errno(EPIPE, call: "send")) { try a.write([1]) }
    }

    @Test("setNonBlocking toggles O_NONBLOCK")
    func nonBlockingFlag() throws {
        let (a, b) = try UnixSocket.socketPair()
        defer {
            try? a.close()
            try? b.close()
        }
        #expect(fcntl(a.rawValue, F_GETFL) & O_NONBLOCK == 0)
        try a.setNonBlocking()
        #expect(fcntl(a.rawValue, F_GETFL) & O_NONBLOCK != 0)
        try a.setNonBlocking(enabled: false)
        #expect(fcntl(a.rawValue, F_GETFL) & O_NONBLOCK == 0)
    }

    @Test("shutdownWrite makes the peer read eof")
    func shutdownWrite() throws {
        let (a, b) = try UnixSocket.socketPair()
        defer {
            try? a.close()
            try? b.close()
        }
        try a.shutdownWrite()
        var buffer = [UInt8](repeating: 0, count: 4)
        #expect(try buffer.withUnsafeMutableBytes { try b.read(into: $0) } == .eof)
    }

    @Test("Poller reports the ready descriptor and times out on idle ones")
    func poller() throws {
        let (a, b) = try UnixSocket.socketPair(nonBlocking: true)
        let (c, d) = try UnixSocket.socketPair(nonBlocking: true)
        defer { for fd in [a, c, d] { try? fd.close() } }
        var fds = [
            pollfd(fd: a.rawValue, events: Poller.readable, revents: 0),
            pollfd(fd: c.rawValue, events: Poller.readable, revents: 0),
        ]
        #expect(try Poller.wait(&fds, timeoutMilliseconds: 0) == 0)

        _ = try d.write([9])
        #expect(try Poller.wait(&fds, timeoutMilliseconds: 1000) == 1)
        #expect(fds[0].revents == 0)
        #expect(fds[1].revents & Poller.readable != 0)

        try b.close()
        #expect(try Poller.wait(&fds, timeoutMilliseconds: 1000) == 2)
        #expect(fds[0].revents & (Poller.readable | Poller.hangup) != 0)
    }
}
