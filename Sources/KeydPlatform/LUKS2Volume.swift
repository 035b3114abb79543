import CCryptsetup
import Glibc
import KeydProtocol
import Synchronization

/// How to format a LUKS2 device.
public struct LUKS2FormatParameters: Hashable, Sendable {
    /// The block cipher (`aes`).
    public var cipher: String
    /// The cipher mode (`xts-plain64`).
    public var cipherMode: String
    /// The random volume key's length in bytes.
    public var volumeKeyBytes: Int
    /// The encryption sector size in bytes.
    public var sectorSize: UInt32
    /// The header label, or nil.
    public var label: String?
    /// The KDF of the first keyslot.
    public var kdf: LUKS2KDF
    /// Token JSON written right after the keyslot, or nil.
    public var tokenJSON: String?

    /// Makes parameters.
    public init(
        cipher: String,
        cipherMode: String,
        volumeKeyBytes: Int,
        sectorSize: UInt32,
        label: String?,
        kdf: LUKS2KDF,
        tokenJSON: String?
    ) {
        self.cipher = cipher
        self.cipherMode = cipherMode
        self.volumeKeyBytes = volumeKeyBytes
        self.sectorSize = sectorSize
        self.label = label
        self.kdf = kdf
        self.tokenJSON = tokenJSON
    }
}

/// One keyslot in use, with its KDF as the header records it.
public struct LUKS2Keyslot: Hashable, Sendable {
    /// The keyslot number.
    public var index: Int
    /// The KDF type (`pbkdf2`, `argon2id`).
    public var kdfType: String
    /// The PBKDF2 hash, or empty for argon2.
    public var hash: String
    /// Iterations (PBKDF2) or time cost (argon2).
    public var iterations: UInt32
    /// Argon2 memory cost in KiB; 0 for PBKDF2.
    public var memoryKiB: UInt32
    /// Argon2 threads; 0 for PBKDF2.
    public var threads: UInt32
}

/// A LUKS2 token: its number and its JSON text.
public struct LUKS2Token: Hashable, Sendable {
    /// The token number.
    public var id: Int
    /// The JSON text as libcryptsetup returns it.
    public var json: String
}

/// What a LUKS2 header says; no secret. KeydCore's `LUKS2HeaderFacts` is made from it.
public struct LUKS2Header: Hashable, Sendable {
    /// The block cipher (`aes`).
    public var cipher: String
    /// The cipher mode (`xts-plain64`).
    public var cipherMode: String
    /// The volume key length in bytes.
    public var volumeKeyBytes: Int
    /// The encryption sector size in bytes.
    public var sectorSize: Int
    /// The header UUID exactly as the header holds it (the host wrote it; KeydCore's header check
    /// refuses anything but a canonical lowercase UUID, never folds it).
    public var uuid: String
    /// The label exactly as the header holds it; empty when none.
    public var label: String
    /// The keyslots in use, in order.
    public var keyslots: [LUKS2Keyslot]
    /// The tokens, in order.
    public var tokens: [LUKS2Token]
    /// The LUKS2 metadata JSON (`crypt_dump_json`): keyslots, tokens, segments, digests, config.
    public var metadataJSON: String
}

/// A libcryptsetup message level.
public enum LUKS2LogLevel: Hashable, Sendable {
    case normal, error, verbose, debug
}

/// Where libcryptsetup's messages go.
///
/// libcryptsetup does not log passphrases or volume keys, and keyd never enables its debug level;
/// ``filter(_:)`` is the single place where a message could be redacted and currently passes every
/// message through unchanged (trailing newline removed).
public enum LUKS2Log {
    private static let sink = Mutex<(@Sendable (LUKS2LogLevel, String) -> Void)?>(nil)

    /// Sends libcryptsetup's messages to `handler` (nil: drop them), for every handle.
    public static func setSink(_ handler: (@Sendable (LUKS2LogLevel, String) -> Void)?) {
        sink.withLock { $0 = handler }
        crypt_set_log_callback(nil, luks2LogCallback, nil)
    }

    /// The redaction point for libcryptsetup messages: returns the message without its newline.
    public static func filter(_ message: String) -> String {
        var text = message
        while text.last == "\n" { text.removeLast() }
        return text
    }

