import FoundationEssentials
import KeydProtocol

/// What the platform layer reads from a LUKS2 header; pure data, no secret. Nothing here is
/// validated: ``DiskProfile/check(_:)`` decides, and only its ``CheckedHeader`` is used.
public struct LUKS2HeaderFacts: Hashable, Sendable {
    /// The block cipher (`aes`).
    public var cipher: String
    /// The cipher mode (`xts-plain64`).
    public var cipherMode: String
    /// The volume key length in bytes.
    public var volumeKeyBytes: Int
    /// The encryption sector size in bytes.
    public var sectorSize: Int
    /// Every keyslot, in index order.
    public var keyslots: [LUKS2KeyslotFacts]
    /// Every digest, in index order.
    public var digests: [LUKS2DigestFacts]
    /// The type of each segment, in segment order.
    public var segmentTypes: [String]
    /// The persistent activation flags (`config.flags`, such as `allow-discards`).
    public var persistentFlags: [String]
    /// The requirements (`config.requirements`): each mandatory one, and the name of any other member.
    public var requirements: [String]
    /// The JSON text of each token, in token order.
    public var tokenJSONs: [String]
    /// The header UUID exactly as the header holds it (the host wrote it: not validated here).
    public var uuid: String
    /// The header label exactly as the header holds it; empty when none.
    public var label: String

    /// Makes facts from values already read.
    public init(
        cipher: String,
        cipherMode: String,
        volumeKeyBytes: Int,
        sectorSize: Int,
        keyslots: [LUKS2KeyslotFacts],
        digests: [LUKS2DigestFacts],
        segmentTypes: [String],
        persistentFlags: [String] = [],
        requirements: [String] = [],
        tokenJSONs: [String],
        uuid: String,
        label: String
    ) {
        self.cipher = cipher
        self.cipherMode = cipherMode
        self.volumeKeyBytes = volumeKeyBytes
        self.sectorSize = sectorSize
        self.keyslots = keyslots
        self.digests = digests
        self.segmentTypes = segmentTypes
        self.persistentFlags = persistentFlags
        self.requirements = requirements
        self.tokenJSONs = tokenJSONs
        self.uuid = uuid
        self.label = label
    }

    /// Makes facts from the header getters plus the LUKS2 metadata JSON (`crypt_dump_json`), from
    /// which the keyslots, digests, segments and `config` are read.
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
            keyslots: try metadata.inIndexOrder(metadata.keyslots, "keyslots").map { index, keyslot in
                LUKS2KeyslotFacts(index: index, keyslot)
            },
            digests: try metadata.inIndexOrder(metadata.digests, "digests").map { _, digest in
                LUKS2DigestFacts(type: digest.type, hash: digest.hash, iterations: digest.iterations)
            },
            segmentTypes: try metadata.inIndexOrder(metadata.segments, "segments").map(\.1.type),
            persistentFlags: metadata.config.flags ?? [],
            requirements: metadata.config.requirements?.entries ?? [],
            tokenJSONs: tokenJSONs,
            uuid: uuid,
            label: label
        )
    }

    /// The KDF salt (base64, as in the metadata) of each keyslot by index: it names a keyslot for as
    /// long as the keyslot exists, since a new keyslot gets a new random salt.
    public var keyslotSalts: [Int: String] {
        var salts: [Int: String] = [:]
        for keyslot in keyslots { if let salt = keyslot.kdf.salt { salts[keyslot.index] = salt } }
        return salts
    }
}

/// One LUKS2 keyslot as its metadata describes it: key size, area cipher, anti-forensic split, KDF.
public struct LUKS2KeyslotFacts: Hashable, Sendable {
    /// The keyslot number.
    public var index: Int
    /// The keyslot type (`luks2`; `reencrypt` during a re-encryption).
    public var type: String
    /// The length of the key the keyslot stores (`key_size`), in bytes.
    public var keyBytes: Int
    /// The cipher of the keyslot area (`area.encryption`, such as `aes-xts-plain64`).
    public var areaEncryption: String
    /// The key length of the keyslot area cipher (`area.key_size`), in bytes.
    public var areaKeyBytes: Int
    /// The anti-forensic splitter: type (`luks1`), stripes and hash; nil when the keyslot has none.
    public var antiForensic: AntiForensic?
    /// The KDF and its cost.
    public var kdf: KDF

