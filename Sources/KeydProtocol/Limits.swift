/// Hard limits of keyd's wire format, version 1 (PROTOCOL.md, "Limits").
public enum Limits {
    /// Largest request frame body in bytes; checked on the length prefix before anything is allocated.
    public static let maxFrameLength = 65_536
    /// Largest answer frame body in bytes (evidence documents carry firmware event logs).
    public static let maxAnswerFrameLength = 262_144
    /// Smallest request body: kind (2) and sequence (4).
    public static let minRequestBody = 6
    /// Smallest answer body: kind (2), sequence (4) and status (2).
    public static let minAnswerBody = 8
    /// Byte count of the length prefix.
    public static let lengthPrefixSize = 4
    /// Protocol versions this implementation speaks.
    public static let supportedVersions: ClosedRange<UInt16> = 1...1
    /// Longest audit record line.
    public static let maxAuditRecord = 8192
    /// Most audit records one `audit.read` may ask for.
    public static let maxAuditRecordsPerRead: UInt16 = 512
    /// Longest evidence document inside a request (`key.release`).
    public static let maxEvidence = 49_152
    /// Longest evidence document keyd answers with (`evidence.issue`, `tpm.evidence`).
    public static let maxEvidenceDocument = 253_952
    /// Longest firmware event log inside a native evidence document.
    public static let maxEventLog = 196_608
    /// Longest `tpm.status` report.
    public static let maxTPMReport = 16_384
    /// Longest sealed envelope.
    public static let maxEnvelope = 4096
    /// Longest data-key envelope (`dataKey.release`'s answer, `dataKey.open`'s request).
    public static let maxDataKeyEnvelope = 1024
    /// The most bytes of a data key ID keyd reads; an ID over ``dataKeyIDLength`` decodes and is refused
    /// `invalidArgument`, a longer field is `malformed`.
    public static let maxDataKeyIDField = 255
    /// Data key ID length bounds (`dataKey.release`, `dataKey.open`).
    public static let dataKeyIDLength: ClosedRange<Int> = 1...128
    /// Data key length bounds in bytes.
    public static let dataKeyLength: ClosedRange<Int> = 16...64
    /// Longest init envelope (the operator's sealed master secret).
    public static let maxInitEnvelope = 1024
    /// Longest operator key (`algorithm u8 | key`).
    public static let maxOperatorKey = 128
    /// Longest signed measurement policy.
    public static let maxSignedPolicy = 16_384
    /// Longest kubelet CSR (DER) in `key.release`, and certificate in its answer.
    public static let maxKubeletCSR = 8192
    /// Longest Kubernetes node name.
    public static let maxNodeName = 253
    /// Longest device path.
    public static let maxDevicePath = 4096
    /// Longest device-mapper name.
    public static let maxMappingName = 64
    /// Master secret length bounds: a longer one does not decode (`malformed`), a shorter one decodes and
    /// is refused `invalidArgument`.
    public static let masterSecretLength: ClosedRange<Int> = 16...64
    /// Salt length bounds, enforced as ``masterSecretLength``'s.
    public static let saltLength: ClosedRange<Int> = 32...64
    /// Kind of the connection error answer, sent when keyd cannot tell which request it answers.
    public static let connectionErrorKind: UInt16 = 0xFFFF
    /// Sequence of the connection error answer.
    public static let connectionErrorSequence: UInt32 = 0xFFFF_FFFF
    /// Bit set in the kind of every answer.
    public static let answerBit: UInt16 = 0x8000
}