    fileprivate static func emit(level: Int32, message: UnsafePointer<CChar>?) {
        guard let message, let handler = sink.withLock({ $0 }) else { return }
        let mapped: LUKS2LogLevel
        switch level {
        case CRYPT_LOG_ERROR: mapped = .error
        case CRYPT_LOG_VERBOSE: mapped = .verbose
        case CRYPT_LOG_NORMAL: mapped = .normal
        default: mapped = .debug
        }
        handler(mapped, filter(String(cString: message)))
    }
}

/// The C callback libcryptsetup calls; forwards to ``LUKS2Log``.
private func luks2LogCallback(level: Int32, message: UnsafePointer<CChar>?, context: UnsafeMutableRawPointer?) {
    LUKS2Log.emit(level: level, message: message)
}

/// A LUKS2 device (a block device or a file image) opened through libcryptsetup.
///
/// Keyslot operations and activation without a name (a key check) work on a plain file; a named
/// activation needs the kernel's device mapper.
/// - Important: Keys are passed as pointer and length (raw bytes that may contain NUL), never as
///   strings, and no key byte reaches an error or a log line.
public struct LUKS2Volume: ~Copyable {
    private let device: OpaquePointer
    /// The device path.
    public let path: String

    /// Number of keyslots and tokens LUKS2 can hold.
    public static let keyslotLimit: Int32 = 32
    public static let tokenLimit: Int32 = 32

    /// Opens the LUKS2 header at `path`; `kdf` is set on the handle for keyslots added later.
    public init(path: String, kdf: LUKS2KDF) throws(SystemError) {
        let device = try Self.initialize(path: path)
        let loaded = crypt_load(device, asterism_crypt_luks2(), nil)
        guard loaded == 0 else {
            crypt_free(device)
            throw SystemError.cryptsetup(loaded, call: "crypt_load", context: path)
        }
        do {
            try Self.setKDF(device, kdf, path: path)
        } catch {
            crypt_free(device)
            throw error
        }
        self.device = device
        self.path = path
    }

    deinit {
        crypt_free(device)
    }

    // MARK: Inspect and format

    /// The header at `path`, or nil when the device holds no LUKS magic at all.
    /// Throws ``SystemError/luks2HeaderUnreadable(path:_:)`` when a magic is there but no header loads.
    public static func inspect(path: String) throws(SystemError) -> LUKS2Header? {
        let device = try initialize(path: path)
        defer { crypt_free(device) }
        let loaded = crypt_load(device, asterism_crypt_luks2(), nil)
        if loaded == -EINVAL {
            if let magicOffset = try luksMagicOffset(path: path) {
                throw SystemError.luks2HeaderUnreadable(
                    path: path,
                    "LUKS magic at byte \(magicOffset) but no header loads as LUKS2 (damaged, or LUKS1)"
                )
            }
            return nil
        }
        guard loaded == 0 else { throw SystemError.cryptsetup(loaded, call: "crypt_load", context: path) }
        return try header(device, path: path)
    }

    /// Formats `path` as LUKS2 with a random volume key and one keyslot for `passphrase`, then
    /// writes the token; returns the UUID libcryptsetup wrote (libuuid's lowercase text: see CCryptsetup's
    /// module map).
    public static func format(
        path: String,
        parameters: LUKS2FormatParameters,
        passphrase: UnsafeRawBufferPointer
    ) throws(SystemError) -> String {
        let key = try checkedKey(passphrase, call: "crypt_format", path: path)
        let device = try initialize(path: path)
        defer { crypt_free(device) }
        try setKDF(device, parameters.kdf, path: path)
        let formatted = withPBKDF(parameters.kdf) { pbkdf in
            withOptionalCString(parameters.label) { label in
                var luks2 = crypt_params_luks2()
                luks2.pbkdf = pbkdf
                luks2.sector_size = parameters.sectorSize
                luks2.label = label
                return crypt_format(
                    device,
                    asterism_crypt_luks2(),
                    parameters.cipher,
                    parameters.cipherMode,
                    nil,
                    nil,
                    parameters.volumeKeyBytes,
                    &luks2
                )
            }
        }
        guard formatted == 0 else { throw SystemError.cryptsetup(formatted, call: "crypt_format", context: path) }
        let slot = crypt_keyslot_add_by_volume_key(
            device,
            asterism_crypt_any_slot(),
            nil,
            0,
            key.baseAddress,
            key.count
        )
        guard slot >= 0 else {
            throw SystemError.cryptsetup(slot, call: "crypt_keyslot_add_by_volume_key", context: path)
        }
        if let json = parameters.tokenJSON {
            let token = crypt_token_json_set(device, asterism_crypt_any_token(), json)
            guard token >= 0 else { throw SystemError.cryptsetup(token, call: "crypt_token_json_set", context: path) }
        }
        guard let uuid = crypt_get_uuid(device) else {
            throw SystemError.cryptsetup(-EINVAL, call: "crypt_get_uuid", context: path)
        }
        return String(cString: uuid)
    }

