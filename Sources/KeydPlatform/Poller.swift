import Glibc

/// poll(2) over a caller-owned array of `pollfd`; nothing is allocated per call.
public enum Poller {
    /// POLLIN: data to read, or a connection to accept.
    public static let readable = Int16(POLLIN)
    /// POLLOUT: room to write.
    public static let writable = Int16(POLLOUT)
    /// POLLHUP: the peer hung up.
    public static let hangup = Int16(POLLHUP)
    /// POLLERR: an error is pending on the descriptor.
    public static let error = Int16(POLLERR)
    /// POLLNVAL: the descriptor is not open (a bug of ours).
    public static let invalid = Int16(POLLNVAL)

    /// Waits until a descriptor is ready or the timeout passes (-1 waits forever).
    ///
    /// Returns the number of entries with nonzero `revents`: 0 on timeout and also when a
    /// signal interrupted the wait, so the caller recomputes its deadline and loops.
    public static func wait(_ fds: inout [pollfd], timeoutMilliseconds: Int32) throws -> Int {
        let ready = fds.withUnsafeMutableBufferPointer { buffer -> Int32 in
            // Stale revents from the last round must not survive an interrupted wait.
            for index in buffer.indices { buffer[index].revents = 0 }
            return poll(buffer.baseAddress, nfds_t(buffer.count), timeoutMilliseconds)
        }
        if ready >= 0 { return Int(ready) }
        let err = Glibc.errno
        if err == EINTR { return 0 }
        preconditionAcceptable(err, call: "poll", badDescriptorIsBug: true)
        throw SystemError.errno(err, call: "poll", context: "\(fds.count) descriptors")
    }
}
