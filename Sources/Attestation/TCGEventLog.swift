/// A TCG PC Client firmware event log (`binary_bios_measurements`), SHA-1 legacy or crypto-agile.
public struct TCGEventLog: Sendable {
    /// One measured (or informational) event.
    public struct Event: Hashable, Sendable {
        /// Position in the log, 0-based (the Spec ID header is event 0 in a crypto-agile log).
        public let number: Int
        public let pcr: Int
        public let type: UInt32
        /// Digests by bank.
        public let digests: [TPMAlgorithm: [UInt8]]
        public let data: [UInt8]

        /// The TCG name of the event type.
        public var typeName: String { TCGEventLog.typeName(type) }
        /// A short human description decoded from the event data where the type allows.
        public var summary: String { TCGEventLog.describe(type: type, data: data) }
    }

    /// Limits for untrusted logs.
    public enum Limits {
        /// Largest log accepted, the same as the native evidence document's field.
        public static let bytes = 196_608
        /// Most events in one log.
        public static let events = 8_192
        /// Most hash algorithms in the Spec ID event.
        public static let algorithms = 8
    }

    public static let noAction: UInt32 = 0x0000_0003
    public static let separator: UInt32 = 0x0000_0004

    /// True for a crypto-agile log (Spec ID Event03 header), false for the SHA-1 legacy format.
    public let cryptoAgile: Bool
    /// Digest sizes by algorithm as the Spec ID event declares them (SHA-1 only for legacy logs).
    public let algorithms: [TPMAlgorithm: Int]
    /// Every event, the header included.
    public let events: [Event]
    /// The locality from a StartupLocality event (the initial value of PCR 0), 0 without one.
    public let startupLocality: UInt8

    /// Parses `bytes` strictly: every event complete, digest sizes as declared, no trailing bytes
    /// except zero padding that some firmware leaves after the last event.
    public init(bytes input: some Collection<UInt8>) throws(AttestationError) {
        let all = Array(input)
        guard all.count <= Limits.bytes else {
            throw .lengthExceeded("event log", length: all.count, limit: Limits.bytes)
        }
        var reader = ByteReader(all[...], what: "event log")
        var events: [Event] = []
        // The first event is always in the SHA-1 TCG_PCR_EVENT format.
        let first = try Self.readLegacyEvent(&reader, number: 0)
        events.append(first)
        var algorithms: [TPMAlgorithm: Int] = [.sha1: 20]
        var order: [TPMAlgorithm] = [.sha1]
        let isSpecID =
            first.type == Self.noAction && first.data.count >= 16
            && first.data.prefix(16).elementsEqual(Array("Spec ID Event03".utf8) + [0])
        if isSpecID {
            (algorithms, order) = try Self.readSpecID(first.data)
        }
        cryptoAgile = isSpecID
        var locality = Self.startupLocality(of: first) ?? 0
        while reader.remaining > 0 {
            if reader.bytes.allSatisfy({ $0 == 0 }) { break }
            guard events.count < Limits.events else {
                throw .lengthExceeded("event log event count", length: events.count + 1, limit: Limits.events)
            }
            let event =
                isSpecID
                ? try Self.readAgileEvent(&reader, number: events.count, sizes: algorithms, order: order)
                : try Self.readLegacyEvent(&reader, number: events.count)
            if let value = Self.startupLocality(of: event) { locality = value }
            events.append(event)
        }
        self.algorithms = algorithms
        self.events = events
        self.startupLocality = locality
    }

    private static func readLegacyEvent(_ reader: inout ByteReader, number: Int) throws(AttestationError) -> Event {
        let offset = reader.offset
        do throws(AttestationError) {
            let pcr = try reader.readLE(UInt32.self, "pcrIndex")
            let type = try reader.readLE(UInt32.self, "eventType")
            let digest = Array(try reader.read(20, "digest"))
            let size = Int(try reader.readLE(UInt32.self, "eventSize"))
            let data = Array(try reader.read(size, "event"))
            guard pcr < 24 || type == noAction else {
                throw AttestationError.invalidEventLog("PCR index \(pcr) exceeds 23", offset: offset)
            }
            return Event(number: number, pcr: Int(pcr), type: type, digests: [.sha1: digest], data: data)
        } catch {
            throw error.code == .invalidEventLog
                ? error : .invalidEventLog("event \(number): \(error.message)", offset: offset)
        }
    }

