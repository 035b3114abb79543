/// How an audit chain relates to keyd's TPM counter. keyd commits records in groups (one write, one
/// fsync) and increments the counter once per group, after the group is durable; the last line of
/// each group carries `"anchor":<n>`, the counter's value once the group is counted. The genesis is
/// a group of its own whose anchor is its `counterBase` + 1.
///
/// A counter never goes back (TPM NV counter), so a log cut anywhere in a committed group (which
/// removes that group's anchor line), replaced by an older copy or removed shows a last anchor below
/// the counter. Lines after the last anchor line are a group keyd began to write and never counted:
/// no request they record was answered.
public enum AuditAnchor {
    /// The comparison of a chain's last anchor with the TPM's counter.
    public enum Verdict: Sendable, Hashable {
        /// The counter counted every committed group and no more.
        case consistent
        /// keyd stopped between making the last group durable and counting it: count it now.
        case lastGroupUncounted
        /// The counter counted `missing` groups more than the log holds: records were removed at the end.
        case groupsMissing(UInt64)
        /// The log holds `extra` groups more than the counter counted: another TPM, or its state was rolled back.
        case counterBehind(UInt64)
    }

    /// Compares the last anchor of a chain with the counter.
    public static func compare(lastAnchor: UInt64, counter: UInt64) -> Verdict {
        if counter == lastAnchor { return .consistent }
        if counter > lastAnchor { return .groupsMissing(counter - lastAnchor) }
        if counter == lastAnchor - 1 { return .lastGroupUncounted }
        return .counterBehind(lastAnchor - counter)
    }
}
