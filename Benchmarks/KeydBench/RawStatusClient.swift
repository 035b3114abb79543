import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// A minimal `status` client on pre-encoded frames: it isolates keyd's own cost from
/// KeydClient's (per-call encoding, 16 KiB receive buffer, frame decoder, payload decoding).
///
/// Every answer is still checked: length, kind, sequence and status `ok`.
final class RawStatusClient {
    private let fd: Int32
    private var request: [UInt8]
    private let buffer: UnsafeMutableRawBufferPointer
    private var sequence: UInt32 = 0
    /// Length of the last whole answer frame, length prefix included.
    private(set) var lastAnswerFrameLength = 0

    /// Connects to `path` and completes `hello`.
    init(path: String) throws(BenchError) {
        fd = try connectUnix(path: path)
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 + Limits.maxFrameLength, alignment: 8)
        request = RequestFrame(sequence: 1, request: .status).encodeFrame()
        let hello = RequestFrame(
            sequence: 0,
            request: .hello(
                minVersion: Limits.supportedVersions.lowerBound,
                maxVersion: Limits.supportedVersions.upperBound
            )
        ).encodeFrame()
        do {
            try exchange(hello, kind: RequestKind.hello.rawValue)
        } catch {
            close(fd)
            buffer.deallocate()
            throw error
        }
    }

    deinit {
        close(fd)
        buffer.deallocate()
    }

    /// One `status` round trip.
    @inline(__always)
    func status() throws(BenchError) {
        let s = sequence
        request[6] = UInt8(truncatingIfNeeded: s >> 24)
        request[7] = UInt8(truncatingIfNeeded: s >> 16)
        request[8] = UInt8(truncatingIfNeeded: s >> 8)
        request[9] = UInt8(truncatingIfNeeded: s)
        try exchange(request, kind: RequestKind.status.rawValue)
    }

    private func exchange(_ frame: [UInt8], kind: UInt16) throws(BenchError) {
        let s = sequence
        sequence &+= 1
        let sent = frame.withUnsafeBytes { writeAll(fd, $0.baseAddress!, $0.count) }
        guard sent else { throw .keydFailed("send to keyd failed at sequence \(s): errno \(errno)") }
        // Read whatever is available until a whole frame is in.
        var have = 0
        var total = Int.max
        while have < total {
            let n = recv(fd, buffer.baseAddress! + have, buffer.count - have, 0)
            if n < 0 {
                if errno == EINTR { continue }
                throw .keydFailed("recv from keyd failed at sequence \(s): errno \(errno)")
            }
            if n == 0 { throw .keydFailed("keyd closed the connection at sequence \(s)") }
            have += n
            if total == Int.max && have >= 4 {
                total = 4 + Int(readU32(0))
                guard total >= 4 + Limits.minAnswerBody, total <= 4 + Limits.maxFrameLength else {
                    throw .keydFailed(
                        "answer length \(total - 4) outside \(Limits.minAnswerBody)...\(Limits.maxFrameLength)"
                    )
                }
            }
        }
        guard have == total else {
            throw .keydFailed("keyd sent \(have - total) bytes beyond the answer at sequence \(s)")
        }
        let answerKind = readU16(4)
        let answerSequence = readU32(6)
        let status = readU16(10)
        guard answerKind == kind | Limits.answerBit, answerSequence == s, status == StatusCode.ok.rawValue else {
            throw .keydFailed(
                "answer kind 0x\(String(answerKind, radix: 16)) sequence \(answerSequence) status \(status), expected kind 0x\(String(kind | Limits.answerBit, radix: 16)) sequence \(s) status 0"
            )
        }
        lastAnswerFrameLength = total
    }

    private func readU16(_ offset: Int) -> UInt16 { UInt16(buffer[offset]) << 8 | UInt16(buffer[offset + 1]) }

    private func readU32(_ offset: Int) -> UInt32 {
        UInt32(buffer[offset]) << 24 | UInt32(buffer[offset + 1]) << 16 | UInt32(buffer[offset + 2]) << 8
            | UInt32(buffer[offset + 3])
    }
}
