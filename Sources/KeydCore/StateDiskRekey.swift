/// The crash-safe order of the state-disk re-key, from the first-boot passphrase (old key) to the
/// derived key (new key), and the rule that resumes it after a crash.
///
/// - Important: After every step, and after a crash inside any step, the disk opens with the old
///   key or the new key: the old keyslot is removed only after the new one has been verified and
///   the token marked, and the new keyslot is added beside the old one, never over it.
public enum StateDiskRekey {
    /// One step of the re-key; the I/O shell performs it and asks for the next.
    public enum Step: Hashable, Sendable, CaseIterable, CustomStringConvertible {
        /// Add a keyslot for the new key, unlocked with the old key.
        case addNewKeyslot
        /// Check that the new key opens a keyslot other than the old key's.
        case verifyNewKeyslot
        /// Write the state-disk token with `initialized: true`.
        case markTokenInitialized
        /// Destroy the keyslot that the old key opens.
        case removeOldKeyslot
        /// Nothing left to do.
        case done

        public var description: String {
            switch self {
            case .addNewKeyslot: "addNewKeyslot"
            case .verifyNewKeyslot: "verifyNewKeyslot"
            case .markTokenInitialized: "markTokenInitialized"
            case .removeOldKeyslot: "removeOldKeyslot"
            case .done: "done"
            }
        }
    }

    /// What is on disk, as the shell observes it by trying each key (keyslot that opens, or nil)
    /// and reading the token.
    public struct Observation: Hashable, Sendable {
        /// The keyslot the old key opens, or nil.
        public var oldKeyslot: Int?
        /// The keyslot the new key opens, or nil.
        public var newKeyslot: Int?
        /// Whether the state-disk token says `initialized`.
        public var tokenInitialized: Bool

        /// Makes an observation.
        public init(oldKeyslot: Int?, newKeyslot: Int?, tokenInitialized: Bool) {
            self.oldKeyslot = oldKeyslot
            self.newKeyslot = newKeyslot
            self.tokenInitialized = tokenInitialized
        }

        /// The invariant the order keeps: the disk opens with at least one of the keys.
        public var opens: Bool { oldKeyslot != nil || newKeyslot != nil }
    }

    /// What to do with a disk in a given state.
    public enum Decision: Hashable, Sendable {
        /// Perform this step next (`.done`: the re-key is complete).
        case perform(Step)
        /// Neither key opens the disk: change nothing, report (a wrong key or a damaged keyslot area).
        case neitherKeyOpens
        /// Both keys open the same keyslot (the keys are equal): removing "the old" would lose both.
        case keysShareKeyslot(Int)
    }

    /// The step after `step` in an uninterrupted run.
    public static func next(after step: Step) -> Step {
        switch step {
        case .addNewKeyslot: .verifyNewKeyslot
        case .verifyNewKeyslot: .markTokenInitialized
        case .markTokenInitialized: .removeOldKeyslot
        case .removeOldKeyslot, .done: .done
        }
    }

    /// Where to continue, given what is on disk (at start or after a crash at any point).
    ///
    /// The observation itself verifies the new keyslot: if the new key opens, verification is done.
    public static func resume(observed: Observation) -> Decision {
        switch (observed.oldKeyslot, observed.newKeyslot) {
        case (nil, nil):
            return .neitherKeyOpens
        case (let old?, let new?) where old == new:
            return .keysShareKeyslot(old)
        case (_?, nil):
            // Crashed before or during the add (a half-written keyslot does not open): add again.
            return .perform(.addNewKeyslot)
        case (_?, _?):
            return .perform(observed.tokenInitialized ? .removeOldKeyslot : .markTokenInitialized)
        case (nil, _?):
            // The order marks the token before removing the old keyslot, so an unmarked token here
            // means the old keyslot went some other way; marking it completes the re-key.
            return .perform(observed.tokenInitialized ? .done : .markTokenInitialized)
        }
    }
}

/// keyd's record of the keyslot that `disk.format` made for the first-boot passphrase
/// (`<state-dir>/headers/<uuid>.first-boot-keyslot`): index and KDF salt, never key material.
///
/// The passphrase lives in memory only, so a keyd that restarts in the middle of a re-key cannot
/// try it; the record lets the successor recognize that keyslot (same index, same salt) and remove
/// it once the derived key opens another one. Any other keyslot is left alone.
public struct FirstBootKeyslot: Hashable, Sendable {
    /// The longest record accepted.
    public static let maximumLength = 256

    /// The keyslot index.
    public var index: Int
    /// The keyslot's KDF salt, base64 as in the LUKS2 metadata.
    public var salt: String

    /// Makes a record.
    public init(index: Int, salt: String) {
        self.index = index
        self.salt = salt
    }

    /// The record file's text: `keyslot <index> salt <base64>` and a newline.
    public var text: String { "keyslot \(index) salt \(salt)\n" }

    /// Parses a record file strictly.
    public init(parsing text: String) throws(CoreError) {
        guard text.utf8.count <= Self.maximumLength, text.hasSuffix("\n") else {
            throw CoreError.invalidFirstBootRecord("longer than \(Self.maximumLength) bytes or no final newline")
        }
        let words = text.dropLast().split(separator: " ", omittingEmptySubsequences: false)
        guard words.count == 4, words[0] == "keyslot", words[2] == "salt", let index = Int(words[1]),
            (0..<32).contains(index),
            !words[3].isEmpty, words[3].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+/=".contains($0)) })
        else {
            throw CoreError.invalidFirstBootRecord("expected 'keyslot <0-31> salt <base64>'")
        }
        self.init(index: index, salt: String(words[3]))
    }

    /// The keyslot this record names in `facts`, or nil when that keyslot is gone or was replaced
    /// (another salt): only then may the re-key treat it as the first-boot keyslot.
    public func keyslot(in facts: LUKS2HeaderFacts) -> Int? {
        facts.keyslotSalts[index] == salt ? index : nil
    }
}

extension CoreError.Code {
    /// A first-boot keyslot record is malformed.
    public static let invalidFirstBootRecord = CoreError.Code("invalidFirstBootRecord")
}

extension CoreError {
    /// A first-boot keyslot record is malformed.
    static func invalidFirstBootRecord(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidFirstBootRecord, reason: "first-boot keyslot record: \(reason)", file: file, line: line)
    }
}
