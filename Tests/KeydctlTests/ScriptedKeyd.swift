import Foundation
import KeydProtocol

/// A keyd stand-in on a real Unix socket for one connection: answers hello as admin, answers every other
/// request with `answer`, and records the request frame bodies exactly as they arrived. Call ``stop()``.
final class ScriptedKeyd: @unchecked Sendable {
    /// The socket path to connect to.
    let path: String
    private let directory: String
    private let listener: Int32
    private let lock = NSLock()
    private var received: [[UInt8]] = []
    private var accepted = false
    private let serving = DispatchGroup()

    /// Listens at once; `answer` makes the whole answer frame for a request.
    init(answer: @escaping @Sendable (RequestFrame) -> [UInt8]) throws {
        var template = Array("/tmp/keydctl-wire-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        directory = String(cString: template)
        path = directory + "/admin.sock"
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(listener, 1) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        serving.enter()
        Thread.detachNewThread { [self] in
            serveOneConnection(answer)
            serving.leave()
        }
    }

    /// Stops listening (a pending accept returns), waits for the connection to end, removes the socket.
    func stop() {
        _ = shutdown(listener, Int32(SHUT_RDWR))
        _ = serving.wait(timeout: .now() + 30)
        _ = close(listener)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The request bodies (after the length prefix) received after hello, once the client has closed.
    func requestBodies() -> [[UInt8]] {
        _ = serving.wait(timeout: .now() + 30)
        return lock.withLock { received }
    }

    /// Whether a client connected at all.
    var wasConnected: Bool { lock.withLock { accepted } }

    private func serveOneConnection(_ answer: (RequestFrame) -> [UInt8]) {
        let connection = accept(listener, nil, nil)
        guard connection >= 0 else { return }
        lock.withLock { accepted = true }
        defer { _ = close(connection) }
        var decoder = FrameDecoder(.requests)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            while let body = decoder.nextFrame() {
                guard let frame = try? RequestFrame.decode(body: body) else { return }
                let reply: [UInt8]
                if case .hello = frame.request {
                    reply = AnswerFrame.encode(answering: .hello, sequence: frame.sequence, status: .ok) {
                        HelloAnswer(version: 1, peerClass: .admin, phase: .holdingKEK).write(&$0)
                    }
                } else {
                    lock.withLock { received.append(body) }
                    reply = answer(frame)
                }
                guard
                    reply.withUnsafeBytes({ send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) })
                        == reply.count
                else { return }
            }
            let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            guard count > 0, (try? decoder.append(Array(buffer[0..<count]))) != nil else { return }
        }
    }
}
