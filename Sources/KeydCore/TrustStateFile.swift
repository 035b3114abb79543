import KeydProtocol

/// What keyd trusts to decide key releases, at rest (`<state-dir>/trust.state`): the pinned operator
/// key and the signed measurement policy in force, authenticated against the host and numbered
/// against rollback.
///
/// ```
/// magic "ATST" | version u16 = 1 | generation u64 | operatorKey bytes<128> | signedPolicy bytes<16384>
/// mac fixed[32]
/// ```
/// `mac` is HMAC-SHA-256 under keyd's TPM-sealed audit key of `"asterism-trust-state-v1\n"` followed by
/// every byte before it: the host, which writes every disk byte, cannot make a file keyd accepts.
/// `generation` is the value the TPM NV counter `tpm-trust-counter-index` holds once this change (a
/// pin, a policy) is counted: keyd writes the file, then increments the counter, so an older copy put
/// back (a lower generation) is refused. Either field may be empty (nothing pinned, no policy). Without a TPM nothing is written:
/// the trust state lives in memory until keyd stops.
public struct TrustStateFile: Hashable, Sendable {
    /// ASCII `ATST`.
    static let magic: [UInt8] = Array("ATST".utf8)
    /// The only version.
    static let version: UInt16 = 1
    /// What the MAC covers before the file's bytes.
    public static let macLabel: [UInt8] = Array("asterism-trust-state-v1\n".utf8)
    /// The largest file accepted.
    public static let maximumLength = 4 + 2 + 8 + 2 + Limits.maxOperatorKey + 2 + Limits.maxSignedPolicy + 32

    /// The TPM counter's value once this change is counted.
    public var generation: UInt64
    /// The pinned operator key (`algorithm u8 | key`), or empty.
    public var operatorKey: [UInt8]
    /// The signed policy in force, as accepted, or empty.
    public var signedPolicy: [UInt8]

    /// A state to write.
    public init(generation: UInt64, operatorKey: [UInt8], signedPolicy: [UInt8]) {
        self.generation = generation
        self.operatorKey = operatorKey
        self.signedPolicy = signedPolicy
    }

    /// The file's bytes, `mac` computing the MAC of the label and the bytes before it.
    public func encoded(mac: ([UInt8]) -> [UInt8]) -> [UInt8] {
        var w = WireWriter(capacity: 64 + operatorKey.count + signedPolicy.count)
        w.fixed(Self.magic, count: 4)
        w.u16(Self.version)
        w.u64(generation)
        w.bytes(operatorKey, max: Limits.maxOperatorKey)
        w.bytes(signedPolicy, max: Limits.maxSignedPolicy)
        let tag = mac(Self.macLabel + w.bytes)
        precondition(tag.count == 32, "trust state MAC of \(tag.count) bytes")
        w.fixed(tag, count: 32)
        return w.bytes
    }

    /// Parses a file strictly and checks its MAC (`mac` as for ``encoded(mac:)``).
    public init(decoding bytes: [UInt8], mac: ([UInt8]) -> [UInt8]) throws(CoreError) {
        guard bytes.count <= Self.maximumLength else {
            throw .trustState("file of \(bytes.count) bytes exceeds \(Self.maximumLength)")
        }
        let fields: Fields
        switch bytes.withUnsafeBytes({ Self.parse($0) }) {
        case .success(let parsed): fields = parsed
        case .failure(let error): throw .trustState("\(error)")
        }
        guard fields.generation > 0 else { throw .trustState("generation 0: no counter value is 0 once counted") }
        guard Self.constantTimeEqual(mac(Self.macLabel + Array(bytes[..<fields.macStart])), fields.mac) else {
            throw .trustState("MAC does not verify: not written by this keyd with its audit key")
        }
        self.init(generation: fields.generation, operatorKey: fields.operatorKey, signedPolicy: fields.signedPolicy)
    }

    /// The fields of a file and where its MAC starts.
    private struct Fields {
        var generation: UInt64
        var operatorKey: [UInt8]
        var signedPolicy: [UInt8]
        var macStart: Int
        var mac: [UInt8]
    }

    private static func parse(_ raw: UnsafeRawBufferPointer) -> Result<Fields, ProtocolError> {
        var r = WireReader(raw)
        do {
            guard try r.fixed(4, "magic") == magic else {
                return .failure(.badValue(field: "magic", "not a trust state file"))
            }
            let version = try r.u16("version")
            guard version == Self.version else {
                return .failure(.badValue(field: "version", "\(version) is not \(Self.version)"))
            }
            let generation = try r.u64("generation")
            let key = try r.bytes(max: Limits.maxOperatorKey, "operatorKey")
            let policy = try r.bytes(max: Limits.maxSignedPolicy, "signedPolicy")
            let macStart = r.offset
            let tag = try r.fixed(32, "mac")
            try r.finish("trust state")
            return .success(
                Fields(generation: generation, operatorKey: key, signedPolicy: policy, macStart: macStart, mac: tag)
            )
        } catch {
            return .failure(error)
        }
    }

    /// Equal bytes, compared in time independent of where they differ.
    private static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// How a stored trust state relates to the TPM counter that numbers its changes.
public enum TrustStateAnchor {
    /// The comparison of a file's generation (nil for no file) with the counter (nil: not defined).
    public enum Verdict: Sendable, Hashable {
        /// No file and no counter: nothing was ever pinned or set.
        case empty
        /// The counter counted every change and no more.
        case consistent
        /// keyd stopped between writing the file and counting it: count it now.
        case lastChangeUncounted
        /// The file is older than the counter says (`missing` changes behind): put back, or removed.
        case rolledBack(missing: UInt64)
        /// The file is newer than the counter by more than one change: another TPM, or its state rolled back.
        case counterBehind(UInt64)
        /// A file, but no counter: written for another TPM, or the counter was undefined.
        case counterMissing
        /// A counter, but no file: the file was removed.
        case removed
    }

    /// Compares a file's generation with the counter.
    public static func compare(generation: UInt64?, counter: UInt64?) -> Verdict {
        switch (generation, counter) {
        case (nil, nil): return .empty
        case (nil, .some): return .removed
        case (.some, nil): return .counterMissing
        case (.some(let generation), .some(let counter)):
            if generation == counter { return .consistent }
            if generation < counter { return .rolledBack(missing: counter - generation) }
            if generation == counter + 1 { return .lastChangeUncounted }
            return .counterBehind(generation - counter)
        }
    }
}

extension CoreError.Code {
    /// A trust state file is malformed, or its MAC does not verify.
    public static let trustState = CoreError.Code("trustState")
}

extension CoreError {
    /// A trust state file was refused for `reason`.
    static func trustState(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .trustState, reason: "trust state: \(reason)", file: file, line: line)
    }
}
