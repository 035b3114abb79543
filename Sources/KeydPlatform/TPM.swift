import CKeydShims
import CTSS2
import Glibc

/// libtss2's decoding of response codes, and the classes keyd acts on.
public enum TPMResponse {
    /// libtss2's text for `rc` (layer and meaning), for logs and errors.
    static func describe(_ rc: UInt32) -> String {
        guard let text = Tss2_RC_Decode(rc) else { return "unknown response code" }
        return String(cString: text)
    }

    /// Whether `rc` says a policy did not hold (PolicyPCR over changed PCRs, or a failed policy check).
    public static func isPolicyFailure(_ rc: UInt32) -> Bool {
        let error = asterism_tpm2_rc_error(rc)
        return error == asterism_tpm2_rc_policy_fail() || error == asterism_tpm2_rc_pcr_changed()
    }
}

/// The attestation key's algorithm.
public enum TPMKeyAlgorithm: String, Sendable, CaseIterable {
    /// ECC NIST P-256 with ECDSA-SHA-256 (the default).
    case eccP256 = "ecc-p256"
    /// RSA 2048 with RSASSA-PKCS1-v1_5-SHA-256.
    case rsa2048 = "rsa-2048"
}

/// A selection of PCRs in the SHA-256 bank.
public struct PCRSelection: Hashable, Sendable {
    /// The number of PCRs of a PC Client TPM.
    public static let count = 24
    /// Every PCR (the default selection).
    public static let all = PCRSelection(unchecked: Array(0..<count))

    /// The selected indices, ascending, unique, each below 24.
    public let indices: [Int]

    /// Makes a selection; nil when an index is out of range.
    public init?(_ indices: some Sequence<Int>) {
        let sorted = Set(indices).sorted()
        guard sorted.allSatisfy({ (0..<Self.count).contains($0) }) else { return nil }
        self.indices = sorted
    }

    private init(unchecked indices: [Int]) { self.indices = indices }

    /// The selection as libtss2's structure (one SHA-256 bank, 3-byte bitmap).
    var tpml: TPML_PCR_SELECTION {
        var selection = TPML_PCR_SELECTION()
        selection.count = 1
        selection.pcrSelections.0.hash = asterism_tpm2_alg_sha256()
        selection.pcrSelections.0.sizeofSelect = 3
        withUnsafeMutableBytes(of: &selection.pcrSelections.0.pcrSelect) { bitmap in
            for index in indices { bitmap[index / 8] |= UInt8(1 << (index % 8)) }
        }
        return selection
    }
}

/// The attestation key as keyd loaded it: handle, public area and name.
public struct TPMAttestationKey: Sendable {
    /// The persistent TPM handle (0x81…).
    public let persistentHandle: UInt32
    /// The algorithm.
    public let algorithm: TPMKeyAlgorithm
    /// The TPMT_PUBLIC, TPM-marshaled.
    public let publicArea: [UInt8]
    /// The TPM name (nameAlg ‖ digest of the public area).
    public let name: [UInt8]
    /// ECC: the uncompressed point `04 ‖ X ‖ Y`; RSA: the modulus.
    public let publicKey: [UInt8]
    /// RSA: the public exponent (65537 when the TPM field is 0); ECC: 0.
    public let rsaExponent: UInt32
    /// Whether this start created the key (false: it was already persistent).
    public let created: Bool
    /// The ESAPI object of the persistent key.
    let object: ESYS_TR
}

/// A sealed data object: TPM2B_PUBLIC and TPM2B_PRIVATE, TPM-marshaled with their size fields.
public struct TPMSealedObject: Hashable, Sendable {
    /// The marshaled TPM2B_PUBLIC.
    public var publicBlob: [UInt8]
    /// The marshaled TPM2B_PRIVATE (encrypted by the TPM under the storage key).
    public var privateBlob: [UInt8]

    /// Wraps blobs read from storage.
    public init(publicBlob: [UInt8], privateBlob: [UInt8]) {
        self.publicBlob = publicBlob
        self.privateBlob = privateBlob
    }
}

/// A transient object or session loaded into the TPM by one ESAPI context; flushed when the value
/// ends, on every path (a software TPM holds only three transient objects).
struct TPMTransient: ~Copyable {
    /// The context that loaded it.
    private let context: OpaquePointer
    /// The ESAPI handle.
    let handle: ESYS_TR

    /// Takes ownership of `handle`, loaded by `context`.
    init(_ handle: ESYS_TR, context: OpaquePointer) {
        self.handle = handle
        self.context = context
    }

    deinit {
        // A failure is ignored: the handle may already be gone (a failed command flushes nothing else).
        _ = Esys_FlushContext(context, handle)
    }
}

/// An ESAPI reference to a persistent object or NV index (from `Esys_TR_FromTPMPublic`); closed
/// (`Esys_TR_Close`, which leaves the TPM's object alone) when the value ends.
struct TPMReference: ~Copyable {
    /// The context that made it.
    private let context: OpaquePointer
    /// The ESAPI handle.
    var handle: ESYS_TR

    /// Takes ownership of `handle`, made by `context`.
    init(_ handle: ESYS_TR, context: OpaquePointer) {
        self.handle = handle
        self.context = context
    }

    deinit {
        var closing = handle
        _ = Esys_TR_Close(context, &closing)
    }
}

/// The private and public parts of an object `Esys_Create` made, each freed with its owner.
struct CreatedObject: ~Copyable {
    /// The private part (encrypted by the parent).
    let privatePart: TPMOutput<TPM2B_PRIVATE>
    /// The public area.
    let publicPart: TPMOutput<TPM2B_PUBLIC>
}

