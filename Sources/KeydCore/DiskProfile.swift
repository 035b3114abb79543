import KeydProtocol

/// A LUKS2 format profile of the state disk: cipher, volume key, sector size, keyslot KDF and the
/// type of the token that records whether the disk is initialized.
///
/// keyd formats with one profile and, before any use, refuses a header that fits none of them
/// (``check(_:)``): an unexpected cipher, KDF, KDF cost, flag, segment or digest is a hard error,
/// never a reformat.
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
    /// The digest PBKDF2 iterations a header may hold: libcryptsetup writes the minimum when the
    /// keyslot KDF is not benchmarked and benchmarks 125 ms otherwise.
    public let digestIterations: ClosedRange<UInt64>
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
        digestIterations: 1000...1000,
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
        digestIterations: 1000...maximumBenchmarkedDigestIterations,
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
    /// The digest type every profile requires, exactly once.
    public static let digestType = "pbkdf2"
    /// The hash of the digest, of PBKDF2 keyslots and of the anti-forensic splitter.
    public static let hash = "sha256"
    /// The anti-forensic splitter of every keyslot: LUKS2's `luks1` splitter with 4000 stripes.
    public static let antiForensic = LUKS2KeyslotFacts.AntiForensic(type: "luks1", stripes: 4000, hash: hash)
    /// At most this many keyslots: the first-boot one and the derived one during a re-key. Every
    /// unlock may try each keyslot's KDF, so the count bounds the cost too.
    public static let maximumKeyslots = 2
    /// The highest argon2id time cost (passes) accepted. Constellation benchmarks 2 s, which gives
    /// 4 to about 100 passes of 64 MiB on today's CPUs; the bound caps what a host can make keyd spend.
    public static let maximumArgon2TimeCost: UInt64 = 128
    /// The highest digest PBKDF2 iteration count of a benchmarked header: 125 ms of PBKDF2-SHA-256
    /// on a CPU about ten times faster than today's.
    public static let maximumBenchmarkedDigestIterations: UInt64 = 4_194_304
    /// The longest label accepted, in bytes (the 48-byte header field holds a NUL terminator).
    public static let maximumLabelBytes = 47

    public var description: String { name }

    /// The token kind this profile writes.
    public var tokenKind: StateDiskToken.Kind {
        tokenType == StateDiskToken.Kind.constellation.type ? .constellation : .asterism
    }

    /// The cipher of the data segment and of every keyslot area (`aes-xts-plain64`).
    public var encryption: String { cipher + "-" + cipherMode }

    /// The profile that `facts` fits with every value keyd uses from the header validated, or the
    /// first field that fits none, naming the found and expected values.
    ///
    /// - Important: The host writes the header. Nothing from it names a file, derives a key or
    ///   reaches a log line unless this check accepted it; its refusals quote the value found.
    public static func check(_ facts: LUKS2HeaderFacts) -> Result<CheckedHeader, HeaderRejection> {
        do {
            return .success(try checked(facts))
        } catch {
            return .failure(error)
        }
    }

    private static func checked(_ facts: LUKS2HeaderFacts) throws(HeaderRejection) -> CheckedHeader {
        // The UUID names files and derives the key: canonical or nothing.
        let uuid: DiskUUID
        do {
            uuid = try DiskUUID(validating: facts.uuid)
        } catch {
            throw HeaderRejection(field: "UUID", found: facts.uuid, expected: "a lowercase RFC 4122 UUID (8-4-4-4-12)")
        }
        guard facts.label.utf8.count <= maximumLabelBytes, facts.label.utf8.allSatisfy({ (0x20...0x7E).contains($0) })
        else {
            throw HeaderRejection(
                field: "label",
                found: facts.label,
                expected: "at most \(maximumLabelBytes) printable ASCII characters"
            )
        }
        // Fields that all profiles share are checked against the first; the KDF then picks one.
        let reference = all[0]
        precondition(
            all.allSatisfy {
                $0.cipher == reference.cipher && $0.cipherMode == reference.cipherMode
                    && $0.volumeKeyBytes == reference.volumeKeyBytes && $0.sectorSize == reference.sectorSize
            },
            "disk profiles disagree on shared fields"
        )
        try require("cipher", facts.cipher, reference.cipher)
        try require("cipher mode", facts.cipherMode, reference.cipherMode)
        try require("volume key bytes", facts.volumeKeyBytes, reference.volumeKeyBytes)
        try require("sector size", facts.sectorSize, reference.sectorSize)
        guard facts.segmentTypes == [segmentType] else {
            throw HeaderRejection(field: "segments", found: listed(facts.segmentTypes), expected: "exactly one crypt")
        }
        guard facts.persistentFlags.isEmpty else {
            throw HeaderRejection(field: "persistent flags", found: listed(facts.persistentFlags), expected: "none")
        }
        guard facts.requirements.isEmpty else {
            throw HeaderRejection(field: "requirements", found: listed(facts.requirements), expected: "none")
        }
        guard facts.digests.count == 1, let digest = facts.digests.first, digest.type == digestType else {
            throw HeaderRejection(
                field: "digests",
                found: listed(facts.digests.map(\.type)),
                expected: "exactly one \(digestType)"
            )
        }
        try require("digest hash", digest.hash ?? "none", hash)
        guard (1...maximumKeyslots).contains(facts.keyslots.count) else {
            throw HeaderRejection(
                field: "keyslots",
                found: String(facts.keyslots.count),
                expected: "1 to \(maximumKeyslots)"
            )
        }
        let kdfs = facts.keyslots.map(\.kdf.type)
        guard Set(kdfs).count == 1, let profile = all.first(where: { $0.kdf.type == kdfs[0] }) else {
            throw HeaderRejection(
                field: "keyslot KDF",
                found: listed(kdfs),
                expected: "one of " + all.map(\.kdf.type).joined(separator: ", ") + " in every keyslot"
            )
        }
        for keyslot in facts.keyslots { try profile.checkCost(of: keyslot) }
        guard let iterations = digest.iterations, profile.digestIterations.contains(iterations) else {
            throw HeaderRejection(
                field: "digest PBKDF2 iterations",
                found: digest.iterations.map(String.init) ?? "none",
                expected: spelled(profile.digestIterations)
            )
        }
        let token = try stateDiskToken(in: facts.tokenJSONs, profile: profile)
        return CheckedHeader(profile: profile, uuid: uuid, label: facts.label, stateDiskToken: token)
    }

    /// Refuses a keyslot whose key, area cipher, splitter or KDF cost differs from this profile's.
    private func checkCost(of keyslot: LUKS2KeyslotFacts) throws(HeaderRejection) {
        let name = "keyslot \(keyslot.index)"
        try Self.require(name + " type", keyslot.type, "luks2")
        try Self.require(name + " key bytes", keyslot.keyBytes, volumeKeyBytes)
        try Self.require(name + " encryption", keyslot.areaEncryption, encryption)
        try Self.require(name + " encryption key bytes", keyslot.areaKeyBytes, volumeKeyBytes)
        guard keyslot.antiForensic == Self.antiForensic else {
            let found = keyslot.antiForensic.map { "\($0.type) \($0.stripes) stripes \($0.hash)" } ?? "none"
            throw HeaderRejection(
                field: name + " anti-forensic splitter",
                found: found,
                expected: "\(Self.antiForensic.type) \(Self.antiForensic.stripes) stripes \(Self.antiForensic.hash)"
            )
        }
        let kdf = keyslot.kdf
        switch self.kdf {
        case .pbkdf2(let hash, let iterations):
            // The keyslot holds a random key: the profile's exact cost, never more.
            try Self.require(name + " PBKDF2 hash", kdf.hash ?? "none", hash)
            try Self.require(name + " PBKDF2 iterations", kdf.iterations.map(String.init) ?? "none", String(iterations))
        case .argon2id(_, let memoryKiB, let threads):
            try Self.bound(name + " argon2id memory KiB", kdf.memoryKiB, 1...UInt64(memoryKiB))
            try Self.bound(name + " argon2id threads", kdf.threads, 1...UInt64(threads))
            try Self.bound(name + " argon2id time cost", kdf.time, 1...Self.maximumArgon2TimeCost)
        }
    }

    /// The one state-disk token among `tokens`, or nil when there is none; refuses an oversized token,
    /// a second state-disk token of either kind, one that does not parse, or one of another profile.
    private static func stateDiskToken(
        in tokens: [String],
        profile: DiskProfile
    ) throws(HeaderRejection)
        -> StateDiskToken?
    {
        let stateTypes = [StateDiskToken.Kind.asterism.type, StateDiskToken.Kind.constellation.type]
        var claimed: [String] = []
        for json in tokens {
            let size = json.utf8.count
            guard size <= StateDiskToken.maximumLength else {
                throw HeaderRejection(
                    field: "token JSON size",
                    found: "\(size) bytes",
                    expected: "at most \(StateDiskToken.maximumLength) bytes"
                )
            }
            guard let type = StateDiskToken.declaredType(of: json) else {
                throw HeaderRejection(field: "token", found: json, expected: "a JSON object with a string type")
            }
            if stateTypes.contains(type) { claimed.append(json) }
        }
        guard claimed.count <= 1 else {
            throw HeaderRejection(field: "state-disk tokens", found: String(claimed.count), expected: "at most one")
        }
        guard let json = claimed.first else { return nil }
        let token: StateDiskToken
        do {
            token = try StateDiskToken(parsing: json)
        } catch {
            throw HeaderRejection(field: "state-disk token", found: json, expected: "a well-formed state-disk token")
        }
        // A state-disk token of the other profile means the header was made by something else.
        guard token.kind == profile.tokenKind else {
            throw HeaderRejection(field: "token type", found: token.kind.type, expected: profile.tokenType)
        }
        return token
    }

    private static func require<Value: Equatable & CustomStringConvertible>(
        _ field: String,
        _ found: Value,
        _ expected: Value
    ) throws(HeaderRejection) {
        guard found == expected else {
            throw HeaderRejection(field: field, found: found.description, expected: expected.description)
        }
    }

    private static func bound(_ field: String, _ found: UInt64?, _ range: ClosedRange<UInt64>) throws(HeaderRejection) {
        guard let found, range.contains(found) else {
            throw HeaderRejection(field: field, found: found.map(String.init) ?? "none", expected: spelled(range))
        }
    }

    private static func spelled(_ range: ClosedRange<UInt64>) -> String {
        range.lowerBound == range.upperBound ? String(range.lowerBound) : "\(range.lowerBound)…\(range.upperBound)"
    }

    private static func listed(_ values: [String]) -> String {
        values.isEmpty ? "none" : values.joined(separator: ", ")
    }
}

/// A LUKS2 header that passed ``DiskProfile/check(_:)``: its profile and the values keyd uses from
/// it, validated.
public struct CheckedHeader: Hashable, Sendable {
    /// The profile the header fits.
    public let profile: DiskProfile
    /// The disk's UUID.
    public let uuid: DiskUUID
    /// The label: printable ASCII, at most ``DiskProfile/maximumLabelBytes`` bytes; empty when none.
    public let label: String
    /// The header's one state-disk token, or nil when it has none.
    public let stateDiskToken: StateDiskToken?
}

/// Why a LUKS2 header is refused: the field, the value found and what was expected.
/// Header values are not secret, so they appear in the message (quoted and shortened).
public struct HeaderRejection: Error, Hashable, Sendable, CustomStringConvertible {
    /// The header field, such as `cipher` or `keyslot 0 PBKDF2 iterations`.
    public let field: String
    /// The value the header holds, as the host wrote it.
    public let found: String
    /// What a known profile requires.
    public let expected: String

    public var description: String {
        "LUKS2 header \(field) \(quotedForMessage(found)) refused (expected \(expected))"
    }
}