    /// The anti-forensic splitter of a keyslot.
    public struct AntiForensic: Hashable, Sendable {
        /// `luks1`.
        public var type: String
        /// The number of stripes (4000 in LUKS2).
        public var stripes: UInt64
        /// The hash (`sha256`).
        public var hash: String

        /// Makes splitter facts.
        public init(type: String, stripes: UInt64, hash: String) {
            self.type = type
            self.stripes = stripes
            self.hash = hash
        }
    }

    /// A keyslot KDF as the header records it; members the KDF type lacks are nil.
    public struct KDF: Hashable, Sendable {
        /// `pbkdf2`, `argon2i` or `argon2id`.
        public var type: String
        /// The PBKDF2 hash.
        public var hash: String?
        /// PBKDF2 iterations.
        public var iterations: UInt64?
        /// Argon2 time cost (passes).
        public var time: UInt64?
        /// Argon2 memory cost in KiB.
        public var memoryKiB: UInt64?
        /// Argon2 threads (`cpus`).
        public var threads: UInt64?
        /// The salt, base64 as in the metadata.
        public var salt: String?

        /// Makes KDF facts.
        public init(
            type: String,
            hash: String? = nil,
            iterations: UInt64? = nil,
            time: UInt64? = nil,
            memoryKiB: UInt64? = nil,
            threads: UInt64? = nil,
            salt: String? = nil
        ) {
            self.type = type
            self.hash = hash
            self.iterations = iterations
            self.time = time
            self.memoryKiB = memoryKiB
            self.threads = threads
            self.salt = salt
        }
    }

    /// Makes keyslot facts.
    public init(
        index: Int,
        type: String,
        keyBytes: Int,
        areaEncryption: String,
        areaKeyBytes: Int,
        antiForensic: AntiForensic?,
        kdf: KDF
    ) {
        self.index = index
        self.type = type
        self.keyBytes = keyBytes
        self.areaEncryption = areaEncryption
        self.areaKeyBytes = areaKeyBytes
        self.antiForensic = antiForensic
        self.kdf = kdf
    }

    /// Facts of a decoded metadata keyslot.
    init(index: Int, _ keyslot: LUKS2Metadata.Keyslot) {
        self.init(
            index: index,
            type: keyslot.type,
            keyBytes: keyslot.keySize,
            areaEncryption: keyslot.area.encryption,
            areaKeyBytes: keyslot.area.keySize,
            antiForensic: keyslot.af.map { AntiForensic(type: $0.type, stripes: $0.stripes, hash: $0.hash) },
            kdf: KDF(
                type: keyslot.kdf.type,
                hash: keyslot.kdf.hash,
                iterations: keyslot.kdf.iterations,
                time: keyslot.kdf.time,
                memoryKiB: keyslot.kdf.memory,
                threads: keyslot.kdf.cpus,
                salt: keyslot.kdf.salt
            )
        )
    }
}

/// One LUKS2 digest (the volume key check run at every unlock): type, hash and PBKDF2 iterations.
public struct LUKS2DigestFacts: Hashable, Sendable {
    /// `pbkdf2`.
    public var type: String
    /// The PBKDF2 hash.
    public var hash: String?
    /// PBKDF2 iterations.
    public var iterations: UInt64?

    /// Makes digest facts.
    public init(type: String, hash: String?, iterations: UInt64?) {
        self.type = type
        self.hash = hash
        self.iterations = iterations
    }
}

/// The parts of the LUKS2 metadata (`crypt_dump_json`) the header check reads. Numbers that do not
/// fit their type (negative, fractional, over 64 bits) fail to decode, and the header is refused.
struct LUKS2Metadata: Decodable {
    /// A keyslot: its key size, area, anti-forensic splitter and KDF.
    struct Keyslot: Decodable {
        /// The keyslot area: its cipher and key size.
        struct Area: Decodable {
            let encryption: String
            let keySize: Int

            enum CodingKeys: String, CodingKey {
                case encryption
                case keySize = "key_size"
            }
        }

        /// The anti-forensic splitter.
        struct AF: Decodable {
            let type: String
            let stripes: UInt64
            let hash: String
        }

        /// A keyslot KDF: its type, cost and salt.
        struct KDF: Decodable {
            let type: String
            let hash: String?
            let iterations: UInt64?
            let time: UInt64?
            let memory: UInt64?
            let cpus: UInt64?
            let salt: String?
        }

