import BenchSupport
import Foundation
import KeydProtocol
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A compromised trustd on one thread: `connections` connections to keyd's trustd socket, each keeping
/// `inFlight` `evidence.issue` requests pipelined until `stop()`, with every answer read and replaced.
final class EvidenceFlood: @unchecked Sendable {
    /// One flooding connection.
    private struct Peer {
        let fd: Int32
        var decoder = FrameDecoder(.answers, maxQueuedFrames: Int.max)
        var nextSequence: UInt32 = 0
        /// Request bytes the socket did not take yet.
        var unsent: [UInt8] = []
    }

    let path: String
    let connections: Int
    let inFlight: Int
    private let stopping = Atomic<Bool>(false)
    /// Results, read after `finished` is signalled.
    private(set) var issued = 0
    private(set) var rateLimited = 0
    private(set) var otherStatuses = 0
    private(set) var closedByKeyd = 0
    private(set) var failure: String?
    /// Signalled once the flood stopped and its connections are closed.
    let finished = DispatchSemaphore(value: 0)
    /// Signalled once every connection is open and its first requests are sent.
    let started = DispatchSemaphore(value: 0)

    init(path: String, connections: Int, inFlight: Int) {
        self.path = path
        self.connections = connections
        self.inFlight = inFlight
    }

    /// Asks the flood to stop; `finished` is signalled once it did.
    func stop() { stopping.store(true, ordering: .relaxed) }

    /// Runs the flood on a thread of its own.
    func start() {
        Thread { [self] in
            run()
            finished.signal()
        }.start()
    }

    private func request(_ sequence: UInt32) -> [UInt8] {
        if sequence == 0 {
            return RequestFrame(sequence: 0, request: .hello(minVersion: 1, maxVersion: 1)).encodeFrame()
        }
        let evidence = EvidenceRequest(
            variant: .native,
            nonce: [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: 32),
            userDataDigest: [UInt8](repeating: 7, count: 32)
        )
        return RequestFrame(sequence: sequence, request: .evidenceIssue(evidence)).encodeFrame()
    }

    private func connect() -> Int32? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            close(fd)
            return nil
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return fd
    }

    /// Sends what `peer` has queued; false when keyd closed the connection.
    private func flush(_ peer: inout Peer) -> Bool {
        while !peer.unsent.isEmpty {
            let n = peer.unsent.withUnsafeBytes { send(peer.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                peer.unsent.removeFirst(n)
            } else {
                return n < 0 && (errno == EAGAIN || errno == EINTR)
            }
        }
        return true
    }

    private func run() {
        var peers: [Peer] = []
        for _ in 0..<connections {
            guard let fd = connect() else {
                failure = "connect \(path): errno \(errno) after \(peers.count) connections"
                break
            }
            var peer = Peer(fd: fd)
            for _ in 0...inFlight {
                peer.unsent += request(peer.nextSequence)
                peer.nextSequence += 1
            }
            _ = flush(&peer)
            peers.append(peer)
        }
        started.signal()
        var buffer = [UInt8](repeating: 0, count: 1 << 18)
        var fds = peers.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        while !stopping.load(ordering: .relaxed), !peers.isEmpty {
            for index in fds.indices {
                fds[index].events = Int16(POLLIN) | (peers[index].unsent.isEmpty ? 0 : Int16(POLLOUT))
            }
            guard poll(&fds, nfds_t(fds.count), 50) > 0 else { continue }
            var index = 0
            while index < peers.count {
                defer { index += 1 }
                guard fds[index].revents != 0, fds[index].fd >= 0 else { continue }
                var alive = flush(&peers[index])
                if alive, fds[index].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                    let n = buffer.withUnsafeMutableBytes { recv(peers[index].fd, $0.baseAddress, $0.count, 0) }
                    if n > 0, (try? peers[index].decoder.append(Array(buffer[0..<n]))) != nil {
                        while let body = peers[index].decoder.nextFrame() { count(body, &peers[index]) }
                        alive = flush(&peers[index])
                    } else if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
                        alive = false
                    }
                }
                if !alive {
                    closedByKeyd += 1
                    close(peers[index].fd)
                    fds[index].fd = -1
                }
            }
        }
        for (index, peer) in peers.enumerated() where fds[index].fd >= 0 { close(peer.fd) }
    }

    /// Counts one answer and queues the request that replaces it.
    private func count(_ body: [UInt8], _ peer: inout Peer) {
        guard let answer = try? AnswerFrame.decode(body: body) else {
            otherStatuses += 1
            return
        }
        guard answer.kind == RequestKind.evidenceIssue.rawValue else { return }
        switch answer.status {
        case .ok: issued += 1
        case .rateLimited: rateLimited += 1
        default: otherStatuses += 1
        }
        peer.unsent += request(peer.nextSequence)
        peer.nextSequence += 1
    }
}