/// Memory libtss2 allocated for a command's output; freed with `Esys_Free` when the value ends,
/// and wiped first when it holds a secret.
struct TPMOutput<Value>: ~Copyable {
    /// The output.
    let pointer: UnsafeMutablePointer<Value>
    /// Whether the memory is wiped before it is freed.
    private let secret: Bool

    /// Takes ownership of the output `pointer` of `call`; a successful command without it is a TPM stack fault.
    init(_ pointer: UnsafeMutablePointer<Value>?, _ call: String, secret: Bool = false) throws {
        guard let pointer else { throw SystemError.tpmUnexpected(call: call, "no output") }
        self.pointer = pointer
        self.secret = secret
    }

    /// The output's value.
    var pointee: Value { pointer.pointee }

    deinit {
        if secret { keyd_wipe(pointer, MemoryLayout<Value>.size) }
        Esys_Free(pointer)
    }
}

/// One ESAPI context on one TCTI: the only way keyd talks to the TPM.
///
/// Every transient object and session a method creates is a ``TPMTransient`` and every output
/// libtss2 allocates a ``TPMOutput``, so each is released on every path, failures included.
/// Not thread-safe: keyd calls it from its one event-loop thread.
public final class TPMDevice {
    /// The TCTI configuration string (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`).
    public let tctiConfiguration: String
    private let tcti: OpaquePointer
    private let context: OpaquePointer

    /// Opens the TCTI named by `configuration` and starts the TPM if it is not started yet.
    /// `configuration` must name its TCTI (`name:conf`): the loader's auto-probe is never used.
    public init(tcti configuration: String) throws {
        guard let colon = configuration.firstIndex(of: ":"), colon != configuration.startIndex,
            configuration.utf8.count <= 512, !configuration.utf8.contains(0)
        else {
            throw SystemError.invalidEnvironment(
                variable: "tcti",
                "expected 'name:configuration' such as device:/dev/tpmrm0, got '\(configuration)'"
            )
        }
        // libtss2's own logging goes to stderr; keyd reports TPM failures through its errors instead.
        setenv("TSS2_LOG", "all+none", 1)
        var tctiContext: OpaquePointer?
        try Self.check(Tss2_TctiLdr_Initialize(configuration, &tctiContext), "Tss2_TctiLdr_Initialize", configuration)
        guard let loadedTCTI = tctiContext else {
            throw SystemError.tpmUnexpected(call: "Tss2_TctiLdr_Initialize", "no context")
        }
        var esys: OpaquePointer?
        let initialized = Esys_Initialize(&esys, loadedTCTI, nil)
        guard initialized == asterism_tss2_rc_success(), let started = esys else {
            Tss2_TctiLdr_Finalize(&tctiContext)
            throw SystemError.tpm(initialized, call: "Esys_Initialize", context: configuration)
        }
        let startup = Esys_Startup(started, asterism_tpm2_su_clear())
        if startup != asterism_tss2_rc_success() && asterism_tpm2_rc_error(startup) != asterism_tpm2_rc_initialize() {
            Esys_Finalize(&esys)
            Tss2_TctiLdr_Finalize(&tctiContext)
            throw SystemError.tpm(startup, call: "Esys_Startup", context: configuration)
        }
        tcti = loadedTCTI
        context = started
        tctiConfiguration = configuration
    }

    deinit {
        var esys: OpaquePointer? = context
        Esys_Finalize(&esys)
        var tctiContext: OpaquePointer? = tcti
        Tss2_TctiLdr_Finalize(&tctiContext)
    }

    // MARK: Attestation key

    /// Loads the attestation key at `persistentHandle`, or creates it under the storage primary and
    /// makes it persistent there. A key of another kind at that handle is refused, never replaced.
    public func attestationKey(persistentHandle: UInt32, algorithm: TPMKeyAlgorithm) throws -> TPMAttestationKey {
        guard persistentHandle >= 0x8100_0000, persistentHandle <= 0x817F_FFFF else {
            throw SystemError.invalidEnvironment(
                variable: "tpm-ak-handle",
                "0x\(String(persistentHandle, radix: 16)) is not an owner persistent handle (0x81000000…0x817fffff)"
            )
        }
        var object = asterism_esys_tr_none()
        var created = false
        let found = Esys_TR_FromTPMPublic(context, persistentHandle, none, none, none, &object)
        if found != asterism_tss2_rc_success() {
            object = try createPersistentAttestationKey(at: persistentHandle, algorithm: algorithm)
            created = true
        }
        let (publicArea, name) = try readPublic(object)
        let template = Self.attestationKeyTemplate(algorithm).publicArea
        guard publicArea.type == template.type, publicArea.objectAttributes == template.objectAttributes,
            publicArea.nameAlg == template.nameAlg
        else {
            var closing = object
            _ = Esys_TR_Close(context, &closing)
            throw SystemError.tpmUnexpected(
                call: "attestationKey",
                "persistent handle 0x\(String(persistentHandle, radix: 16)) holds a key that is not a \(algorithm.rawValue) restricted signing key; not replaced"
            )
        }
        var copy = publicArea
        let key: [UInt8]
        var exponent: UInt32 = 0
        switch algorithm {
        case .eccP256:
            let x = Self.bytes(of: &copy.unique.ecc.x.buffer, count: Int(copy.unique.ecc.x.size))
            let y = Self.bytes(of: &copy.unique.ecc.y.buffer, count: Int(copy.unique.ecc.y.size))
            guard x.count == 32, y.count == 32 else {
                throw SystemError.tpmUnexpected(call: "attestationKey", "ECC point of \(x.count)+\(y.count) bytes")
            }
            key = [0x04] + x + y
        case .rsa2048:
            key = Self.bytes(of: &copy.unique.rsa.buffer, count: Int(copy.unique.rsa.size))
            exponent = copy.parameters.rsaDetail.exponent == 0 ? 65537 : copy.parameters.rsaDetail.exponent
        }
        return TPMAttestationKey(
            persistentHandle: persistentHandle,
            algorithm: algorithm,
            publicArea: try Self.marshal(publicArea),
            name: name,
            publicKey: key,
            rsaExponent: exponent,
            created: created,
            object: object
        )
    }

