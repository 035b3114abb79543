import Glibc

// Each system call is wrapped once, after swift-nio's NIOPosix/System.swift: retry on EINTR,
// crash on EBADF/EFAULT (a bug of ours: a closed descriptor or a bad pointer), throw
// SystemError with the errno for everything else. errno is read right after the call.

/// Crashes on errnos that can only mean a bug in this process.
@inline(__always)
internal func preconditionAcceptable(_ err: Int32, call: String, badDescriptorIsBug: Bool) {
    precondition(err != EFAULT, "unacceptable errno \(err) \(errorString(err)) in \(call)")
    if badDescriptorIsBug {
        precondition(err != EBADF, "unacceptable errno \(err) \(errorString(err)) in \(call)")
    }
}

/// Runs `body` until it does not fail with EINTR; -1 becomes a thrown SystemError.
@inline(__always)
@discardableResult
internal func syscall<T: FixedWidthInteger & SignedInteger>(
    _ call: String,
    _ context: @autoclosure () -> String = "",
    badDescriptorIsBug: Bool = true,
    _ body: () -> T
) throws -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let err = Glibc.errno
        if err == EINTR { continue }
        preconditionAcceptable(err, call: call, badDescriptorIsBug: badDescriptorIsBug)
        throw SystemError.errno(err, call: call, context: context())
    }
}

/// Like `syscall`, but EAGAIN/EWOULDBLOCK returns nil instead of throwing.
@inline(__always)
internal func nonBlockingSyscall<T: FixedWidthInteger & SignedInteger>(
    _ call: String,
    _ context: @autoclosure () -> String = "",
    _ body: () -> T
) throws -> T? {
    while true {
        let result = body()
        if result != -1 { return result }
        let err = Glibc.errno
        if err == EINTR { continue }
        if err == EAGAIN || err == EWOULDBLOCK { return nil }
        preconditionAcceptable(err, call: call, badDescriptorIsBug: true)
        throw SystemError.errno(err, call: call, context: context())
    }
}
