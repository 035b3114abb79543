/// A LUKS2 keyslot key-derivation function and its cost: what a disk profile prescribes
/// (KeydCore's `DiskProfile`) and what keyd hands to libcryptsetup (KeydPlatform's `LUKS2Volume`).
///
/// It lives here, in the vocabulary both modules share, so that the two never map one enum onto another.
public enum LUKS2KDF: Hashable, Sendable {
    /// PBKDF2 with `hash` and exactly `iterations`, no benchmark.
    case pbkdf2(hash: String, iterations: UInt32)
    /// Argon2id benchmarked to `timeMilliseconds`, with `memoryKiB` and `threads`.
    case argon2id(timeMilliseconds: UInt32, memoryKiB: UInt32, threads: UInt32)

    /// The LUKS2 name of the KDF (`pbkdf2`, `argon2id`).
    public var type: String {
        switch self {
        case .pbkdf2: "pbkdf2"
        case .argon2id: "argon2id"
        }
    }
}