    /// `Esys_Create` of `template` with `sensitive` under `parent`, authorized by `session`; `what` names
    /// the object in errors.
    private func create(
        under parent: ESYS_TR,
        session: ESYS_TR,
        _ sensitive: inout TPM2B_SENSITIVE_CREATE,
        _ template: inout TPM2B_PUBLIC,
        what: String
    ) throws -> CreatedObject {
        var outside = TPM2B_DATA()
        var creationPCR = TPML_PCR_SELECTION()
        var privateOut: UnsafeMutablePointer<TPM2B_PRIVATE>?
        var publicOut: UnsafeMutablePointer<TPM2B_PUBLIC>?
        try Self.check(
            Esys_Create(
                context,
                parent,
                session,
                none,
                none,
                &sensitive,
                &template,
                &outside,
                &creationPCR,
                &privateOut,
                &publicOut,
                nil,
                nil,
                nil
            ),
            "Esys_Create",
            what
        )
        return CreatedObject(
            privatePart: try TPMOutput(privateOut, "Esys_Create"),
            publicPart: try TPMOutput(publicOut, "Esys_Create")
        )
    }

    /// Creates the key under a transient storage primary, loads it and evicts it to `handle`.
    private func createPersistentAttestationKey(at handle: UInt32, algorithm: TPMKeyAlgorithm) throws -> ESYS_TR {
        let primary = try createStoragePrimary()
        var sensitive = TPM2B_SENSITIVE_CREATE()
        var template = Self.attestationKeyTemplate(algorithm)
        let created = try create(
            under: primary.handle,
            session: password,
            &sensitive,
            &template,
            what: "attestation key"
        )
        let privatePart = created.privatePart
        let publicPart = created.publicPart
        let transient = try load(privatePart.pointer, publicPart.pointer, under: primary, what: "attestation key")
        var persistent = asterism_esys_tr_none()
        try Self.check(
            Esys_EvictControl(
                context,
                asterism_esys_tr_rh_owner(),
                transient.handle,
                password,
                none,
                none,
                handle,
                &persistent
            ),
            "Esys_EvictControl",
            "0x" + String(handle, radix: 16)
        )
        return persistent
    }

    // MARK: Quotes and PCRs

    /// A quote by `key` over `selection` with `qualifyingData` (at most 64 bytes): the TPMS_ATTEST
    /// bytes as signed and the marshaled TPMT_SIGNATURE.
    public func quote(
        key: TPMAttestationKey,
        qualifyingData: [UInt8],
        selection: PCRSelection
    ) throws -> (attest: [UInt8], signature: [UInt8]) {
        var data = TPM2B_DATA()
        try Self.fill(&data.size, &data.buffer, with: qualifyingData, call: "Esys_Quote")
        var scheme = TPMT_SIG_SCHEME()
        scheme.scheme = asterism_tpm2_alg_null()
        var pcrs = selection.tpml
        var quotedOut: UnsafeMutablePointer<TPM2B_ATTEST>?
        var signatureOut: UnsafeMutablePointer<TPMT_SIGNATURE>?
        try Self.check(
            Esys_Quote(context, key.object, password, none, none, &data, &scheme, &pcrs, &quotedOut, &signatureOut),
            "Esys_Quote"
        )
        let quoted = try TPMOutput(quotedOut, "Esys_Quote")
        let signature = try TPMOutput(signatureOut, "Esys_Quote")
        var attestation = quoted.pointee
        let attest = Self.bytes(of: &attestation.attestationData, count: Int(attestation.size))
        var buffer = [UInt8](repeating: 0, count: MemoryLayout<TPMT_SIGNATURE>.size)
        var offset = 0
        try Self.check(
            Tss2_MU_TPMT_SIGNATURE_Marshal(signature.pointer, &buffer, buffer.count, &offset),
            "Tss2_MU_TPMT_SIGNATURE_Marshal"
        )
        return (attest, Array(buffer[..<offset]))
    }

