/// Reassembles frames from a byte stream: whole, byte by byte, or many frames per read.
///
/// The length prefix is checked the moment its fourth byte arrives, before the body is
/// allocated; the body buffer is reserved once at its exact size, so it never reallocates
/// and leaves no stray copy of a secret. Completed bodies are handed out through
/// `withNextFrame` and wiped right after.
public struct FrameDecoder {
    /// Which side's frames are decoded; it sets the minimum body length.
    public enum Direction: Sendable {
        /// keyd reading requests.
        case requests
        /// A client reading answers.
        case answers

        var bounds: ClosedRange<Int> {
            switch self {
            case .requests: Limits.minRequestBody...Limits.maxFrameLength
            case .answers: Limits.minAnswerBody...Limits.maxAnswerFrameLength
            }
        }
    }

    private let bounds: ClosedRange<Int>
    private let maxQueuedFrames: Int
    private let wipe: (UnsafeMutableRawBufferPointer) -> Void
    private var prefix: [UInt8] = []
    private var body: [UInt8] = []
    private var bodyLength: Int?
    private var ready: [[UInt8]] = []
    private var failure: ProtocolError?

    /// Creates a decoder; `wipe` overwrites buffers that held frame bytes (keyd passes `explicit_bzero`).
    public init(
        _ direction: Direction,
        maxQueuedFrames: Int = 64,
        wipe: @escaping (UnsafeMutableRawBufferPointer) -> Void = { $0.initializeMemory(as: UInt8.self, repeating: 0) }
    ) {
        self.bounds = direction.bounds
        self.maxQueuedFrames = maxQueuedFrames
        self.wipe = wipe
        prefix.reserveCapacity(Limits.lengthPrefixSize)
    }

    /// Bytes to read next to finish the current length prefix or body; never reads into the next frame.
    public var bytesWanted: Int {
        if let bodyLength { return bodyLength - body.count }
        return Limits.lengthPrefixSize - prefix.count
    }

    /// Whether a frame has started but not finished.
    public var hasPartialFrame: Bool { !prefix.isEmpty }

    /// Number of complete frames waiting.
    public var readyCount: Int { ready.count }

    /// Feeds bytes; throws on the first violation and stays failed afterwards.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) throws(ProtocolError) {
        if let failure { throw failure }
        var index = 0
        while index < bytes.count {
            if let length = bodyLength {
                let take = min(length - body.count, bytes.count - index)
                body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]))
                index += take
                if body.count == length { try finishFrame() }
            } else {
                prefix.append(bytes[index])
                index += 1
                if prefix.count == Limits.lengthPrefixSize {
                    do {
                        let length = try Frame.bodyLength(
                            prefix: prefix[0],
                            prefix[1],
                            prefix[2],
                            prefix[3],
                            bounds: bounds
                        )
                        bodyLength = length
                        body.reserveCapacity(length)
                    } catch {
                        failure = error
                        throw error
                    }
                }
            }
        }
    }

    /// Feeds bytes held in an array.
    public mutating func append(_ bytes: [UInt8]) throws(ProtocolError) {
        let result: Result<Void, ProtocolError> = bytes.withUnsafeBytes { raw in
            do throws(ProtocolError) {
                try append(raw)
                return .success(())
            } catch { return .failure(error) }
        }
        try result.get()
    }

    private mutating func finishFrame() throws(ProtocolError) {
        guard ready.count < maxQueuedFrames else {
            let error = ProtocolError.badValue(field: "stream", "more than \(maxQueuedFrames) frames queued")
            failure = error
            throw error
        }
        ready.append(body)
        body = []
        bodyLength = nil
        prefix.removeAll(keepingCapacity: true)
    }

    /// Hands the oldest complete frame body to `handle`, then wipes it.
    public mutating func withNextFrame<R>(_ handle: (UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        guard !ready.isEmpty else { return nil }
        var frame = ready.removeFirst()
        defer { frame.withUnsafeMutableBytes { wipe($0) } }
        return try frame.withUnsafeBytes { try handle($0) }
    }

    /// Removes and returns the oldest complete frame body; the caller owns (and wipes) it.
    public mutating func nextFrame() -> [UInt8]? {
        ready.isEmpty ? nil : ready.removeFirst()
    }

    /// Wipes every buffered byte, for a connection being closed.
    public mutating func wipeAll() {
        body.withUnsafeMutableBytes { wipe($0) }
        for index in ready.indices { ready[index].withUnsafeMutableBytes { wipe($0) } }
        ready.removeAll()
        body.removeAll()
        prefix.removeAll()
        bodyLength = nil
    }
}
