import KeydCore
import KeydPlatform
import KeydProtocol

// The two places where KeydCore's view of a state disk meets libcryptsetup's: what `disk.format`
// hands to libcryptsetup for a profile, and the facts the header check reads from a header.
// Public so that tests and the state-disk benchmark use keyd's own mapping, never a copy.

extension LUKS2FormatParameters {
    /// What `disk.format` writes for `profile`: its cipher, sector size and keyslot KDF, keyd's
    /// label, and a state-disk token that says not initialized.
    public init(profile: DiskProfile, label: String = StateDisk.label) {
        self.init(
            cipher: profile.cipher,
            cipherMode: profile.cipherMode,
            volumeKeyBytes: profile.volumeKeyBytes,
            sectorSize: UInt32(profile.sectorSize),
            label: label,
            kdf: profile.kdf,
            tokenJSON: StateDiskToken(kind: profile.tokenKind, initialized: false).json
        )
    }
}

extension LUKS2HeaderFacts {
    /// KeydCore's facts of a header libcryptsetup read; throws when its metadata does not parse.
    public init(_ header: LUKS2Header) throws(CoreError) {
        try self.init(
            cipher: header.cipher,
            cipherMode: header.cipherMode,
            volumeKeyBytes: header.volumeKeyBytes,
            sectorSize: header.sectorSize,
            tokenJSONs: header.tokens.map(\.json),
            uuid: header.uuid,
            label: header.label,
            metadataJSON: header.metadataJSON
        )
    }
}
