import CKeydShims
import Glibc
import KeydProtocol

/// sd_notify(3): one datagram to the service manager's NOTIFY_SOCKET.
public enum SystemdNotify {
    /// Sends `state` (e.g. "READY=1", "STATUS=serving", "STOPPING=1"); false if NOTIFY_SOCKET is unset.
    @discardableResult
    public static func send(_ state: String) throws -> Bool {
        guard let value = getenv("NOTIFY_SOCKET") else { return false }
        let address = String(cString: value)
        guard address.hasPrefix("/") || address.hasPrefix("@") else {
            throw SystemError.invalidEnvironment(
                variable: "NOTIFY_SOCKET",
                "\(quotedForMessage(address)) is neither an absolute path nor an abstract name"
            )
        }
        try send(state, to: address)
        return true
    }

    /// Sends `state` as one datagram to the Unix socket `address` (a path, or "@name" for an abstract name).
    public static func send(_ state: String, to address: String) throws {
        let raw = try syscall("socket", address) { socket(AF_UNIX, datagramType | keyd_sock_cloexec(), 0) }
        defer { _ = Glibc.close(raw) }
        let message = Array(state.utf8)
        try withUnixAddress(path: address, call: "sendto") { socketAddress, length in
            let sent = try message.withUnsafeBytes { bytes in
                try syscall("sendto", address) {
                    sendto(raw, bytes.baseAddress, bytes.count, keyd_msg_nosignal(), socketAddress, length)
                }
            }
            guard sent == message.count else {
                throw SystemError.errno(EMSGSIZE, call: "sendto", context: address)
            }
        }
    }
}
