import KeydProtocol

/// A LUKS2 format profile of the state disk: cipher, volume key, sector size, keyslot KDF and the
/// type of the token that records whether the disk is initialized.
///
/// keyd formats with one profile and, before any use, refuses a header that fits none of them
/// (``check(_:)``): an unexpected cipher, KDF, segment or digest is a hard error, never a reformat.
public struct DiskProfile: Hashable, Sendable, CustomStringConvertible {
    /// The profile's name in configuration and reports (`asterism`, `constellation`).
    public let name: String
    /// The block cipher (`aes`).
    public let cipher: String
    /// The cipher mode (`xts-plain64`).
    public let cipherMode: String
    /// The volume key length in bytes (64: AES-256 in XTS).
    public let volumeKeyBytes: Int
    /// The encryption sector size in bytes.
    public let sectorSize: Int
    /// The keyslot KDF.
    public let kdf: LUKS2KDF
    /// The `type` of the state-disk token.
    public let tokenType: String

    /// Asterism's profile: the keyslot holds a random 32-byte key, so PBKDF2-SHA-256 with the
    /// minimum iterations and no benchmark (a slow KDF protects nothing here and slows every boot).
    public static let asterism = DiskProfile(
        name: "asterism", cipher: "aes", cipherMode: "xts-plain64", volumeKeyBytes: 64, sectorSize: 4096,
        kdf: .pbkdf2(hash: "sha256", iterations: 1000), tokenType: StateDiskToken.Kind.asterism.type
    )

    /// Constellation's profile, for compatibility: argon2id 2000 ms, 64 MiB, 4 threads.
    public static let constellation = DiskProfile(
        name: "constellation", cipher: "aes", cipherMode: "xts-plain64", volumeKeyBytes: 64, sectorSize: 4096,
        kdf: .argon2id(timeMilliseconds: 2000, memoryKiB: 65536, threads: 4),
        tokenType: StateDiskToken.Kind.constellation.type
    )

    /// Every known profile, in the order ``check(_:)`` tries them.
    public static let all: [DiskProfile] = [.asterism, .constellation]

    /// The profile called `name`, or nil.
    public static func named(_ name: String) -> DiskProfile? {
        all.first { $0.name == name }
    }

    /// The segment type every profile requires, exactly once.
    public static let segmentType = "crypt"
    /// The digest type every profile requires.
    public static let digestType = "pbkdf2"

    public var description: String { name }

    /// The token kind this profile writes.
    public var tokenKind: StateDiskToken.Kind {
        tokenType == StateDiskToken.Kind.constellation.type ? .constellation : .asterism
    }

    /// The profile that `facts` fits, or the first field that fits none, naming the found and
    /// expected values.
    public static func check(_ facts: LUKS2HeaderFacts) -> Result<DiskProfile, HeaderRejection> {
        // Fields that all profiles share are checked against the first; the KDF then picks one.
        let reference = all[0]
        precondition(all.allSatisfy {
            $0.cipher == reference.cipher && $0.cipherMode == reference.cipherMode
                && $0.volumeKeyBytes == reference.volumeKeyBytes && $0.sectorSize == reference.sectorSize
        }, "disk profiles disagree on shared fields")
        if facts.cipher != reference.cipher {
            return .failure(HeaderRejection(field: "cipher", found: facts.cipher, expected: reference.cipher))
        }
        if facts.cipherMode != reference.cipherMode {
            return .failure(HeaderRejection(field: "cipher mode", found: facts.cipherMode, expected: reference.cipherMode))
        }
        if facts.volumeKeyBytes != reference.volumeKeyBytes {
            return .failure(HeaderRejection(
                field: "volume key bytes", found: String(facts.volumeKeyBytes), expected: String(reference.volumeKeyBytes)
            ))
        }
        if facts.sectorSize != reference.sectorSize {
            return .failure(HeaderRejection(
                field: "sector size", found: String(facts.sectorSize), expected: String(reference.sectorSize)
            ))
        }
        if facts.segmentTypes != [segmentType] {
            return .failure(HeaderRejection(
                field: "segments", found: listed(facts.segmentTypes), expected: "exactly one \(segmentType)"
            ))
        }
        if facts.digestTypes.isEmpty || facts.digestTypes.contains(where: { $0 != digestType }) {
            return .failure(HeaderRejection(field: "digests", found: listed(facts.digestTypes), expected: digestType))
        }
        let kdfs = Set(facts.keyslotKDFs)
        guard kdfs.count == 1, let kdf = kdfs.first, let profile = all.first(where: { $0.kdf.type == kdf }) else {
            return .failure(HeaderRejection(
                field: "keyslot KDF", found: listed(facts.keyslotKDFs),
                expected: "one of " + all.map(\.kdf.type).joined(separator: ", ") + " in every keyslot"
            ))
        }
        // A state-disk token of the other profile means the header was made by something else.
        for json in facts.tokenJSONs {
            guard let token = try? StateDiskToken(parsing: json) else { continue }
            if token.kind != profile.tokenKind {
                return .failure(HeaderRejection(field: "token type", found: token.kind.type, expected: profile.tokenType))
            }
        }
        return .success(profile)
    }

