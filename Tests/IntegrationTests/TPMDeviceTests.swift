import Crypto
import Foundation
import KeydPlatform
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// KeydPlatform's ESAPI wrapper against a real software TPM (swtpm), checked with tpm2-tools.
@Suite(.serialized, .needsSwtpm) struct TPMDeviceTests {
    static let akHandle: UInt32 = 0x8101_0A57

    @Test(
        "the AK is created once, persistent, and the same after the TPM restarts",
        arguments: TPMKeyAlgorithm.allCases
    )
    func attestationKeyIsStable(algorithm: TPMKeyAlgorithm) throws {
        let tpm = try SoftwareTPM()
        let first: TPMAttestationKey
        do {
            let device = try TPMDevice(tcti: tpm.tcti)
            first = try device.attestationKey(persistentHandle: Self.akHandle, algorithm: algorithm)
            #expect(first.created)
            #expect(first.name.count == 34 && first.name.prefix(2) == [0x00, 0x0B], "SHA-256 name")
            #expect(try device.loadedHandleCounts() == (0, 0))
        }
        tpm.stop()
        try tpm.start()
        let device = try TPMDevice(tcti: tpm.tcti)
        let again = try device.attestationKey(persistentHandle: Self.akHandle, algorithm: algorithm)
        #expect(!again.created)
        #expect(again.name == first.name && again.publicKey == first.publicKey)
        // A key of the other algorithm at the same handle is refused, never replaced.
        let other = TPMKeyAlgorithm.allCases.first { $0 != algorithm }!
        #expect(throws: SystemError.self) {
            try device.attestationKey(persistentHandle: Self.akHandle, algorithm: other)
        }
        #expect(throws: SystemError.self) {
            try device.attestationKey(persistentHandle: 0x8000_0001, algorithm: algorithm)
        }
    }

    @Test("a quote over all 24 PCRs verifies with tpm2_checkquote; another nonce does not")
    func quoteVerifiesWithTPM2Tools() throws {
        let tpm = try SoftwareTPM()
        let directory = tpm.stateDirectory
        let nonce = (0..<32).map { _ in UInt8.random(in: 0...255) }
        do {
            let device = try TPMDevice(tcti: tpm.tcti)
            let key = try device.attestationKey(persistentHandle: Self.akHandle, algorithm: .eccP256)
            try device.pcrEvent(index: 16, data: Array("marker".utf8))
            let pcrs = try device.readPCRs(.all)
            #expect(pcrs.count == 24 && pcrs.values.allSatisfy { $0.count == 32 })
            #expect(pcrs[16] != [UInt8](repeating: 0, count: 32))
            let (attest, signature) = try device.quote(key: key, qualifyingData: nonce, selection: .all)
            #expect(attest.prefix(4) == [0xFF, 0x54, 0x43, 0x47], "TPM_GENERATED_VALUE")
            #expect(attest.count > 100 && signature.count > 60)
            #expect(try device.loadedHandleCounts() == (0, 0))
            try Data(attest).write(to: URL(fileURLWithPath: directory + "/attest.bin"))
            try Data(signature).write(to: URL(fileURLWithPath: directory + "/signature.bin"))
            let pem = try P256.Signing.PublicKey(x963Representation: key.publicKey).pemRepresentation
            try pem.write(toFile: directory + "/ak.pem", atomically: true, encoding: .utf8)
        }
        tpm.stop()
        // Signature and qualifying data; the PCR digest is checked with keydctl's pcrs.bin in KeydTPMTests.
        let arguments = [
            "-u", directory + "/ak.pem", "-m", directory + "/attest.bin", "-s", directory + "/signature.bin", "-g",
            "sha256",
        ]
        let checked = try tpm.tool("tpm2_checkquote", arguments + ["-q", hex(nonce)])
        #expect(checked.status == 0, "tpm2_checkquote: \(checked.stderr)")
        let wrong = try tpm.tool("tpm2_checkquote", arguments + ["-q", hex(nonce.reversed())])
        #expect(wrong.status != 0, "a quote verified against another nonce")
    }

    @Test("seal and unseal round trip; unsealing fails after a selected PCR changes; no handle leaks")
    func sealUnseal() throws {
        let tpm = try SoftwareTPM()
        let device = try TPMDevice(tcti: tpm.tcti)
        let selection = PCRSelection([0, 7, 16])!
        let secret: [UInt8] = (0..<32).map { UInt8($0) ^ 0xA5 }
        let sealed = try secret.withUnsafeBytes { try device.seal($0, selection: selection) }
        #expect(!sealed.privateBlob.isEmpty && !sealed.publicBlob.isEmpty)
        #expect(sealed.privateBlob.firstRange(of: secret) == nil && sealed.publicBlob.firstRange(of: secret) == nil)
        let opened = try device.unseal(sealed, selection: selection) { Array($0) }
        #expect(opened == secret)

        // A damaged private blob is refused by the TPM (integrity), not unsealed.
        var damaged = sealed
        damaged.privateBlob[damaged.privateBlob.count - 3] ^= 0x01
        #expect(throws: SystemError.self) { try device.unseal(damaged, selection: selection) { Array($0) } }
        var truncated = sealed
        truncated.publicBlob.removeLast()
        #expect(throws: SystemError.self) { try device.unseal(truncated, selection: selection) { Array($0) } }

        try device.pcrEvent(index: 16, data: [1, 2, 3])
        do {
            _ = try device.unseal(sealed, selection: selection) { Array($0) }
            Issue.record("unsealed after PCR 16 changed")
        } catch let error as SystemError {
            let code = try #require(error.tpmResponseCode, "\(error)")
            #expect(TPMResponse.isPolicyFailure(code), "\(error)")
        }
        // A PCR outside the selection does not matter.
        let resealed = try secret.withUnsafeBytes { try device.seal($0, selection: selection) }
        try device.pcrEvent(index: 23, data: [9])
        #expect(try device.unseal(resealed, selection: selection) { Array($0) } == secret)
        #expect(try device.loadedHandleCounts() == (0, 0))
    }

    @Test("one PCR_Event of the cluster ID gives Constellation's PCR 15: SHA-256(0^32 || SHA-256(clusterID))")
    func clusterIDMarking() throws {
        let tpm = try SoftwareTPM()
        let device = try TPMDevice(tcti: tpm.tcti)
        let clusterID = (0..<32).map { UInt8($0 * 3) }
        #expect(try device.readPCRs(PCRSelection([15])!)[15] == [UInt8](repeating: 0, count: 32))
        try device.pcrEvent(index: 15, data: clusterID)
        let expected = Array(SHA256.hash(data: [UInt8](repeating: 0, count: 32) + Array(SHA256.hash(data: clusterID))))
        #expect(try device.readPCRs(PCRSelection([15])!)[15] == expected)
    }

    @Test("an unknown or unnamed TCTI is refused; a TCTI with nothing behind it fails clearly")
    func badTCTI() {
        #expect(throws: SystemError.self) { try TPMDevice(tcti: "") }
        #expect(throws: SystemError.self) { try TPMDevice(tcti: "/dev/tpmrm0") }
        #expect(throws: SystemError.self) { try TPMDevice(tcti: "swtpm:host=127.0.0.1,port=1") }
    }

    @Test("a persistent sealed object unseals by its name, survives a TPM restart, and is gone once evicted")
    func persistentSealedObject() throws {
        let tpm = try SoftwareTPM()
        let handle: UInt32 = 0x8101_0A58
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let selection = try #require(PCRSelection([0, 7, 16]))
        let name: [UInt8]
        do {
            let device = try TPMDevice(tcti: tpm.tcti)
            #expect(try device.persistentName(handle: handle) == nil)
            #expect(try !device.evictPersistent(handle: handle))
            name = try secret.withUnsafeBytes { try device.sealPersistent($0, selection: selection, handle: handle) }
            #expect(try device.persistentName(handle: handle) == name)
            #expect(
                try device.unsealPersistent(handle: handle, expectedName: name, selection: selection) { Array($0) }
                    == secret
            )
            #expect(try device.loadedHandleCounts() == (0, 0))
        }
        tpm.stop()
        try tpm.start()
        let device = try TPMDevice(tcti: tpm.tcti)
        #expect(
            try device.unsealPersistent(handle: handle, expectedName: name, selection: selection) { Array($0) }
                == secret
        )
        // Another name expected, or a changed PCR: refused.
        #expect(throws: SystemError.self) {
            try device.unsealPersistent(
                handle: handle,
                expectedName: [0, 11] + name.dropFirst(2).map { $0 ^ 1 },
                selection: selection
            ) { _ in }
        }
        try device.pcrEvent(index: 16, data: [1])
        let changed = #expect(throws: SystemError.self) {
            try device.unsealPersistent(handle: handle, expectedName: name, selection: selection) { _ in }
        }
        #expect(changed?.tpmResponseCode.map(TPMResponse.isPolicyFailure) == true, "\(String(describing: changed))")
        // Sealing again replaces the object (a new name); evicting removes it.
        let again = try secret.withUnsafeBytes { try device.sealPersistent($0, selection: selection, handle: handle) }
        #expect(again != name)
        #expect(try device.evictPersistent(handle: handle))
        #expect(try device.persistentName(handle: handle) == nil)
        #expect(throws: SystemError.self) {
            try device.unsealPersistent(handle: handle, expectedName: again, selection: selection) { _ in }
        }
        // An AK at a handle is never replaced by a sealed object.
        _ = try device.attestationKey(persistentHandle: Self.akHandle, algorithm: .eccP256)
        #expect(throws: SystemError.self) {
            _ = try secret.withUnsafeBytes {
                try device.sealPersistent($0, selection: selection, handle: Self.akHandle)
            }
        }
        #expect(try device.loadedHandleCounts() == (0, 0))
    }

    @Test("an NV counter is defined once, counts up, and keeps its value across a TPM restart")
    func nvCounter() throws {
        let tpm = try SoftwareTPM()
        let index: UInt32 = 0x01A5_7E00
        let first: UInt64
        do {
            let device = try TPMDevice(tcti: tpm.tcti)
            #expect(try device.readCounter(index: index) == nil)
            first = try device.defineCounter(index: index)
            #expect(try device.readCounter(index: index) == first)
            for _ in 0..<5 { try device.incrementCounter(index: index) }
            #expect(try device.readCounter(index: index) == first + 5)
            #expect(throws: SystemError.self) { _ = try device.defineCounter(index: index) }
        }
        tpm.stop()
        try tpm.start()
        let device = try TPMDevice(tcti: tpm.tcti)
        #expect(try device.readCounter(index: index) == first + 5)
        #expect(throws: SystemError.self) { try device.incrementCounter(index: 0x01A5_7E01) }
        #expect(throws: SystemError.self) { _ = try device.readCounter(index: 0x8100_0000) }
    }

}

/// Lowercase hex.
func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
