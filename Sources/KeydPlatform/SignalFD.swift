import CKeydShims
import Glibc

/// A signalfd(2) that turns the given signals into readable events for the poll loop.
public struct SignalFD: Sendable {
    /// The nonblocking, close-on-exec signalfd; poll it for `Poller.readable`.
    public let fd: FileDescriptor

    /// Blocks `signals` for the calling thread and opens a signalfd for them.
    ///
    /// - Important: call it on the main thread before any other thread starts; a thread that
    ///   does not block the signals would receive them instead (and die of SIGTERM's default).
    public init(signals: [Int32]) throws {
        precondition(!signals.isEmpty, "SignalFD needs at least one signal")
        let raw = try signals.withUnsafeBufferPointer { buffer in
            try syscall("signalfd", signals.map(String.init).joined(separator: ",")) {
                keyd_signalfd_for(buffer.baseAddress, Int32(buffer.count))
            }
        }
        fd = FileDescriptor(rawValue: raw)
    }

    /// The next pending signal's number, or nil when none is pending.
    public func readSignal() throws -> Int32? {
        let raw = fd.rawValue
        return try nonBlockingSyscall("read(signalfd)", fd.description) { keyd_signalfd_read(raw) }
    }

    /// Closes the signalfd (the signals stay blocked).
    public func close() throws {
        try fd.close()
    }
}