    private static func listed(_ values: [String]) -> String {
        values.isEmpty ? "none" : values.joined(separator: ", ")
    }
}

/// Why a LUKS2 header fits no known profile: the field, the value found and what was expected.
/// Header values are not secret, so they appear in the message (quoted and shortened).
public struct HeaderRejection: Error, Hashable, Sendable, CustomStringConvertible {
    /// The header field, such as `cipher` or `keyslot KDF`.
    public let field: String
    /// The value the header holds.
    public let found: String
    /// What a known profile requires.
    public let expected: String

    public var description: String {
        "LUKS2 header \(field) \(quotedForMessage(found)) fits no known profile (expected \(expected))"
    }
}

/// What the platform layer reads from a LUKS2 header; pure data, no secret.
public struct LUKS2HeaderFacts: Hashable, Sendable {
    /// The block cipher (`aes`).
    public var cipher: String
    /// The cipher mode (`xts-plain64`).
    public var cipherMode: String
    /// The volume key length in bytes.
    public var volumeKeyBytes: Int
    /// The encryption sector size in bytes.
    public var sectorSize: Int
    /// The KDF type of each active keyslot, in keyslot order.
    public var keyslotKDFs: [String]
    /// The type of each digest, in digest order.
    public var digestTypes: [String]
    /// The type of each segment, in segment order.
    public var segmentTypes: [String]
    /// The JSON text of each token, in token order.
    public var tokenJSONs: [String]
    /// The header UUID, lowercase.
    public var uuid: String
    /// The header label; empty when none.
    public var label: String
    /// The KDF salt (base64, as in the metadata) of each active keyslot by index: it names a keyslot
    /// for as long as the keyslot exists, since a new keyslot gets a new random salt.
    public var keyslotSalts: [Int: String] = [:]

    /// Makes facts from values already read.
    public init(
        cipher: String, cipherMode: String, volumeKeyBytes: Int, sectorSize: Int, keyslotKDFs: [String],
        digestTypes: [String], segmentTypes: [String], tokenJSONs: [String], uuid: String, label: String
    ) {
        self.cipher = cipher
        self.cipherMode = cipherMode
        self.volumeKeyBytes = volumeKeyBytes
        self.sectorSize = sectorSize
        self.keyslotKDFs = keyslotKDFs
        self.digestTypes = digestTypes
        self.segmentTypes = segmentTypes
        self.tokenJSONs = tokenJSONs
        self.uuid = uuid.lowercased()
        self.label = label
    }

