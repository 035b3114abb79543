import FoundationEssentials
import KeydProtocol

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
        let members = try KeydJSON.decode(
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

    /// The `type` member of any token JSON, or nil when the text is not an object with a string `type`
    /// (or is longer than ``maximumLength``).
    static func declaredType(of text: String) -> String? {
        try? KeydJSON.decode(TypeMember.self, from: text, limit: maximumLength, what: "token").type
    }

    /// A token's `type` member alone.
    private struct TypeMember: Decodable {
        let type: String
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
            let container = try decoder.container(keyedBy: KeydJSON.Name.self)
            names = Set(container.allKeys.map(\.stringValue))
            type = try? container.decode(String.self, forKey: KeydJSON.Name("type"))
            keyslots = try? container.decode([String].self, forKey: KeydJSON.Name("keyslots"))
            initialized = try? container.decode(Bool.self, forKey: KeydJSON.Name("initialized"))
            diskIsInitialized = try? container.decode(Bool.self, forKey: KeydJSON.Name("diskIsInitialized"))
            formatVersion = try? container.decode(Int.self, forKey: KeydJSON.Name("formatVersion"))
        }
    }
}

extension CoreError.Code {
    /// Token JSON is not a well-formed state-disk token.
    public static let invalidStateDiskToken = CoreError.Code("invalidStateDiskToken")
}

extension CoreError {
    /// A state-disk token is malformed; `reason` names the member.
    static func invalidStateDiskToken(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidStateDiskToken, reason: "state-disk token: \(reason)", file: file, line: line)
    }
}