    /// The header of this open volume.
    public func header() throws(SystemError) -> LUKS2Header {
        try Self.header(device, path: path)
    }

    // MARK: Keys

    /// Adds a keyslot for `new`, unlocked with `existing`, using `kdf`; returns its number.
    public func addKeyslot(
        existing: UnsafeRawBufferPointer,
        new: UnsafeRawBufferPointer,
        kdf: LUKS2KDF
    ) throws(SystemError) -> Int {
        let old = try Self.checkedKey(existing, call: "crypt_keyslot_add_by_passphrase", path: path)
        let added = try Self.checkedKey(new, call: "crypt_keyslot_add_by_passphrase", path: path)
        try Self.setKDF(device, kdf, path: path)
        let slot = crypt_keyslot_add_by_passphrase(
            device,
            asterism_crypt_any_slot(),
            old.baseAddress,
            old.count,
            added.baseAddress,
            added.count
        )
        guard slot >= 0 else {
            throw SystemError.cryptsetup(slot, call: "crypt_keyslot_add_by_passphrase", context: path)
        }
        return Int(slot)
    }

    /// The keyslot that `key` opens, or nil when none does (a wrong key, or a damaged keyslot area:
    /// they cannot be told apart). Activates nothing.
    public func verify(key: UnsafeRawBufferPointer) throws(SystemError) -> Int? {
        let bytes = try Self.checkedKey(key, call: "crypt_activate_by_passphrase", path: path)
        let slot = crypt_activate_by_passphrase(
            device,
            nil,
            asterism_crypt_any_slot(),
            bytes.baseAddress,
            bytes.count,
            0
        )
        if slot == -EPERM { return nil }
        guard slot >= 0 else { throw SystemError.cryptsetup(slot, call: "crypt_activate_by_passphrase", context: path) }
        return Int(slot)
    }

    /// Activates the mapping `/dev/mapper/<name>` with `key`; needs the kernel's device mapper.
    /// Returns the keyslot used.
    public func activate(name: String, key: UnsafeRawBufferPointer, flags: UInt32 = 0) throws(SystemError) -> Int {
        let bytes = try Self.checkedKey(key, call: "crypt_activate_by_passphrase", path: path)
        let slot = crypt_activate_by_passphrase(
            device,
            name,
            asterism_crypt_any_slot(),
            bytes.baseAddress,
            bytes.count,
            flags
        )
        guard slot >= 0 else { throw SystemError.cryptsetup(slot, call: "crypt_activate_by_passphrase", context: name) }
        return Int(slot)
    }

    /// Removes the mapping `/dev/mapper/<name>`.
    public static func deactivate(name: String) throws(SystemError) {
        let result = crypt_deactivate(nil, name)
        guard result == 0 else { throw SystemError.cryptsetup(result, call: "crypt_deactivate", context: name) }
    }

    /// Destroys keyslot `slot` (its key material is wiped).
    public func destroyKeyslot(_ slot: Int) throws(SystemError) {
        let result = crypt_keyslot_destroy(device, Int32(slot))
        guard result == 0 else {
            throw SystemError.cryptsetup(result, call: "crypt_keyslot_destroy", context: "\(path) keyslot \(slot)")
        }
    }

    // MARK: Tokens

