/// How an audit chain relates to keyd's TPM counter, which keyd increments after every record it
/// makes durable: after record `s` (0-based, the genesis is 0) the counter holds `base + s + 1`.
///
/// A counter never goes back (TPM NV counter), so a log cut at a line boundary, replaced by an
/// older copy or removed shows fewer records than the counter has counted.
public enum AuditAnchor {
    /// The comparison of a chain of `records` lines (genesis `counterBase`) with the TPM's `counter`.
    public enum Verdict: Sendable, Hashable {
        /// The counter counted every line and no more.
        case consistent
        /// keyd stopped between writing the last line and counting it: count it now.
        case lastRecordUncounted
        /// The counter counted `missing` lines more than the log holds: lines were removed at the end.
        case recordsMissing(UInt64)
        /// The log holds `extra` lines more than the counter counted: another TPM, or its state was rolled back.
        case counterBehind(UInt64)
    }

    /// Compares a chain with the counter.
    public static func compare(counterBase: UInt64, records: UInt64, counter: UInt64) -> Verdict {
        let (expected, overflow) = counterBase.addingReportingOverflow(records)
        guard !overflow else { return .counterBehind(UInt64.max) }
        if counter == expected { return .consistent }
        if counter > expected { return .recordsMissing(counter - expected) }
        if counter == expected - 1 { return .lastRecordUncounted }
        return .counterBehind(expected - counter)
    }
}
