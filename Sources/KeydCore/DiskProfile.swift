import FoundationEssentials
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
        name: "asterism",
        cipher: "aes",
        cipherMode: "xts-plain64",
        volumeKeyBytes: 64,
        sectorSize: 4096,
        kdf: .pbkdf2(hash: "sha256", iterations: 1000),
        tokenType: StateDiskToken.Kind.asterism.type
    )

    /// Constellation's profile, for compatibility: argon2id 2000 ms, 64 MiB, 4 threads.
    public static let constellation = DiskProfile(
        name: "constellation",
        cipher: "aes",
        cipherMode: "xts-plain64",
        volumeKeyBytes: 64,
        sectorSize: 4096,
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
        precondition(
            all.allSatisfy {
                $0.cipher == reference.cipher && $0.cipherMode == reference.cipherMode
                    && $0.volumeKeyBytes == reference.volumeKeyBytes && $0.sectorSize == reference.sectorSize
            },
            "disk profiles disagree on shared fields"
        )
        if facts.cipher != reference.cipher {
            return .failure(HeaderRejection(field: "cipher", found: facts.cipher, expected: reference.cipher))
        }
        if facts.cipherMode != reference.cipherMode {
            return .failure(
                HeaderRejection(field: "cipher mode", found: facts.cipherMode, expected: reference.cipherMode)
            )
        }
        if facts.volumeKeyBytes != reference.volumeKeyBytes {
            return .failure(
                HeaderRejection(
                    field: "volume key bytes",
                    found: String(facts.volumeKeyBytes),
                    expected: String(reference.volumeKeyBytes)
                )
            )
        }
        if facts.sectorSize != reference.sectorSize {
            return .failure(
                HeaderRejection(
                    field: "sector size",
                    found: String(facts.sectorSize),
                    expected: String(reference.sectorSize)
                )
            )
        }
        if facts.segmentTypes != [segmentType] {
            return .failure(
                HeaderRejection(
                    field: "segments",
                    found: listed(facts.segmentTypes),
                    expected: "exactly one \(segmentType)"
                )
            )
        }
        if facts.digestTypes.isEmpty || facts.digestTypes.contains(where: { $0 != digestType }) {
            return .failure(HeaderRejection(field: "digests", found: listed(facts.digestTypes), expected: digestType))
        }
        let kdfs = Set(facts.keyslotKDFs)
        guard kdfs.count == 1, let kdf = kdfs.first, let profile = all.first(where: { $0.kdf.type == kdf }) else {
            return .failure(
                HeaderRejection(
                    field: "keyslot KDF",
                    found: listed(facts.keyslotKDFs),
                    expected: "one of " + all.map(\.kdf.type).joined(separator: ", ") + " in every keyslot"
                )
            )
        }
        // A state-disk token of the other profile means the header was made by something else.
        for json in facts.tokenJSONs {
            guard let token = try? StateDiskToken(parsing: json) else { continue }
            if token.kind != profile.tokenKind {
                return .failure(
                    HeaderRejection(field: "token type", found: token.kind.type, expected: profile.tokenType)
                )
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
        cipher: String,
        cipherMode: String,
        volumeKeyBytes: Int,
        sectorSize: Int,
        keyslotKDFs: [String],
        digestTypes: [String],
        segmentTypes: [String],
        tokenJSONs: [String],
        uuid: String,
        label: String
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
        cipher: String,
        cipherMode: String,
        volumeKeyBytes: Int,
        sectorSize: Int,
        tokenJSONs: [String],
        uuid: String,
        label: String,
        metadataJSON: String
    ) throws(CoreError) {
        let metadata = try LUKS2Metadata.decode(metadataJSON)
        self.init(
            cipher: cipher,
            cipherMode: cipherMode,
            volumeKeyBytes: volumeKeyBytes,
            sectorSize: sectorSize,
            keyslotKDFs: try metadata.inIndexOrder(metadata.keyslots, "keyslots").map(\.kdf.type),
            digestTypes: try metadata.inIndexOrder(metadata.digests, "digests").map(\.type),
            segmentTypes: try metadata.inIndexOrder(metadata.segments, "segments").map(\.type),
            tokenJSONs: tokenJSONs,
            uuid: uuid,
            label: label
        )
        for (key, keyslot) in metadata.keyslots {
            if let index = Int(key), let salt = keyslot.kdf.salt { keyslotSalts[index] = salt }
        }
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

    /// Parses token JSON (as libcryptsetup returns it, whitespace allowed), strictly: exactly the
    /// members of one of the two formats, `keyslots` empty.
    public init(parsing text: String) throws(CoreError) {
        let members = try LUKS2JSON.decode(
            TokenMembers.self,
            from: text,
            limit: Self.maximumLength,
            what: "state-disk token"
        )
        guard let type = members.type else { throw CoreError.invalidStateDiskToken("no string member 'type'") }
        let expected: Set<String>
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
        guard members.names == expected else {
            throw CoreError.invalidStateDiskToken(
                "members \(members.names.sorted().map { quotedForMessage($0) }.joined(separator: ", ")) differ from "
                    + expected.sorted().joined(separator: ", ")
            )
        }
        guard members.keyslots?.isEmpty == true else {
            throw CoreError.invalidStateDiskToken("'keyslots' is not an empty array")
        }
        let flagName = kind == .asterism ? "initialized" : "diskIsInitialized"
        guard let flag = kind == .asterism ? members.initialized : members.diskIsInitialized else {
            throw CoreError.invalidStateDiskToken("'\(flagName)' is not a boolean")
        }
        initialized = flag
        if kind == .asterism, members.formatVersion != Self.formatVersion {
            throw CoreError.invalidStateDiskToken("'formatVersion' is not \(Self.formatVersion)")
        }
    }

    /// A token's members as JSON gives them: every name, and the values of the known ones when they
    /// have the right type (nil otherwise, so the refusal names the member).
    private struct TokenMembers: Decodable {
        var names: Set<String> = []
        var type: String?
        var keyslots: [String]?
        var initialized: Bool?
        var diskIsInitialized: Bool?
        var formatVersion: Int?

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: LUKS2JSON.Name.self)
            names = Set(container.allKeys.map(\.stringValue))
            type = try? container.decode(String.self, forKey: LUKS2JSON.Name("type"))
            keyslots = try? container.decode([String].self, forKey: LUKS2JSON.Name("keyslots"))
            initialized = try? container.decode(Bool.self, forKey: LUKS2JSON.Name("initialized"))
            diskIsInitialized = try? container.decode(Bool.self, forKey: LUKS2JSON.Name("diskIsInitialized"))
            formatVersion = try? container.decode(Int.self, forKey: LUKS2JSON.Name("formatVersion"))
        }
    }
}

