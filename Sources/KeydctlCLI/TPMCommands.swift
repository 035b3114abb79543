import ArgumentParser
import Foundation
import KeydClient
import KeydProtocol

/// `keydctl tpm`.
public struct TPM: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tpm",
        abstract: "Check the node's TPM through keyd: attestation key, PCRs, sealed KEK, evidence.",
        subcommands: [TPMStatus.self, TPMEvidence.self]
    )

    @OptionGroup var socket: SocketOptions

    public init() {}
}

/// `keydctl tpm status`.
public struct TPMStatus: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the TCTI, the attestation key (public key and name), PCR values and the sealed-KEK state."
    )

    @OptionGroup var socket: SocketOptions
    @Flag(help: "Print keyd's JSON report unchanged.")
    var json = false

    public init() {}

    public func run() throws {
        try reporting {
            let report = String(decoding: try socket.connect().tpmStatus().report, as: UTF8.self)
            printLine(json ? report : Report.printable(report))
        }
    }
}

/// `keydctl tpm evidence`.
public struct TPMEvidence: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "evidence",
        abstract: "Ask keyd for a TPM quote bound to a nonce and a user-data digest, and write the document.",
        discussion: """
            keyd computes the quote's qualifying data from the nonce and the digest (PROTOCOL.md); \
            nothing else can be placed in a quote. With --parts-dir (native format), keydctl also \
            writes attest.bin (TPMS_ATTEST), signature.bin (TPMT_SIGNATURE), ak.pem, \
            qualifying-data.hex, pcrs.json and pcrs.bin (the values in tpm2-tools' serialized PCR \
            format), so that the quote can be checked by hand:

              tpm2_checkquote -u ak.pem -m attest.bin -s signature.bin -g sha256 \\
                -f pcrs.bin -q $(cat qualifying-data.hex)
            """
    )

    @OptionGroup var socket: SocketOptions
    @Option(help: ArgumentHelp("The verifier's nonce: 64 hex digits.", valueName: "hex"))
    var nonce: String
    @Option(
        name: .customLong("user-data-digest"),
        help: ArgumentHelp("SHA-256 of the user data to bind: 64 hex digits.", valueName: "hex")
    )
    var userDataDigest: String
    @Option(help: ArgumentHelp("Document format: native or constellation.", valueName: "format"))
    var format: String = "native"
    @Option(help: ArgumentHelp("Where to write the document.", valueName: "file"))
    var out: String
    @Option(
        name: .customLong("parts-dir"),
        help: ArgumentHelp("Also write the quote's parts here (native format only).", valueName: "dir")
    )
    var partsDirectory: String?

    public init() {}

    public func validate() throws {
        guard EvidenceParts.bytes(hex: nonce)?.count == 32 else {
            throw ValidationError("--nonce must be 64 hex digits")
        }
        guard EvidenceParts.bytes(hex: userDataDigest)?.count == 32 else {
            throw ValidationError("--user-data-digest must be 64 hex digits")
        }
        guard format == "native" || format == "constellation" else {
            throw ValidationError("--format must be native or constellation")
        }
        guard partsDirectory == nil || format == "native" else {
            throw ValidationError("--parts-dir needs --format native")
        }
    }

    public func run() throws {
        try reporting {
            let keyd = try socket.connect()
            let variant: EvidenceVariant = format == "native" ? .native : .constellationQEMUVTPM
            let document = try keyd.evidence(
                variant,
                nonce: EvidenceParts.bytes(hex: nonce)!,
                userDataDigest: EvidenceParts.bytes(hex: userDataDigest)!
            ).document
            try EvidenceParts.write(Data(document), to: out)
            if let partsDirectory {
                let report = String(decoding: try keyd.tpmStatus().report, as: UTF8.self)
                try EvidenceParts.writeParts(of: document, statusReport: report, into: partsDirectory)
            }
            printLine("wrote \(document.count) bytes to \(out)")
        }
    }
}