        let type: String
        let keySize: Int
        let area: Area
        let af: AF?
        let kdf: KDF

        enum CodingKeys: String, CodingKey {
            case type, area, af, kdf
            case keySize = "key_size"
        }
    }

    /// A digest: its type, hash and iterations.
    struct Digest: Decodable {
        let type: String
        let hash: String?
        let iterations: UInt64?
    }

    /// A segment: its type.
    struct Segment: Decodable {
        let type: String
    }

    /// `config`: the persistent flags and the requirements.
    struct Config: Decodable {
        let flags: [String]?
        let requirements: Requirements?
    }

    /// `config.requirements`: every mandatory requirement, and the name of any other member.
    struct Requirements: Decodable {
        let entries: [String]

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: KeydJSON.Name.self)
            var entries: [String] = []
            for key in container.allKeys.sorted(by: { $0.stringValue < $1.stringValue }) {
                if key.stringValue == "mandatory" {
                    entries += try container.decode([String].self, forKey: key)
                } else {
                    entries.append(key.stringValue)
                }
            }
            self.entries = entries
        }
    }

    let keyslots: [String: Keyslot]
    let digests: [String: Digest]
    let segments: [String: Segment]
    let config: Config

    /// LUKS2 allows metadata up to 4 MiB of JSON.
    static let limit = 4 * 1024 * 1024

    /// Decodes `text`; names the section that is missing or malformed.
    static func decode(_ text: String) throws(CoreError) -> LUKS2Metadata {
        try KeydJSON.decode(LUKS2Metadata.self, from: text, limit: limit, what: "LUKS2 metadata")
    }

    /// The entries of a section whose keys are decimal indices, in index order.
    func inIndexOrder<Value>(_ section: [String: Value], _ name: String) throws(CoreError) -> [(Int, Value)] {
        var indexed: [(Int, Value)] = []
        for (key, value) in section {
            guard let index = Int(key), index >= 0, String(index) == key else {
                throw CoreError.invalidLUKS2Metadata("'\(name)' entry \(quotedForMessage(key)) is not an index")
            }
            indexed.append((index, value))
        }
        return indexed.sorted { $0.0 < $1.0 }
    }
}

/// JSON keyd reads (libcryptsetup's metadata and tokens, the measurement policy), decoded by
/// FoundationEssentials' `JSONDecoder`, with errors that name the member and never quote the document.
///
/// libcryptsetup hands out its metadata and tokens as json-c re-serializes its own parse, so a name
/// appears at most once in an object whatever the host wrote on disk: json-c keeps the last of
/// duplicate names, and keyd therefore never reads a value libcryptsetup does not use. `JSONDecoder`
/// keeps the first of duplicate names (see ``MeasurementPolicy`` for what that means for a policy).
enum KeydJSON {
    /// A member whose value a decoder refused: where (the coding path) and why, without the value.
    struct MemberError: Error {
        let path: [any CodingKey]
        let problem: String
    }

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
        try decode(type, from: Array(text.utf8), limit: limit, what: what)
    }

    /// Decodes `bytes` (at most `limit`) as `type`; `what` names the document in the error.
    static func decode<T: Decodable>(
        _ type: T.Type,
        from bytes: [UInt8],
        limit: Int,
        what: String
    ) throws(CoreError)
        -> T
    {
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
        if let error = error as? MemberError {
            let path = error.path.map(\.stringValue).joined(separator: ".")
            return "\(error.problem) at \(quotedForMessage(path))"
        }
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
    /// The LUKS2 metadata JSON is malformed or lacks a section.
    public static let invalidLUKS2Metadata = CoreError.Code("invalidLUKS2Metadata")
    /// Text is not JSON of the expected shape (or is longer than the limit).
    public static let invalidJSON = CoreError.Code("invalidJSON")
}

extension CoreError {
    /// The LUKS2 metadata JSON lacks what the header check needs.
    static func invalidLUKS2Metadata(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidLUKS2Metadata, reason: "LUKS2 metadata: \(reason)", file: file, line: line)
    }

    /// JSON text did not decode; `reason` names the document and the member.
    static func invalidJSON(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidJSON, reason: reason, file: file, line: line)
    }
}