    /// Writes token JSON at `id` (replacing it) or in the first free token (nil); returns the id.
    @discardableResult
    public func setToken(json: String, id: Int? = nil) throws(SystemError) -> Int {
        let result = crypt_token_json_set(device, id.map(Int32.init) ?? asterism_crypt_any_token(), json)
        guard result >= 0 else { throw SystemError.cryptsetup(result, call: "crypt_token_json_set", context: path) }
        return Int(result)
    }

    /// The JSON of token `id`, or nil when it is not in use.
    public func token(id: Int) throws(SystemError) -> String? {
        try Self.token(device, id: Int32(id), path: path)
    }

    /// Every token in use.
    public func tokens() throws(SystemError) -> [LUKS2Token] {
        try Self.tokens(device, path: path)
    }

    // MARK: Header backup

    /// Writes a copy of the header (both metadata copies and the keyslot area) to `file`, which must not exist.
    public func backupHeader(to file: String) throws(SystemError) {
        let result = crypt_header_backup(device, asterism_crypt_luks2(), file)
        guard result == 0 else { throw SystemError.cryptsetup(result, call: "crypt_header_backup", context: file) }
    }

    /// Writes the header backup `file` back onto `path`; works when the device's own headers are destroyed.
    public static func restoreHeader(path: String, from file: String) throws(SystemError) {
        let device = try initialize(path: path)
        defer { crypt_free(device) }
        let result = crypt_header_restore(device, asterism_crypt_luks2(), file)
        guard result == 0 else { throw SystemError.cryptsetup(result, call: "crypt_header_restore", context: path) }
    }

    // MARK: Helpers

    private static func initialize(path: String) throws(SystemError) -> OpaquePointer {
        var device: OpaquePointer?
        let result = crypt_init(&device, path)
        guard result == 0, let device else {
            // libcryptsetup says ENOTBLK for a path that does not exist; report it as missing.
            var info = stat()
            var missing = false
            do {
                try syscall("stat", path) { stat(path, &info) }
            } catch {
                missing = (error as? SystemError)?.code == .errno(ENOENT)
            }
            throw SystemError.cryptsetup(
                result == -ENOTBLK && missing ? -ENOENT : result,
                call: "crypt_init",
                context: path
            )
        }
        crypt_set_log_callback(device, luks2LogCallback, nil)
        return device
    }

    /// Sets the KDF on the handle; the setting lives in the handle, so every new handle needs it.
    private static func setKDF(_ device: OpaquePointer, _ kdf: LUKS2KDF, path: String) throws(SystemError) {
        let result = withPBKDF(kdf) { crypt_set_pbkdf_type(device, $0) }
        guard result == 0 else { throw SystemError.cryptsetup(result, call: "crypt_set_pbkdf_type", context: path) }
    }

    private static func withPBKDF<R>(_ kdf: LUKS2KDF, _ body: (UnsafePointer<crypt_pbkdf_type>) -> R) -> R {
        switch kdf {
        case .pbkdf2(let hash, let iterations):
            return hash.withCString { hashName in
                var pbkdf = crypt_pbkdf_type(
                    type: asterism_crypt_kdf_pbkdf2(),
                    hash: hashName,
                    time_ms: 0,
                    iterations: iterations,
                    max_memory_kb: 0,
                    parallel_threads: 0,
                    flags: asterism_crypt_pbkdf_no_benchmark()
                )
                return body(&pbkdf)
            }
        case .argon2id(let milliseconds, let memory, let threads):
            var pbkdf = crypt_pbkdf_type(
                type: asterism_crypt_kdf_argon2id(),
                hash: nil,
                time_ms: milliseconds,
                iterations: 0,
                max_memory_kb: memory,
                parallel_threads: threads,
                flags: 0
            )
            return body(&pbkdf)
        }
    }