    /// Makes facts from the header getters plus the LUKS2 metadata JSON (`crypt_dump_json`), from
    /// which the keyslot KDFs, digest types and segment types are read.
    public init(
        cipher: String, cipherMode: String, volumeKeyBytes: Int, sectorSize: Int, tokenJSONs: [String],
        uuid: String, label: String, metadataJSON: String
    ) throws(CoreError) {
        guard case .object(let root) = try MiniJSON.parse(metadataJSON, limit: MiniJSON.metadataLimit) else {
            throw CoreError.invalidLUKS2Metadata("top level is not an object")
        }
        var salts: [Int: String] = [:]
        func types(of section: String, nested: String? = nil) throws(CoreError) -> [String] {
            guard case .object(let entries)? = MiniJSON.member(section, of: root) else {
                throw CoreError.invalidLUKS2Metadata("'\(section)' is missing or not an object")
            }
            var result: [(Int, String)] = []
            for (key, value) in entries {
                guard let index = Int(key), case .object(let entry) = value else {
                    throw CoreError.invalidLUKS2Metadata("'\(section)' entry \(quotedForMessage(key)) is malformed")
                }
                var holder = entry
                if let nested {
                    guard case .object(let inner)? = MiniJSON.member(nested, of: entry) else {
                        throw CoreError.invalidLUKS2Metadata("'\(section)' entry \(index) has no '\(nested)' object")
                    }
                    holder = inner
                    if section == "keyslots", case .string(let salt)? = MiniJSON.member("salt", of: inner) { salts[index] = salt }
                }
                guard case .string(let type)? = MiniJSON.member("type", of: holder) else {
                    throw CoreError.invalidLUKS2Metadata("'\(section)' entry \(index) has no type")
                }
                result.append((index, type))
            }
            return result.sorted { $0.0 < $1.0 }.map(\.1)
        }
        self.init(
            cipher: cipher, cipherMode: cipherMode, volumeKeyBytes: volumeKeyBytes, sectorSize: sectorSize,
            keyslotKDFs: try types(of: "keyslots", nested: "kdf"), digestTypes: try types(of: "digests"),
            segmentTypes: try types(of: "segments"), tokenJSONs: tokenJSONs, uuid: uuid, label: label
        )
        keyslotSalts = salts
    }

    /// The first token that parses as a state-disk token, or nil.
    public var stateDiskToken: StateDiskToken? {
        tokenJSONs.lazy.compactMap { try? StateDiskToken(parsing: $0) }.first
    }
}

/// The LUKS2 token that records whether the state disk is initialized.
///
/// Asterism writes `{"type":"asterism-state-disk","keyslots":[],"initialized":<bool>,"formatVersion":1}`;
/// Constellation's `{"type":"constellation-state-disk","keyslots":[],"diskIsInitialized":<bool>}`
/// parses too. The parser is strict: exactly these members, each once, `keyslots` empty.
public struct StateDiskToken: Hashable, Sendable {
    /// Whose token format this is.
    public enum Kind: Hashable, Sendable {
        /// `asterism-state-disk`, with `initialized` and `formatVersion`.
        case asterism
        /// `constellation-state-disk`, with `diskIsInitialized`.
        case constellation

        /// The token's `type` member.
        public var type: String {
            switch self {
            case .asterism: "asterism-state-disk"
            case .constellation: "constellation-state-disk"
            }
        }
    }

    /// The only `formatVersion` Asterism writes and accepts.
    public static let formatVersion = 1
    /// The longest token JSON accepted.
    public static let maximumLength = 4096

    /// The token format.
    public var kind: Kind
    /// True once the disk has been re-keyed away from its first-boot passphrase.
    public var initialized: Bool

    /// Makes a token.
    public init(kind: Kind, initialized: Bool) {
        self.kind = kind
        self.initialized = initialized
    }

    /// The token as LUKS2 token JSON.
    public var json: String {
        switch kind {
        case .asterism:
            #"{"type":"asterism-state-disk","keyslots":[],"initialized":\#(initialized),"formatVersion":\#(Self.formatVersion)}"#
        case .constellation:
            #"{"type":"constellation-state-disk","keyslots":[],"diskIsInitialized":\#(initialized)}"#
        }
    }