    private static func readAgileEvent(
        _ reader: inout ByteReader,
        number: Int,
        sizes: [TPMAlgorithm: Int],
        order: [TPMAlgorithm]
    ) throws(AttestationError) -> Event {
        let offset = reader.offset
        do throws(AttestationError) {
            let pcr = try reader.readLE(UInt32.self, "pcrIndex")
            let type = try reader.readLE(UInt32.self, "eventType")
            let count = Int(try reader.readLE(UInt32.self, "digests.count"))
            guard count <= Limits.algorithms else {
                throw AttestationError.invalidEventLog(
                    "event \(number): digest count \(count) exceeds limit \(Limits.algorithms)",
                    offset: offset
                )
            }
            var digests: [TPMAlgorithm: [UInt8]] = [:]
            for _ in 0..<count {
                let algorithm = TPMAlgorithm(rawValue: try reader.readLE(UInt16.self, "digest.hashAlg"))
                guard let size = sizes[algorithm] else {
                    throw AttestationError.invalidEventLog(
                        "event \(number): algorithm \(algorithm) is not in the Spec ID event",
                        offset: offset
                    )
                }
                guard digests[algorithm] == nil else {
                    throw AttestationError.invalidEventLog("event \(number): two \(algorithm) digests", offset: offset)
                }
                digests[algorithm] = Array(try reader.read(size, "digest"))
            }
            let size = Int(try reader.readLE(UInt32.self, "eventSize"))
            let data = Array(try reader.read(size, "event"))
            guard pcr < 24 || type == noAction else {
                throw AttestationError.invalidEventLog("PCR index \(pcr) exceeds 23", offset: offset)
            }
            return Event(number: number, pcr: Int(pcr), type: type, digests: digests, data: data)
        } catch {
            throw error.code == .invalidEventLog
                ? error : .invalidEventLog("event \(number): \(error.message)", offset: offset)
        }
    }

    /// The algorithms of a TCG_EfiSpecIDEvent.
    private static func readSpecID(_ data: [UInt8]) throws(AttestationError) -> ([TPMAlgorithm: Int], [TPMAlgorithm]) {
        var reader = ByteReader(data[...], what: "Spec ID event")
        do throws(AttestationError) {
            _ = try reader.read(16, "signature")
            _ = try reader.readLE(UInt32.self, "platformClass")
            _ = try reader.read(4, "version")
            let count = Int(try reader.readLE(UInt32.self, "numberOfAlgorithms"))
            guard count >= 1, count <= Limits.algorithms else {
                throw AttestationError.invalidEventLog(
                    "Spec ID algorithm count \(count) outside 1…\(Limits.algorithms)",
                    offset: 32
                )
            }
            var sizes: [TPMAlgorithm: Int] = [:]
            var order: [TPMAlgorithm] = []
            for _ in 0..<count {
                let algorithm = TPMAlgorithm(rawValue: try reader.readLE(UInt16.self, "algorithmId"))
                let size = Int(try reader.readLE(UInt16.self, "digestSize"))
                if let known = algorithm.digestSize, known != size {
                    throw AttestationError.invalidEventLog(
                        "Spec ID declares \(size) bytes for \(algorithm), which has \(known)",
                        offset: 32
                    )
                }
                guard size <= 64 else {
                    throw AttestationError.invalidEventLog("Spec ID digest size \(size) exceeds 64", offset: 32)
                }
                sizes[algorithm] = size
                order.append(algorithm)
            }
            let vendorSize = Int(try reader.u8("vendorInfoSize"))
            _ = try reader.read(vendorSize, "vendorInfo")
            try reader.finish()
            return (sizes, order)
        } catch {
            throw error.code == .invalidEventLog ? error : .invalidEventLog(error.message, offset: 32)
        }
    }

    private static func startupLocality(of event: Event) -> UInt8? {
        let label = Array("StartupLocality".utf8) + [0]
        guard event.type == noAction, event.data.count == 17, event.data.prefix(16).elementsEqual(label) else {
            return nil
        }
        return event.data[16]
    }

    /// The PCR indices that events extend in `bank`.
    public func replayedPCRs(bank: TPMAlgorithm) -> Set<Int> {
        Set(events.filter { $0.type != Self.noAction && $0.digests[bank] != nil }.map(\.pcr))
    }

    /// The PCR values the log replays to in `bank`, for every PCR it extends.
    public func replay(bank: TPMAlgorithm) throws(AttestationError) -> [Int: [UInt8]] {
        guard let size = bank.digestSize, algorithms[bank] != nil else {
            throw .unsupported("event log bank", bank.description)
        }
        var pcrs: [Int: [UInt8]] = [:]
        for event in events where event.type != Self.noAction {
            guard let digest = event.digests[bank] else {
                throw .invalidEventLog("event \(event.number) has no \(bank) digest", offset: 0)
            }
            var current = pcrs[event.pcr] ?? Self.initialValue(pcr: event.pcr, size: size, locality: startupLocality)
            current += digest
            pcrs[event.pcr] = bank.hash(current)
        }
        return pcrs
    }

    /// A PCR's value at TPM start-up: zeros, PCR 0 holding the startup locality in its last byte.
    static func initialValue(pcr: Int, size: Int, locality: UInt8) -> [UInt8] {
        var value = [UInt8](repeating: 0, count: size)
        if pcr == 0 { value[size - 1] = locality }
        if (17...22).contains(pcr) { value = [UInt8](repeating: 0xFF, count: size) }
        return value
    }

