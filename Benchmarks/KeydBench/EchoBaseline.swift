#if canImport(Glibc)
import Glibc
#endif

/// The floor keyd is compared with: a pthread in this process serving one Unix-socket
/// connection with a blocking loop that reads exactly `requestSize` bytes and writes `replySize` bytes.
struct EchoBaseline {
    /// Size of a `status` request frame: 4-byte length + 2-byte kind + 4-byte sequence.
    static let requestSize = 10

    /// What the server thread needs, passed through pthread's `void *` argument.
    private final class ServerContext {
        let listener: Int32
        let replySize: Int
        /// Requests answered; read after join.
        var served = 0
        /// Set when the server stopped on an error instead of the client's EOF.
        var failure: String?

        init(listener: Int32, replySize: Int) {
            self.listener = listener
            self.replySize = replySize
        }
    }

    /// Runs `warmup` + `count` round trips against a fresh server thread bound at `path`.
    static func run(path: String, replySize: Int, warmup: Int, count: Int) throws(BenchError) -> LatencySummary {
        let listener = try listenUnix(path: path)
        defer {
            close(listener)
            unlink(path)
        }
        let context = ServerContext(listener: listener, replySize: replySize)
        let unmanaged = Unmanaged.passRetained(context)
        var thread = pthread_t()
        let created = pthread_create(
            &thread,
            nil,
            { raw in
                let context = Unmanaged<ServerContext>.fromOpaque(raw!).takeRetainedValue()
                EchoBaseline.serve(context)
                return nil
            },
            unmanaged.toOpaque()
        )
        guard created == 0 else {
            unmanaged.release()
            throw .system("pthread_create", "echo server", errno: created)
        }

        let client: Int32
        do {
            client = try connectUnix(path: path)
        } catch {
            // Unblock the server's accept with a throwaway connection, then join.
            if let wake = try? connectUnix(path: path) { close(wake) }
            pthread_join(thread, nil)
            throw error
        }
        let request = UnsafeMutableRawBufferPointer.allocate(byteCount: requestSize, alignment: 8)
        let reply = UnsafeMutableRawBufferPointer.allocate(byteCount: replySize, alignment: 8)
        defer {
            request.deallocate()
            reply.deallocate()
        }
        request.initializeMemory(as: UInt8.self, repeating: 0x5A)
        reply.initializeMemory(as: UInt8.self, repeating: 0)

        let summary: LatencySummary
        do {
            summary = try timeRoundTrips(warmup: warmup, count: count) { (i: Int) throws(BenchError) in
                guard writeAll(client, request.baseAddress!, requestSize),
                    readExactly(client, reply.baseAddress!, replySize)
                else {
                    throw .echoFailed(
                        "echo round trip \(i) failed: \(String(cString: strerror(errno))) (errno \(errno))"
                    )
                }
            }
        } catch {
            close(client)
            pthread_join(thread, nil)
            throw error
        }
        close(client)
        pthread_join(thread, nil)
        if let failure = context.failure { throw .echoFailed(failure) }
        guard context.served == warmup + count else {
            throw .echoFailed("echo server answered \(context.served) requests, expected \(warmup + count)")
        }
        return summary
    }

    /// Server thread body: accept one connection, answer until EOF.
    private static func serve(_ context: ServerContext) {
        let fd = accept(context.listener, nil, nil)
        guard fd >= 0 else {
            context.failure = "echo accept: errno \(errno)"
            return
        }
        defer { close(fd) }
        let request = UnsafeMutableRawBufferPointer.allocate(byteCount: requestSize, alignment: 8)
        let reply = UnsafeMutableRawBufferPointer.allocate(byteCount: context.replySize, alignment: 8)
        defer {
            request.deallocate()
            reply.deallocate()
        }
        reply.initializeMemory(as: UInt8.self, repeating: 0xA5)
        while readExactly(fd, request.baseAddress!, requestSize) {
            guard writeAll(fd, reply.baseAddress!, context.replySize) else {
                context.failure = "echo write: errno \(errno)"
                return
            }
            context.served += 1
        }
    }
}