    /// Parses token JSON (as libcryptsetup returns it, whitespace allowed), strictly.
    public init(parsing text: String) throws(CoreError) {
        guard case .object(let members) = try MiniJSON.parse(text, limit: Self.maximumLength) else {
            throw CoreError.invalidStateDiskToken("not a JSON object")
        }
        guard case .string(let type)? = MiniJSON.member("type", of: members) else {
            throw CoreError.invalidStateDiskToken("no string member 'type'")
        }
        let expected: [String]
        switch type {
        case Kind.asterism.type:
            kind = .asterism
            expected = ["type", "keyslots", "initialized", "formatVersion"]
        case Kind.constellation.type:
            kind = .constellation
            expected = ["type", "keyslots", "diskIsInitialized"]
        default:
            throw CoreError.invalidStateDiskToken("type \(quotedForMessage(type)) is not a state-disk token")
        }
        let names = members.map(\.0)
        guard names.sorted() == expected.sorted() else {
            throw CoreError.invalidStateDiskToken(
                "members \(names.map { quotedForMessage($0) }.joined(separator: ", ")) differ from \(expected.joined(separator: ", "))"
            )
        }
        guard case .array(let slots)? = MiniJSON.member("keyslots", of: members), slots.isEmpty else {
            throw CoreError.invalidStateDiskToken("'keyslots' is not an empty array")
        }
        let flagName = kind == .asterism ? "initialized" : "diskIsInitialized"
        guard case .bool(let flag)? = MiniJSON.member(flagName, of: members) else {
            throw CoreError.invalidStateDiskToken("'\(flagName)' is not a boolean")
        }
        initialized = flag
        if kind == .asterism {
            guard case .integer(let version)? = MiniJSON.member("formatVersion", of: members),
                version == Self.formatVersion
            else {
                throw CoreError.invalidStateDiskToken("'formatVersion' is not \(Self.formatVersion)")
            }
        }
    }
}

// MARK: - Errors

extension CoreError.Code {
    /// Token JSON is not a well-formed state-disk token.
    public static let invalidStateDiskToken = CoreError.Code("invalidStateDiskToken")
    /// The LUKS2 metadata JSON is malformed or lacks a section.
    public static let invalidLUKS2Metadata = CoreError.Code("invalidLUKS2Metadata")
    /// Text is not JSON (or is deeper or longer than the limit).
    public static let invalidJSON = CoreError.Code("invalidJSON")
}

extension CoreError {
    /// A state-disk token is malformed; `reason` names the member.
    static func invalidStateDiskToken(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidStateDiskToken, reason: "state-disk token: \(reason)", file: file, line: line)
    }

    /// The LUKS2 metadata JSON lacks what the header check needs.
    static func invalidLUKS2Metadata(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidLUKS2Metadata, reason: "LUKS2 metadata: \(reason)", file: file, line: line)
    }

    /// JSON text failed to parse at byte `offset`.
    static func invalidJSON(_ reason: String, offset: Int, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidJSON, reason: "JSON at byte \(offset): \(reason)", file: file, line: line)
    }
}

// MARK: - A small strict JSON reader

/// A minimal JSON reader for LUKS2 metadata and tokens: objects keep member order and reject
/// duplicate names, numbers are integers only, nesting and length are limited, trailing bytes rejected.
enum MiniJSON: Equatable, Sendable {
    case object([(String, MiniJSON)])
    case array([MiniJSON])
    case string(String)
    case integer(Int)
    case bool(Bool)
    case null

    /// LUKS2 allows metadata up to 4 MiB of JSON.
    static let metadataLimit = 4 * 1024 * 1024
    /// The deepest nesting accepted; LUKS2 metadata uses four levels.
    static let depthLimit = 16

    static func == (lhs: MiniJSON, rhs: MiniJSON) -> Bool {
        switch (lhs, rhs) {
        case (.object(let a), .object(let b)): a.map(\.0) == b.map(\.0) && a.map(\.1) == b.map(\.1)
        case (.array(let a), .array(let b)): a == b
        case (.string(let a), .string(let b)): a == b
        case (.integer(let a), .integer(let b)): a == b
        case (.bool(let a), .bool(let b)): a == b
        case (.null, .null): true
        default: false
        }
    }

    /// The value of member `name`, or nil.
    static func member(_ name: String, of members: [(String, MiniJSON)]) -> MiniJSON? {
        members.first { $0.0 == name }?.1
    }

    /// Parses `text` whole; at most `limit` bytes.
    static func parse(_ text: String, limit: Int) throws(CoreError) -> MiniJSON {
        let bytes = Array(text.utf8)
        guard bytes.count <= limit else {
            throw CoreError.invalidJSON("length \(bytes.count) exceeds limit \(limit)", offset: 0)
        }
        var reader = Reader(bytes: bytes)
        let value = try reader.value(depth: 0)
        reader.skipSpace()
        guard reader.offset == bytes.count else { throw CoreError.invalidJSON("trailing bytes", offset: reader.offset) }
        return value
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func skipSpace() {
            while offset < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[offset]) { offset += 1 }
        }