    /// The SHA-256 values of the PCRs in `selection`, by index (several PCR_Read calls: at most 8 per call).
    public func readPCRs(_ selection: PCRSelection) throws -> [Int: [UInt8]] {
        var values: [Int: [UInt8]] = [:]
        var remaining = selection.indices
        while !remaining.isEmpty {
            guard let request = PCRSelection(remaining) else { preconditionFailure("subset of a valid selection") }
            var wanted = request.tpml
            var selectionOut: UnsafeMutablePointer<TPML_PCR_SELECTION>?
            var digestsOut: UnsafeMutablePointer<TPML_DIGEST>?
            try Self.check(
                Esys_PCR_Read(context, none, none, none, &wanted, nil, &selectionOut, &digestsOut),
                "Esys_PCR_Read"
            )
            let readSelection = try TPMOutput(selectionOut, "Esys_PCR_Read")
            let digests = try TPMOutput(digestsOut, "Esys_PCR_Read")
            guard readSelection.pointee.count >= 1 else {
                throw SystemError.tpmUnexpected(call: "Esys_PCR_Read", "no selection")
            }
            var bitmap = readSelection.pointee.pcrSelections.0.pcrSelect
            let read = withUnsafeBytes(of: &bitmap) { bits in
                (0..<PCRSelection.count).filter { bits[$0 / 8] & UInt8(1 << ($0 % 8)) != 0 }
            }
            guard !read.isEmpty, read.count == Int(digests.pointee.count) else {
                throw SystemError.tpmUnexpected(
                    call: "Esys_PCR_Read",
                    "\(read.count) PCRs selected but \(digests.pointee.count) digests"
                )
            }
            try withUnsafeMutableBytes(of: &digests.pointer.pointee.digests) { raw in
                let list = raw.bindMemory(to: TPM2B_DIGEST.self)
                for (position, index) in read.enumerated() {
                    var digest = list[position]
                    let value = Self.bytes(of: &digest.buffer, count: Int(digest.size))
                    guard value.count == 32 else {
                        throw SystemError.tpmUnexpected(call: "Esys_PCR_Read", "PCR \(index) has \(value.count) bytes")
                    }
                    values[index] = value
                }
            }
            remaining.removeAll { read.contains($0) }
        }
        return values
    }

    /// One TPM2_PCR_Event of `data` (1…1024 bytes) into PCR `index`: every bank is extended with
    /// the digest of `data`.
    public func pcrEvent(index: Int, data: [UInt8]) throws {
        precondition((0..<PCRSelection.count).contains(index), "PCR index \(index)")
        var event = TPM2B_EVENT()
        try Self.fill(&event.size, &event.buffer, with: data, call: "Esys_PCR_Event")
        var digestsOut: UnsafeMutablePointer<TPML_DIGEST_VALUES>?
        try Self.check(
            Esys_PCR_Event(context, asterism_esys_tr_pcr(UInt32(index)), password, none, none, &event, &digestsOut),
            "Esys_PCR_Event",
            "PCR \(index)"
        )
        _ = try TPMOutput(digestsOut, "Esys_PCR_Event")
    }

    /// The number of transient objects and of loaded sessions the TPM holds now.
    public func loadedHandleCounts() throws -> (transientObjects: Int, sessions: Int) {
        (
            try handleCount(from: asterism_tpm2_transient_first()),
            try handleCount(from: asterism_tpm2_loaded_session_first())
        )
    }

    private func handleCount(from first: UInt32) throws -> Int {
        try handles(from: first, count: 64).filter { $0 >> 24 == first >> 24 }.count
    }

    /// Up to `count` handles the TPM lists from `first` on (TPM2_GetCapability of TPM_CAP_HANDLES).
    private func handles(from first: UInt32, count: UInt32) throws -> [UInt32] {
        var more: TPMI_YES_NO = 0
        var dataOut: UnsafeMutablePointer<TPMS_CAPABILITY_DATA>?
        try Self.check(
            Esys_GetCapability(context, none, none, none, asterism_tpm2_cap_handles(), first, count, &more, &dataOut),
            "Esys_GetCapability"
        )
        let data = try TPMOutput(dataOut, "Esys_GetCapability")
        var handles = data.pointee.data.handles
        return withUnsafeBytes(of: &handles.handle) { raw in
            Array(raw.bindMemory(to: TPM2_HANDLE.self).prefix(Int(handles.count)))
        }
    }

    // MARK: Sealing

    /// Seals `secret` (1…128 bytes) under the storage primary with a policy over `selection`'s
    /// current PCR values. The secret travels in a salted session with parameter encryption.
    public func seal(_ secret: UnsafeRawBufferPointer, selection: PCRSelection) throws -> TPMSealedObject {
        let primary = try createStoragePrimary()
        let policy = try policyDigest(selection)
        var template = TPM2B_PUBLIC()
        template.publicArea.type = asterism_tpm2_alg_keyedhash()
        template.publicArea.nameAlg = asterism_tpm2_alg_sha256()
        template.publicArea.objectAttributes = asterism_tpma_sealed_data()
        template.publicArea.parameters.keyedHashDetail.scheme.scheme = asterism_tpm2_alg_null()
        try Self.fill(
            &template.publicArea.authPolicy.size,
            &template.publicArea.authPolicy.buffer,
            with: policy,
            call: "seal"
        )
        var sensitive = TPM2B_SENSITIVE_CREATE()
        defer { withUnsafeMutableBytes(of: &sensitive) { keyd_wipe($0.baseAddress, $0.count) } }
        guard secret.count >= 1, secret.count <= MemoryLayout.size(ofValue: sensitive.sensitive.data.buffer) else {
            throw SystemError.tpmUnexpected(call: "seal", "secret of \(secret.count) bytes (1…128)")
        }
        sensitive.sensitive.data.size = UInt16(secret.count)
        withUnsafeMutableBytes(of: &sensitive.sensitive.data.buffer) { $0.copyMemory(from: secret) }
        let session = try startSession(saltedBy: primary, type: asterism_tpm2_se_hmac())
        try Self.check(
            Esys_TRSess_SetAttributes(
                context,
                session.handle,
                asterism_tpma_session_continue() | asterism_tpma_session_decrypt(),
                asterism_tpma_session_all()
            ),
            "Esys_TRSess_SetAttributes"
        )
        let created = try create(
            under: primary.handle,
            session: session.handle,
            &sensitive,
            &template,
            what: "sealed object"
        )
        let privatePart = created.privatePart
        let publicPart = created.publicPart
        var publicBuffer = [UInt8](repeating: 0, count: MemoryLayout<TPM2B_PUBLIC>.size)
        var privateBuffer = [UInt8](repeating: 0, count: MemoryLayout<TPM2B_PRIVATE>.size)
        var publicLength = 0
        var privateLength = 0
        try Self.check(
            Tss2_MU_TPM2B_PUBLIC_Marshal(publicPart.pointer, &publicBuffer, publicBuffer.count, &publicLength),
            "Tss2_MU_TPM2B_PUBLIC_Marshal"
        )
        try Self.check(
            Tss2_MU_TPM2B_PRIVATE_Marshal(privatePart.pointer, &privateBuffer, privateBuffer.count, &privateLength),
            "Tss2_MU_TPM2B_PRIVATE_Marshal"
        )
        return TPMSealedObject(
            publicBlob: Array(publicBuffer[..<publicLength]),
            privateBlob: Array(privateBuffer[..<privateLength])
        )
    }

