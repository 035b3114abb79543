#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed-size byte buffer for secret material that is zeroed when it goes away.
///
/// - Important: Non-copyable, so no second copy of the bytes can be made by assignment, and no
///   `description`: the bytes are reachable only inside ``withUnsafeBytes(_:)``.
public struct SecretBytes: ~Copyable {
    private let storage: UnsafeMutableRawBufferPointer
    /// Bytes in use, at most ``capacity``.
    public private(set) var count: Int
    /// Bytes the buffer can hold.
    public let capacity: Int

    /// A zeroed buffer of `capacity` bytes with `count` 0.
    public init(capacity: Int) {
        precondition(capacity >= 0, "secret buffer capacity \(capacity) is negative")
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, 1), alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        count = 0
        self.capacity = capacity
    }

    deinit {
        Self.wipe(storage)
        storage.deallocate()
    }

    /// Calls `body` with the bytes in use.
    public func withUnsafeBytes<R: ~Copyable, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R
    {
        try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
    }

    /// Calls `body` with the whole storage and sets ``count`` to the value it returns.
    mutating func fill<E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> Int) throws(E) {
        let used = try body(UnsafeMutableRawBufferPointer(rebasing: storage[0..<capacity]))
        precondition(used >= 0 && used <= capacity, "secret buffer filled with \(used) of \(capacity) bytes")
        count = used
    }

    /// Zeroes `buffer` in a way the optimizer may not drop.
    static func wipe(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        #if canImport(Glibc)
        explicit_bzero(base, buffer.count)
        #else
        _ = memset_s(base, buffer.count, 0, buffer.count)
        #endif
    }
}

/// A decoded master secret: the key and salt Constellation derives the KEK from.
public struct MasterSecret: ~Copyable {
    /// The master secret bytes.
    public let key: SecretBytes
    /// The salt bytes.
    public let salt: SecretBytes
}
