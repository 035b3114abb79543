import CKeydShims
import Glibc

/// Random bytes from the kernel's CSPRNG (getrandom(2)).
public enum SecureRandom {
    /// Fills `buffer` completely; blocks only until the kernel pool is first initialized.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) throws {
        var offset = 0
        while offset < buffer.count {
            let count = try syscall("getrandom", "\(buffer.count) bytes") {
                keyd_getrandom(buffer.baseAddress! + offset, buffer.count - offset, 0)
            }
            offset += count
        }
    }
}

/// Wiping memory that held secrets.
public enum SecureMemory {
    /// Zeroes `buffer` with explicit_bzero, which the compiler may not remove.
    public static func wipe(_ buffer: UnsafeMutableRawBufferPointer) {
        keyd_wipe(buffer.baseAddress, buffer.count)
    }

    /// Zeroes every byte of `bytes` in place (its storage, not copies made earlier).
    public static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { keyd_wipe($0.baseAddress, $0.count) }
    }
}