    /// Unseals `object` through a salted policy session with response encryption and lends the
    /// secret to `body`; the TPM's copy of it is wiped before this returns. A PCR change or a
    /// damaged blob throws (``TPMResponse/isPolicyFailure(_:)`` tells the first).
    public func unseal<R>(
        _ object: TPMSealedObject,
        selection: PCRSelection,
        _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R {
        var publicPart = TPM2B_PUBLIC()
        var privatePart = TPM2B_PRIVATE()
        try Self.unmarshal(object, public: &publicPart, private: &privatePart)
        let primary = try createStoragePrimary()
        let loaded = try load(&privatePart, &publicPart, under: primary, what: "sealed object")
        return try unseal(loaded.handle, saltedBy: primary, selection: selection, body)
    }

    /// Unseals the loaded (or persistent) sealed object `object` through a policy session over
    /// `selection`, salted with `primary`, with response encryption; the TPM's copy is wiped after `body`.
    private func unseal<R>(
        _ object: ESYS_TR,
        saltedBy primary: borrowing TPMTransient,
        selection: PCRSelection,
        _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R {
        let session = try startSession(saltedBy: primary, type: asterism_tpm2_se_policy())
        var empty = TPM2B_DIGEST()
        var pcrs = selection.tpml
        try Self.check(Esys_PolicyPCR(context, session.handle, none, none, none, &empty, &pcrs), "Esys_PolicyPCR")
        try Self.check(
            Esys_TRSess_SetAttributes(
                context,
                session.handle,
                asterism_tpma_session_continue() | asterism_tpma_session_encrypt(),
                asterism_tpma_session_all()
            ),
            "Esys_TRSess_SetAttributes"
        )
        var dataOut: UnsafeMutablePointer<TPM2B_SENSITIVE_DATA>?
        try Self.check(Esys_Unseal(context, object, session.handle, none, none, &dataOut), "Esys_Unseal")
        let data = try TPMOutput(dataOut, "Esys_Unseal", secret: true)
        let size = Int(data.pointee.size)
        return try withUnsafeBytes(of: &data.pointer.pointee.buffer) { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw.prefix(min(size, raw.count))))
        }
    }

    /// The TPM2B_PUBLIC and TPM2B_PRIVATE of a sealed object's blobs, each read to its exact end.
    private static func unmarshal(
        _ object: TPMSealedObject,
        public publicPart: inout TPM2B_PUBLIC,
        private privatePart: inout TPM2B_PRIVATE
    ) throws {
        try unmarshalWhole(object.publicBlob, "TPM2B_PUBLIC") { bytes, count, offset in
            Tss2_MU_TPM2B_PUBLIC_Unmarshal(bytes, count, offset, &publicPart)
        }
        try unmarshalWhole(object.privateBlob, "TPM2B_PRIVATE") { bytes, count, offset in
            Tss2_MU_TPM2B_PRIVATE_Unmarshal(bytes, count, offset, &privatePart)
        }
    }

    /// The policy digest of PolicyPCR over `selection`'s current values (a trial session).
    private func policyDigest(_ selection: PCRSelection) throws -> [UInt8] {
        var symmetric = TPMT_SYM_DEF()
        symmetric.algorithm = asterism_tpm2_alg_null()
        var started = asterism_esys_tr_none()
        try Self.check(
            Esys_StartAuthSession(
                context,
                none,
                none,
                none,
                none,
                none,
                nil,
                asterism_tpm2_se_trial(),
                &symmetric,
                asterism_tpm2_alg_sha256(),
                &started
            ),
            "Esys_StartAuthSession",
            "trial"
        )
        let session = TPMTransient(started, context: context)
        var empty = TPM2B_DIGEST()
        var pcrs = selection.tpml
        try Self.check(
            Esys_PolicyPCR(context, session.handle, none, none, none, &empty, &pcrs),
            "Esys_PolicyPCR",
            "trial"
        )
        var digestOut: UnsafeMutablePointer<TPM2B_DIGEST>?
        try Self.check(
            Esys_PolicyGetDigest(context, session.handle, none, none, none, &digestOut),
            "Esys_PolicyGetDigest"
        )
        let digest = try TPMOutput(digestOut, "Esys_PolicyGetDigest")
        var value = digest.pointee
        return Self.bytes(of: &value.buffer, count: Int(value.size))
    }

