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