    private static func withOptionalCString<R>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
        guard let text else { return body(nil) }
        return text.withCString { body($0) }
    }

    /// The key as a C pointer; an empty key is refused (libcryptsetup would read no bytes).
    private static func checkedKey(
        _ key: UnsafeRawBufferPointer,
        call: String,
        path: String
    ) throws(SystemError) -> UnsafeBufferPointer<CChar> {
        guard let base = key.baseAddress, key.count > 0 else {
            throw SystemError.cryptsetup(-EINVAL, call: call, context: "\(path): empty key")
        }
        return UnsafeBufferPointer(start: base.assumingMemoryBound(to: CChar.self), count: key.count)
    }

    private static func header(_ device: OpaquePointer, path: String) throws(SystemError) -> LUKS2Header {
        func text(_ pointer: UnsafePointer<CChar>?) -> String { pointer.map { String(cString: $0) } ?? "" }
        var keyslots: [LUKS2Keyslot] = []
        for slot in 0..<keyslotLimit {
            let status = crypt_keyslot_status(device, slot)
            guard status == CRYPT_SLOT_ACTIVE || status == CRYPT_SLOT_ACTIVE_LAST || status == CRYPT_SLOT_UNBOUND else {
                continue
            }
            var pbkdf = crypt_pbkdf_type()
            let result = crypt_keyslot_get_pbkdf(device, slot, &pbkdf)
            guard result == 0 else {
                throw SystemError.cryptsetup(
                    result,
                    call: "crypt_keyslot_get_pbkdf",
                    context: "\(path) keyslot \(slot)"
                )
            }
            keyslots.append(
                LUKS2Keyslot(
                    index: Int(slot),
                    kdfType: text(pbkdf.type),
                    hash: text(pbkdf.hash),
                    iterations: pbkdf.iterations,
                    memoryKiB: pbkdf.max_memory_kb,
                    threads: pbkdf.parallel_threads
                )
            )
        }
        var json: UnsafePointer<CChar>?
        let dumped = crypt_dump_json(device, &json, 0)
        guard dumped == 0, let json else {
            throw SystemError.cryptsetup(dumped, call: "crypt_dump_json", context: path)
        }
        let volumeKeyBytes = crypt_get_volume_key_size(device)
        guard volumeKeyBytes > 0 else {
            throw SystemError.cryptsetup(-EINVAL, call: "crypt_get_volume_key_size", context: path)
        }
        return LUKS2Header(
            cipher: text(crypt_get_cipher(device)),
            cipherMode: text(crypt_get_cipher_mode(device)),
            volumeKeyBytes: Int(volumeKeyBytes),
            sectorSize: Int(crypt_get_sector_size(device)),
            uuid: text(crypt_get_uuid(device)),
            label: text(crypt_get_label(device)),
            keyslots: keyslots,
            tokens: try tokens(device, path: path),
            metadataJSON: String(cString: json)
        )
    }

    private static func token(_ device: OpaquePointer, id: Int32, path: String) throws(SystemError) -> String? {
        var json: UnsafePointer<CChar>?
        let result = crypt_token_json_get(device, id, &json)
        if result == -ENOENT || result == -EINVAL { return nil }
        guard result >= 0, let json else {
            throw SystemError.cryptsetup(result, call: "crypt_token_json_get", context: path)
        }
        return String(cString: json)
    }

    private static func tokens(_ device: OpaquePointer, path: String) throws(SystemError) -> [LUKS2Token] {
        var result: [LUKS2Token] = []
        for id in 0..<tokenLimit {
            if let json = try token(device, id: id, path: path) { result.append(LUKS2Token(id: Int(id), json: json)) }
        }
        return result
    }

    /// Offsets where LUKS2 may keep a header copy (primary at 0, secondary after 16 KiB…4 MiB of metadata).
    static let headerOffsets: [Int] = [0] + (14...22).map { 1 << $0 }

    /// The first header offset holding a LUKS magic (`LUKS\xba\xbe` or `SKUL\xba\xbe`), or nil.
    private static func luksMagicOffset(path: String) throws(SystemError) -> Int? {
        do {
            let file = try FileDescriptor.open(path: path, flags: O_RDONLY | O_NONBLOCK)
            defer { try? file.close() }
            let primary: [UInt8] = [0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE]
            let secondary: [UInt8] = [0x53, 0x4B, 0x55, 0x4C, 0xBA, 0xBE]
            for offset in headerOffsets {
                var magic = [UInt8](repeating: 0, count: 6)
                let count = try magic.withUnsafeMutableBytes { try file.read(into: $0, atOffset: offset) }
                guard count == 6 else { break }
                if magic == primary || magic == secondary { return offset }
            }
            return nil
        } catch let error as SystemError {
            throw error
        } catch {
            throw SystemError.errno(EIO, call: "luksMagicOffset", context: "\(error)")
        }
    }
}