    /// A session salted with `primary` (its secret is encrypted to that key) using AES-128-CFB for
    /// parameter encryption.
    private func startSession(saltedBy primary: borrowing TPMTransient, type: TPM2_SE) throws -> TPMTransient {
        var symmetric = TPMT_SYM_DEF()
        symmetric.algorithm = asterism_tpm2_alg_aes()
        symmetric.keyBits.aes = 128
        symmetric.mode.aes = asterism_tpm2_alg_cfb()
        var session = asterism_esys_tr_none()
        try Self.check(
            Esys_StartAuthSession(
                context,
                primary.handle,
                none,
                none,
                none,
                none,
                nil,
                type,
                &symmetric,
                asterism_tpm2_alg_sha256(),
                &session
            ),
            "Esys_StartAuthSession",
            "salted"
        )
        return TPMTransient(session, context: context)
    }

    /// Loads a key or sealed object under `parent`.
    private func load(
        _ privatePart: UnsafePointer<TPM2B_PRIVATE>,
        _ publicPart: UnsafePointer<TPM2B_PUBLIC>,
        under parent: borrowing TPMTransient,
        what: String
    ) throws -> TPMTransient {
        var loaded = asterism_esys_tr_none()
        try Self.check(
            Esys_Load(context, parent.handle, password, none, none, privatePart, publicPart, &loaded),
            "Esys_Load",
            what
        )
        return TPMTransient(loaded, context: context)
    }

    // MARK: Persistent sealed objects

    /// Seals `secret` (1…128 bytes) like ``seal(_:selection:)`` and makes the sealed object persistent
    /// at the owner handle `handle`, replacing a sealed data object already there (anything else at the
    /// handle is refused, never replaced). Returns the object's TPM name, which identifies it.
    public func sealPersistent(
        _ secret: UnsafeRawBufferPointer,
        selection: PCRSelection,
        handle: UInt32
    ) throws -> [UInt8] {
        try Self.checkPersistentHandle(handle)
        if let existing = try persistentReference(handle) {
            let (area, _) = try readPublic(existing.handle)
            guard area.type == asterism_tpm2_alg_keyedhash(), area.objectAttributes == asterism_tpma_sealed_data()
            else {
                throw SystemError.tpmUnexpected(
                    call: "sealPersistent",
                    "persistent handle 0x\(String(handle, radix: 16)) holds an object that is not a sealed data object; not replaced"
                )
            }
            try evict(existing, handle: handle)
        }
        let sealed = try seal(secret, selection: selection)
        var publicPart = TPM2B_PUBLIC()
        var privatePart = TPM2B_PRIVATE()
        try Self.unmarshal(sealed, public: &publicPart, private: &privatePart)
        let primary = try createStoragePrimary()
        let loaded = try load(&privatePart, &publicPart, under: primary, what: "sealed object")
        var persistent = asterism_esys_tr_none()
        try Self.check(
            Esys_EvictControl(
                context,
                asterism_esys_tr_rh_owner(),
                loaded.handle,
                password,
                none,
                none,
                handle,
                &persistent
            ),
            "Esys_EvictControl",
            "0x" + String(handle, radix: 16)
        )
        let reference = TPMReference(persistent, context: context)
        return try readPublic(reference.handle).1
    }