        mutating func expect(_ literal: String) throws(CoreError) {
            for byte in literal.utf8 {
                guard offset < bytes.count, bytes[offset] == byte else {
                    throw CoreError.invalidJSON("expected '\(literal)'", offset: offset)
                }
                offset += 1
            }
        }

        mutating func value(depth: Int) throws(CoreError) -> MiniJSON {
            guard depth <= MiniJSON.depthLimit else {
                throw CoreError.invalidJSON("nesting exceeds limit \(MiniJSON.depthLimit)", offset: offset)
            }
            skipSpace()
            guard offset < bytes.count else { throw CoreError.invalidJSON("unexpected end", offset: offset) }
            switch bytes[offset] {
            case UInt8(ascii: "{"):
                offset += 1
                var members: [(String, MiniJSON)] = []
                skipSpace()
                if offset < bytes.count, bytes[offset] == UInt8(ascii: "}") {
                    offset += 1
                    return .object(members)
                }
                while true {
                    skipSpace()
                    let start = offset
                    let name = try string()
                    if members.contains(where: { $0.0 == name }) {
                        throw CoreError.invalidJSON("duplicate member \(quotedForMessage(name))", offset: start)
                    }
                    skipSpace()
                    try expect(":")
                    members.append((name, try value(depth: depth + 1)))
                    skipSpace()
                    guard offset < bytes.count else { throw CoreError.invalidJSON("unterminated object", offset: offset) }
                    if bytes[offset] == UInt8(ascii: "}") {
                        offset += 1
                        return .object(members)
                    }
                    try expect(",")
                }
            case UInt8(ascii: "["):
                offset += 1
                var values: [MiniJSON] = []
                skipSpace()
                if offset < bytes.count, bytes[offset] == UInt8(ascii: "]") {
                    offset += 1
                    return .array(values)
                }
                while true {
                    values.append(try value(depth: depth + 1))
                    skipSpace()
                    guard offset < bytes.count else { throw CoreError.invalidJSON("unterminated array", offset: offset) }
                    if bytes[offset] == UInt8(ascii: "]") {
                        offset += 1
                        return .array(values)
                    }
                    try expect(",")
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"):
                try expect("true")
                return .bool(true)
            case UInt8(ascii: "f"):
                try expect("false")
                return .bool(false)
            case UInt8(ascii: "n"):
                try expect("null")
                return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return .integer(try integer())
            default:
                throw CoreError.invalidJSON("unexpected byte \(bytes[offset])", offset: offset)
            }
        }

        mutating func integer() throws(CoreError) -> Int {
            let start = offset
            if bytes[offset] == UInt8(ascii: "-") { offset += 1 }
            let digitsStart = offset
            while offset < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[offset]) { offset += 1 }
            let digits = offset - digitsStart
            guard digits > 0, digits <= 18, !(digits > 1 && bytes[digitsStart] == UInt8(ascii: "0")) else {
                throw CoreError.invalidJSON("malformed or too long integer", offset: start)
            }
            if offset < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[offset]) {
                throw CoreError.invalidJSON("only integers are accepted", offset: start)
            }
            return Int(String(decoding: bytes[start..<offset], as: UTF8.self))!
        }

        mutating func string() throws(CoreError) -> String {
            let start = offset
            try expect("\"")
            var out: [UInt8] = []
            while true {
                guard offset < bytes.count else { throw CoreError.invalidJSON("unterminated string", offset: start) }
                let byte = bytes[offset]
                offset += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard offset < bytes.count else { throw CoreError.invalidJSON("unterminated escape", offset: offset) }
                    let escaped = bytes[offset]
                    offset += 1
                    switch escaped {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escaped)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "u"):
                        guard offset + 4 <= bytes.count,
                            let code = UInt32(String(decoding: bytes[offset..<offset + 4], as: UTF8.self), radix: 16),
                            let scalar = Unicode.Scalar(code)
                        else { throw CoreError.invalidJSON("bad \\u escape", offset: offset) }
                        offset += 4
                        out.append(contentsOf: Array(String(Character(scalar)).utf8))
                    default:
                        throw CoreError.invalidJSON("bad escape", offset: offset - 1)
                    }
                case 0..<0x20:
                    throw CoreError.invalidJSON("control byte in string", offset: offset - 1)
                default:
                    out.append(byte)
                }
            }
        }
    }
}