    /// Replays `bank` and lists every PCR of `quoted` that the log extends but does not reach.
    public func compare(with quoted: [Int: [UInt8]], bank: TPMAlgorithm) throws(AttestationError) -> [EventLogMismatch]
    {
        let replayed = try replay(bank: bank)
        return replayed.keys.sorted().compactMap { pcr in
            guard let actual = quoted[pcr], let value = replayed[pcr], actual != value else { return nil }
            let events = self.events.filter { $0.pcr == pcr && $0.type != Self.noAction }
            return EventLogMismatch(pcr: pcr, bank: bank, quoted: actual, replayed: value, events: events)
        }
    }
}

/// A PCR whose replayed value differs from the quoted one, with the events behind it.
public struct EventLogMismatch: Hashable, Sendable {
    public let pcr: Int
    public let bank: TPMAlgorithm
    public let quoted: [UInt8]
    public let replayed: [UInt8]
    /// The events that extend this PCR, in log order.
    public let events: [TCGEventLog.Event]

    /// The values for a policy result: the PCR, both values, and each event's type, digest and summary.
    var values: [(String, String)] {
        var values = [
            ("pcr", String(pcr)), ("bank", bank.description), ("quoted", hexString(quoted)),
            ("replayed", hexString(replayed)),
        ]
        for event in events {
            let digest = event.digests[bank].map { hexString($0) } ?? "none"
            values.append(("event[\(event.number)]", "\(event.typeName) \(digest) \(event.summary)"))
        }
        return values
    }
}

extension TCGEventLog {
    /// The TCG name of an event type.
    public static func typeName(_ type: UInt32) -> String {
        let names: [UInt32: String] = [
            0x0: "EV_PREBOOT_CERT", 0x1: "EV_POST_CODE", 0x2: "EV_UNUSED", 0x3: "EV_NO_ACTION", 0x4: "EV_SEPARATOR",
            0x5: "EV_ACTION", 0x6: "EV_EVENT_TAG", 0x7: "EV_S_CRTM_CONTENTS", 0x8: "EV_S_CRTM_VERSION",
            0x9: "EV_CPU_MICROCODE", 0xA: "EV_PLATFORM_CONFIG_FLAGS", 0xB: "EV_TABLE_OF_DEVICES",
            0xC: "EV_COMPACT_HASH",
            0xD: "EV_IPL", 0xE: "EV_IPL_PARTITION_DATA", 0xF: "EV_NONHOST_CODE", 0x10: "EV_NONHOST_CONFIG",
            0x11: "EV_NONHOST_INFO", 0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
            0x8000_0001: "EV_EFI_VARIABLE_DRIVER_CONFIG", 0x8000_0002: "EV_EFI_VARIABLE_BOOT",
            0x8000_0003: "EV_EFI_BOOT_SERVICES_APPLICATION", 0x8000_0004: "EV_EFI_BOOT_SERVICES_DRIVER",
            0x8000_0005: "EV_EFI_RUNTIME_SERVICES_DRIVER", 0x8000_0006: "EV_EFI_GPT_EVENT",
            0x8000_0007: "EV_EFI_ACTION",
            0x8000_0008: "EV_EFI_PLATFORM_FIRMWARE_BLOB", 0x8000_0009: "EV_EFI_HANDOFF_TABLES",
            0x8000_000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2", 0x8000_000B: "EV_EFI_HANDOFF_TABLES2",
            0x8000_000C: "EV_EFI_VARIABLE_BOOT2", 0x8000_0010: "EV_EFI_HCRTM_EVENT",
            0x8000_00E0: "EV_EFI_VARIABLE_AUTHORITY", 0x8000_00E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
            0x8000_00E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
        ]
        return names[type] ?? "0x" + String(type, radix: 16)
    }

    /// A short description of event data: text for action and version events, the variable name for
    /// UEFI variable events, the separator value; empty where nothing readable is known.
    public static func describe(type: UInt32, data: [UInt8]) -> String {
        switch type {
        case 0x5, 0x8000_0007, 0xD, 0x1:
            return printable(String(decoding: data.prefix(128), as: UTF8.self))
        case 0x8:
            return printable(utf16(data.prefix(128)))
        case 0x4:
            return "separator " + hexString(data.prefix(4))
        case 0x8000_0001, 0x8000_0002, 0x8000_000C, 0x8000_00E0:
            var reader = ByteReader(data[...], what: "UEFI_VARIABLE_DATA")
            guard (try? reader.read(16, "guid")) != nil,
                let nameLength = try? reader.readLE(UInt64.self, "nameLength"),
                (try? reader.readLE(UInt64.self, "dataLength")) != nil,
                nameLength <= 256, let name = try? reader.read(Int(nameLength) * 2, "name")
            else { return "" }
            return "variable " + printable(utf16(name))
        default:
            return ""
        }
    }

    private static func utf16(_ bytes: ArraySlice<UInt8>) -> String {
        var units: [UInt16] = []
        var index = bytes.startIndex
        while index + 1 < bytes.endIndex {
            units.append(UInt16(bytes[index]) | UInt16(bytes[index + 1]) << 8)
            index += 2
        }
        return String(decoding: units, as: UTF16.self)
    }

    private static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }))
    }
}