/// The parts of the LUKS2 metadata (`crypt_dump_json`) the header check reads.
struct LUKS2Metadata: Decodable {
    /// A keyslot: its KDF.
    struct Keyslot: Decodable {
        /// A keyslot KDF: its type and salt.
        struct KDF: Decodable {
            let type: String
            let salt: String?
        }
        let kdf: KDF
    }

    /// Anything with a `type`: a digest or a segment.
    struct Typed: Decodable {
        let type: String
    }

    let keyslots: [String: Keyslot]
    let digests: [String: Typed]
    let segments: [String: Typed]

    /// LUKS2 allows metadata up to 4 MiB of JSON.
    static let limit = 4 * 1024 * 1024

    /// Decodes `text`; names the section that is missing or malformed.
    static func decode(_ text: String) throws(CoreError) -> LUKS2Metadata {
        try LUKS2JSON.decode(LUKS2Metadata.self, from: text, limit: limit, what: "LUKS2 metadata")
    }

    /// The values of a section whose keys are decimal indices, in index order.
    func inIndexOrder<Value>(_ section: [String: Value], _ name: String) throws(CoreError) -> [Value] {
        var indexed: [(Int, Value)] = []
        for (key, value) in section {
            guard let index = Int(key), index >= 0, String(index) == key else {
                throw CoreError.invalidLUKS2Metadata("'\(name)' entry \(quotedForMessage(key)) is not an index")
            }
            indexed.append((index, value))
        }
        return indexed.sorted { $0.0 < $1.0 }.map(\.1)
    }
}

/// JSON from libcryptsetup, decoded by FoundationEssentials' `JSONDecoder`.
///
/// libcryptsetup hands out its metadata and tokens as json-c re-serializes its own parse, so a name
/// appears at most once in an object whatever the host wrote on disk: json-c keeps the last of
/// duplicate names, and keyd therefore never reads a value libcryptsetup does not use.
enum LUKS2JSON {
    /// A member name, for reading every name of an object.
    struct Name: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(_ name: String) { stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Decodes `text` (at most `limit` bytes) as `type`; `what` names the document in the error.
    static func decode<T: Decodable>(_ type: T.Type, from text: String, limit: Int, what: String) throws(CoreError) -> T
    {
        let bytes = Array(text.utf8)
        guard bytes.count <= limit else {
            throw CoreError.invalidJSON("\(what) of \(bytes.count) bytes exceeds limit \(limit)")
        }
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw CoreError.invalidJSON("\(what) does not decode: \(Self.describe(error))")
        }
    }

    /// A decoding error in one line: the coding path and what was wrong, never the document.
    private static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "not JSON" }
        switch error {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .keyNotFound(_, let context),
            .dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            let detail: String
            switch error {
            case .keyNotFound(let key, _): detail = "member \(quotedForMessage(key.stringValue)) missing"
            case .typeMismatch: detail = "wrong type"
            case .valueNotFound: detail = "null value"
            default: detail = "not valid JSON"
            }
            return path.isEmpty ? detail : "\(detail) at \(quotedForMessage(path))"
        @unknown default:
            return "not JSON"
        }
    }
}

// MARK: - Errors

extension CoreError.Code {
    /// Token JSON is not a well-formed state-disk token.
    public static let invalidStateDiskToken = CoreError.Code("invalidStateDiskToken")
    /// The LUKS2 metadata JSON is malformed or lacks a section.
    public static let invalidLUKS2Metadata = CoreError.Code("invalidLUKS2Metadata")
    /// Text is not JSON of the expected shape (or is longer than the limit).
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

    /// JSON text did not decode; `reason` names the document and the member.
    static func invalidJSON(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidJSON, reason: reason, file: file, line: line)
    }
}