/// The files `tpm evidence --parts-dir` writes, from the native document and keyd's status report.
enum EvidenceParts {
    /// Bytes of an even-length hex string, or nil.
    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var result: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
            result.append(high << 4 | low)
        }
        return result
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The `extraData` (qualifying data) of a TPMS_ATTEST: after magic (4), type (2) and qualifiedSigner (TPM2B).
    static func qualifyingData(ofAttest attest: [UInt8]) throws(KeydctlError) -> [UInt8] {
        guard attest.count >= 8 else { throw KeydctlError.badDocument("TPMS_ATTEST of \(attest.count) bytes") }
        let signerLength = Int(attest[6]) << 8 | Int(attest[7])
        let dataAt = 8 + signerLength
        guard attest.count >= dataAt + 2 else {
            throw KeydctlError.badDocument("TPMS_ATTEST ends inside qualifiedSigner")
        }
        let dataLength = Int(attest[dataAt]) << 8 | Int(attest[dataAt + 1])
        guard attest.count >= dataAt + 2 + dataLength else {
            throw KeydctlError.badDocument("TPMS_ATTEST ends inside extraData")
        }
        return Array(attest[(dataAt + 2)..<(dataAt + 2 + dataLength)])
    }

    /// Writes attest.bin, signature.bin, ak.pem, qualifying-data.hex, pcrs.json and pcrs.bin.
    static func writeParts(of document: [UInt8], statusReport: String, into directory: String) throws(KeydctlError) {
        let parsed: NativeEvidenceDocument
        do {
            parsed = try NativeEvidenceDocument(decoding: document)
        } catch {
            throw KeydctlError.badDocument("\(error)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(statusReport.utf8)) as? [String: Any],
            let key = object["attestationKey"] as? [String: Any], let pem = key["publicKeyPEM"] as? String
        else { throw KeydctlError.badDocument("keyd's tpm.status report has no attestationKey.publicKeyPEM") }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw KeydctlError.cannotWrite(path: directory, error.localizedDescription)
        }
        let hexOf = { (bytes: [UInt8]) in bytes.map { String(format: "%02x", $0) }.joined() }
        try write(Data(parsed.attest), to: directory + "/attest.bin")
        try write(Data(parsed.signature), to: directory + "/signature.bin")
        try write(Data(pem.utf8), to: directory + "/ak.pem")
        try write(
            Data((hexOf(try qualifyingData(ofAttest: parsed.attest)) + "\n").utf8),
            to: directory + "/qualifying-data.hex"
        )
        let members = parsed.pcrs.map { "    \"\($0.index)\": \"\(hexOf($0.value))\"" }.joined(separator: ",\n")
        try write(Data("{\n  \"sha256\": {\n\(members)\n  }\n}\n".utf8), to: directory + "/pcrs.json")
        try write(Data(toolsPCRFile(parsed.pcrs)), to: directory + "/pcrs.bin")
    }

    /// PCR values in tpm2-tools' serialized format (what `tpm2_quote -o` writes and `tpm2_checkquote -f`
    /// reads): the TPML_PCR_SELECTION struct, a little-endian u32 count of TPML_DIGEST structs, then
    /// those structs (8 digests each), all as the x86-64 C layout of libtss2's types.
    static func toolsPCRFile(_ pcrs: [(index: UInt8, value: [UInt8])]) -> [UInt8] {
        func le32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        // TPML_PCR_SELECTION: count u32, 16 × TPMS_PCR_SELECTION {hash u16, sizeofSelect u8, pcrSelect[4], pad}.
        var bitmap: [UInt8] = [0, 0, 0, 0]
        for pcr in pcrs { bitmap[Int(pcr.index) / 8] |= 1 << (pcr.index % 8) }
        var file = le32(1) + [0x0B, 0x00, 3] + bitmap + [0]
        file += [UInt8](repeating: 0, count: 132 - file.count)
        let groups = stride(from: 0, to: pcrs.count, by: 8).map { Array(pcrs[$0..<min($0 + 8, pcrs.count)]) }
        file += le32(UInt32(groups.count))
        for group in groups {
            // TPML_DIGEST: count u32, 8 × TPM2B_DIGEST {size u16, buffer[64]}.
            file += le32(UInt32(group.count))
            for slot in 0..<8 {
                let value = slot < group.count ? group[slot].value : []
                file +=
                    withUnsafeBytes(of: UInt16(value.count).littleEndian) { Array($0) } + value
                    + [UInt8](repeating: 0, count: 64 - value.count)
            }
        }
        return file
    }

    /// Writes `data` to `path`, naming the path in the error.
    static func write(_ data: Data, to path: String) throws(KeydctlError) {
        do {
            try data.write(to: URL(fileURLWithPath: path))
        } catch {
            throw KeydctlError.cannotWrite(path: path, "\(error.localizedDescription)")
        }
    }
}