    /// Unseals the persistent sealed object at `handle` through a salted policy session over
    /// `selection` and lends the secret to `body`. Refuses an object whose name is not `expectedName`
    /// (another object put at the handle), and a handle that holds nothing.
    public func unsealPersistent<R>(
        handle: UInt32,
        expectedName: [UInt8],
        selection: PCRSelection,
        _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R {
        try Self.checkPersistentHandle(handle)
        guard let object = try persistentReference(handle) else {
            throw SystemError.tpmUnexpected(
                call: "unsealPersistent",
                "no object at persistent handle 0x\(String(handle, radix: 16))"
            )
        }
        guard try readPublic(object.handle).1 == expectedName else {
            throw SystemError.tpmUnexpected(
                call: "unsealPersistent",
                "the object at persistent handle 0x\(String(handle, radix: 16)) is not the one sealed"
            )
        }
        let primary = try createStoragePrimary()
        return try unseal(object.handle, saltedBy: primary, selection: selection, body)
    }

    /// Removes the persistent object at `handle`; false when the handle held nothing.
    @discardableResult
    public func evictPersistent(handle: UInt32) throws -> Bool {
        try Self.checkPersistentHandle(handle)
        guard let object = try persistentReference(handle) else { return false }
        try evict(object, handle: handle)
        return true
    }

    /// The name of the persistent object at `handle`, or nil when it holds nothing.
    public func persistentName(handle: UInt32) throws -> [UInt8]? {
        guard let object = try persistentReference(handle) else { return nil }
        return try readPublic(object.handle).1
    }

    /// An ESAPI reference to the persistent object (or NV index) `handle`, or nil when it does not exist.
    private func persistentReference(_ handle: UInt32) throws -> TPMReference? {
        // ESAPI reports a missing handle only as a catch-all error: ask the TPM's handle list first.
        guard try handles(from: handle, count: 1).first == handle else { return nil }
        var object = asterism_esys_tr_none()
        try Self.check(
            Esys_TR_FromTPMPublic(context, handle, none, none, none, &object),
            "Esys_TR_FromTPMPublic",
            "0x" + String(handle, radix: 16)
        )
        return TPMReference(object, context: context)
    }

    /// Evicts the persistent object `object` from `handle`.
    private func evict(_ object: borrowing TPMReference, handle: UInt32) throws {
        var none = asterism_esys_tr_none()
        // The reference is closed afterwards as any other: ESAPI keeps it after the eviction, and a
        // reference left open would make every later Esys_TR_FromTPMPublic of this handle fail.
        try Self.check(
            Esys_EvictControl(
                context,
                asterism_esys_tr_rh_owner(),
                object.handle,
                password,
                self.none,
                self.none,
                handle,
                &none
            ),
            "Esys_EvictControl",
            "evict 0x" + String(handle, radix: 16)
        )
    }

    private static func checkPersistentHandle(_ handle: UInt32) throws {
        guard handle >= 0x8100_0000, handle <= 0x817F_FFFF else {
            throw SystemError.invalidEnvironment(
                variable: "persistent handle",
                "0x\(String(handle, radix: 16)) is not an owner persistent handle (0x81000000…0x817fffff)"
            )
        }
    }

    // MARK: NV counter

    /// The value of the NV counter at `index`, or nil when no such index is defined.
    public func readCounter(index: UInt32) throws -> UInt64? {
        try Self.checkCounterIndex(index)
        guard let counter = try persistentReference(index) else { return nil }
        var dataOut: UnsafeMutablePointer<TPM2B_MAX_NV_BUFFER>?
        let rc = Esys_NV_Read(context, counter.handle, counter.handle, password, none, none, 8, 0, &dataOut)
        if asterism_tpm2_rc_error(rc) == asterism_tpm2_rc_nv_uninitialized() { return 0 }
        try Self.check(rc, "Esys_NV_Read", "0x" + String(index, radix: 16))
        let data = try TPMOutput(dataOut, "Esys_NV_Read")
        var value = data.pointee
        let bytes = Self.bytes(of: &value.buffer, count: Int(value.size))
        guard bytes.count == 8 else {
            throw SystemError.tpmUnexpected(call: "Esys_NV_Read", "counter of \(bytes.count) bytes")
        }
        return bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Defines the NV counter `index` (an 8-byte TPM_NT_COUNTER, empty auth value) and increments it
    /// once so that it holds a value; returns that value.
    public func defineCounter(index: UInt32) throws -> UInt64 {
        try Self.checkCounterIndex(index)
        var auth = TPM2B_AUTH()
        var publicInfo = TPM2B_NV_PUBLIC()
        publicInfo.nvPublic.nvIndex = index
        publicInfo.nvPublic.nameAlg = asterism_tpm2_alg_sha256()
        publicInfo.nvPublic.attributes = asterism_tpma_nv_counter()
        publicInfo.nvPublic.dataSize = 8
        var defined = asterism_esys_tr_none()
        try Self.check(
            Esys_NV_DefineSpace(
                context,
                asterism_esys_tr_rh_owner(),
                password,
                none,
                none,
                &auth,
                &publicInfo,
                &defined
            ),
            "Esys_NV_DefineSpace",
            "0x" + String(index, radix: 16)
        )
        let counter = TPMReference(defined, context: context)
        try Self.check(
            Esys_NV_Increment(context, counter.handle, counter.handle, password, none, none),
            "Esys_NV_Increment"
        )
        guard let value = try readCounter(index: index) else {
            throw SystemError.tpmUnexpected(call: "defineCounter", "counter 0x\(String(index, radix: 16)) vanished")
        }
        return value
    }

    /// Increments the NV counter `index` by one.
    public func incrementCounter(index: UInt32) throws {
        try Self.checkCounterIndex(index)
        guard let counter = try persistentReference(index) else {
            throw SystemError.tpmUnexpected(
                call: "incrementCounter",
                "NV index 0x\(String(index, radix: 16)) is not defined"
            )
        }
        try Self.check(
            Esys_NV_Increment(context, counter.handle, counter.handle, password, none, none),
            "Esys_NV_Increment",
            "0x" + String(index, radix: 16)
        )
    }

    private static func checkCounterIndex(_ index: UInt32) throws {
        guard index >= 0x0100_0000, index <= 0x01BF_FFFF else {
            throw SystemError.invalidEnvironment(
                variable: "NV index",
                "0x\(String(index, radix: 16)) is not an owner NV index (0x01000000…0x01bfffff)"
            )
        }
    }

    // MARK: Primary key and helpers

    /// The owner-hierarchy ECC P-256 storage primary (the standard SRK template: the same key every
    /// time for the same TPM seed).
    private func createStoragePrimary() throws -> TPMTransient {
        var template = TPM2B_PUBLIC()
        template.publicArea.type = asterism_tpm2_alg_ecc()
        template.publicArea.nameAlg = asterism_tpm2_alg_sha256()
        template.publicArea.objectAttributes = asterism_tpma_storage_key()
        template.publicArea.parameters.eccDetail.symmetric.algorithm = asterism_tpm2_alg_aes()
        template.publicArea.parameters.eccDetail.symmetric.keyBits.aes = 128
        template.publicArea.parameters.eccDetail.symmetric.mode.aes = asterism_tpm2_alg_cfb()
        template.publicArea.parameters.eccDetail.scheme.scheme = asterism_tpm2_alg_null()
        template.publicArea.parameters.eccDetail.curveID = asterism_tpm2_ecc_nist_p256()
        template.publicArea.parameters.eccDetail.kdf.scheme = asterism_tpm2_alg_null()
        var sensitive = TPM2B_SENSITIVE_CREATE()
        var outside = TPM2B_DATA()
        var creationPCR = TPML_PCR_SELECTION()
        var handle = asterism_esys_tr_none()
        try Self.check(
            Esys_CreatePrimary(
                context,
                asterism_esys_tr_rh_owner(),
                password,
                none,
                none,
                &sensitive,
                &template,
                &outside,
                &creationPCR,
                &handle,
                nil,
                nil,
                nil,
                nil
            ),
            "Esys_CreatePrimary",
            "storage primary"
        )
        return TPMTransient(handle, context: context)
    }

    /// The restricted signing template of the attestation key.
    private static func attestationKeyTemplate(_ algorithm: TPMKeyAlgorithm) -> TPM2B_PUBLIC {
        var template = TPM2B_PUBLIC()
        template.publicArea.nameAlg = asterism_tpm2_alg_sha256()
        template.publicArea.objectAttributes = asterism_tpma_attestation_key()
        switch algorithm {
        case .eccP256:
            template.publicArea.type = asterism_tpm2_alg_ecc()
            template.publicArea.parameters.eccDetail.symmetric.algorithm = asterism_tpm2_alg_null()
            template.publicArea.parameters.eccDetail.scheme.scheme = asterism_tpm2_alg_ecdsa()
            template.publicArea.parameters.eccDetail.scheme.details.ecdsa.hashAlg = asterism_tpm2_alg_sha256()
            template.publicArea.parameters.eccDetail.curveID = asterism_tpm2_ecc_nist_p256()
            template.publicArea.parameters.eccDetail.kdf.scheme = asterism_tpm2_alg_null()
        case .rsa2048:
            template.publicArea.type = asterism_tpm2_alg_rsa()
            template.publicArea.parameters.rsaDetail.symmetric.algorithm = asterism_tpm2_alg_null()
            template.publicArea.parameters.rsaDetail.scheme.scheme = asterism_tpm2_alg_rsassa()
            template.publicArea.parameters.rsaDetail.scheme.details.rsassa.hashAlg = asterism_tpm2_alg_sha256()
            template.publicArea.parameters.rsaDetail.keyBits = 2048
            template.publicArea.parameters.rsaDetail.exponent = 0
        }
        return template
    }

    /// The public area and name of a loaded object.
    private func readPublic(_ object: ESYS_TR) throws -> (TPMT_PUBLIC, [UInt8]) {
        var publicOut: UnsafeMutablePointer<TPM2B_PUBLIC>?
        var nameOut: UnsafeMutablePointer<TPM2B_NAME>?
        try Self.check(Esys_ReadPublic(context, object, none, none, none, &publicOut, &nameOut, nil), "Esys_ReadPublic")
        let publicPart = try TPMOutput(publicOut, "Esys_ReadPublic")
        let name = try TPMOutput(nameOut, "Esys_ReadPublic")
        var value = name.pointee
        return (publicPart.pointee.publicArea, Self.bytes(of: &value.name, count: Int(value.size)))
    }

    private var none: ESYS_TR { asterism_esys_tr_none() }
    private var password: ESYS_TR { asterism_esys_tr_password() }

    /// Throws the TPM error for a failed `rc`.
    private static func check(_ rc: TSS2_RC, _ call: String, _ context: String = "") throws {
        guard rc != asterism_tss2_rc_success() else { return }
        throw SystemError.tpm(rc, call: call, context: context)
    }

    /// The first `count` bytes of a C byte array (bounded by its size).
    private static func bytes<T>(of buffer: inout T, count: Int) -> [UInt8] {
        withUnsafeBytes(of: &buffer) { Array($0.prefix(max(0, min(count, $0.count)))) }
    }

    /// Copies `bytes` into a TPM2B's size and buffer, refusing more than the buffer holds.
    private static func fill<T>(_ size: inout UInt16, _ buffer: inout T, with bytes: [UInt8], call: String) throws {
        guard bytes.count <= MemoryLayout<T>.size else {
            throw SystemError.tpmUnexpected(
                call: call,
                "\(bytes.count) bytes exceed the TPM buffer of \(MemoryLayout<T>.size)"
            )
        }
        size = UInt16(bytes.count)
        withUnsafeMutableBytes(of: &buffer) { raw in raw.copyBytes(from: bytes) }
    }

    /// Marshals a TPMT_PUBLIC.
    private static func marshal(_ area: TPMT_PUBLIC) throws -> [UInt8] {
        var copy = area
        var buffer = [UInt8](repeating: 0, count: MemoryLayout<TPMT_PUBLIC>.size)
        var offset = 0
        try check(Tss2_MU_TPMT_PUBLIC_Marshal(&copy, &buffer, buffer.count, &offset), "Tss2_MU_TPMT_PUBLIC_Marshal")
        return Array(buffer[..<offset])
    }

    /// Unmarshals `bytes` with `body` and requires that it consumed every byte.
    private static func unmarshalWhole(
        _ bytes: [UInt8],
        _ what: String,
        _ body: (UnsafePointer<UInt8>, Int, UnsafeMutablePointer<Int>) -> TSS2_RC
    ) throws {
        var offset = 0
        let rc = bytes.withUnsafeBufferPointer { buffer -> TSS2_RC in
            guard let base = buffer.baseAddress else { return TSS2_RC(asterism_tss2_layer_mu()) << 16 | 1 }
            return body(base, buffer.count, &offset)
        }
        try check(rc, "Tss2_MU_\(what)_Unmarshal")
        guard offset == bytes.count else {
            throw SystemError.tpmUnexpected(call: "Tss2_MU_\(what)_Unmarshal", "\(bytes.count - offset) trailing bytes")
        }
    }
}
