import Glibc
import KeydCore
import KeydDaemon
import KeydPlatform
import KeydProtocol
import Synchronization
import Testing

// LUKS2 on sparse file images through libcryptsetup; the cryptsetup command line serves only as an
// independent oracle (luksDump offsets, `open --test-passphrase`).

/// A 32-byte random key with a NUL byte inside, to prove keys travel as pointer and length.
func randomKey() -> [UInt8] {
    var key = [UInt8](repeating: 0, count: 32)
    key.withUnsafeMutableBytes { try! SecureRandom.fill($0) }
    key[7] = 0
    key[31] = 0
    return key
}

/// A sparse file of `size` bytes at `path`.
func makeImage(_ path: String, size: Int = 32 << 20) throws {
    let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw SystemError.errno(errno, call: "open", context: path) }
    defer { close(fd) }
    guard ftruncate(fd, off_t(size)) == 0 else { throw SystemError.errno(errno, call: "ftruncate", context: path) }
}

/// Writes `count` zero bytes at `offset` into `path`.
func zero(_ path: String, offset: Int, count: Int) throws {
    let fd = open(path, O_RDWR | O_CLOEXEC)
    guard fd >= 0 else { throw SystemError.errno(errno, call: "open", context: path) }
    defer { close(fd) }
    let zeros = [UInt8](repeating: 0, count: count)
    let written = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, count, off_t(offset)) }
    guard written == count else { throw SystemError.errno(errno, call: "pwrite", context: path) }
}

/// Writes `bytes` to a new file `path` (a key file for the cryptsetup oracle).
func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw SystemError.errno(errno, call: "open", context: path) }
    defer { close(fd) }
    guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, bytes.count) }) == bytes.count else {
        throw SystemError.errno(errno, call: "write", context: path)
    }
}

/// Runs a shell command; returns its exit status and standard output.
func shell(_ command: String) -> (status: Int32, output: String) {
    guard let pipe = popen(command + " 2>/dev/null", "r") else { return (-1, "") }
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = fread(&buffer, 1, buffer.count, pipe)
        if count <= 0 { break }
        output += buffer[..<count]
    }
    let status = pclose(pipe)
    return ((status >> 8) & 0xFF, String(decoding: output, as: UTF8.self))
}

/// Seconds on the monotonic clock.
func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// The median of `values` (seconds), in milliseconds with one decimal.
func medianMilliseconds(_ values: [Double]) -> String {
    let tenths = Int((values.sorted()[values.count / 2] * 10_000).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}

/// Format parameters for `profile` as `disk.format` writes them, with another KDF when given.
func parameters(_ profile: DiskProfile, label: String = StateDisk.label, kdf: LUKS2KDF? = nil) -> LUKS2FormatParameters
{
    var parameters = LUKS2FormatParameters(profile: profile, label: label)
    if let kdf { parameters.kdf = kdf }
    return parameters
}

/// KeydCore facts from a platform header (keyd's own mapping).
func facts(of header: LUKS2Header) throws -> LUKS2HeaderFacts { try LUKS2HeaderFacts(header) }

/// The header check of a platform header; throws its rejection.
func checked(_ header: LUKS2Header) throws -> CheckedHeader { try DiskProfile.check(try facts(of: header)).get() }

let asterismKDF = LUKS2KDF.pbkdf2(hash: "sha256", iterations: 1000)

/// Formats a fresh image with Asterism's profile and `key`; returns the image path.
func formattedImage(in directory: String, key: [UInt8]) throws -> String {
    let image = directory + "/disk.img"
    try makeImage(image)
    _ = try key.withUnsafeBytes {
        try LUKS2Volume.format(path: image, parameters: parameters(.asterism), passphrase: $0)
    }
    return image
}

@Suite("LUKS2Volume", .serialized, .enabled(if: geteuid() == 0, "needs root: LUKS2 on a file image"))
struct LUKS2VolumeTests {
    @Test("format, inspect, re-key, old key fails, new key opens (also for cryptsetup itself)")
    func roundTrip() throws {
        try withTemporaryDirectory { directory in
            let image = directory + "/disk.img"
            try makeImage(image)
            let old = randomKey()
            let new = randomKey()
            let start = now()
            let uuid = try old.withUnsafeBytes {
                try LUKS2Volume.format(path: image, parameters: parameters(.asterism), passphrase: $0)
            }
            let formatSeconds = now() - start
            #expect(uuid == uuid.lowercased() && uuid.count == 36)

            let header = try #require(try LUKS2Volume.inspect(path: image))
            #expect(header.uuid == uuid)
            #expect(header.label == "asterism-state")
            #expect(header.keyslots.map(\.kdfType) == ["pbkdf2"])
            #expect(header.keyslots.first?.iterations == 1000 && header.keyslots.first?.hash == "sha256")
            let read = try facts(of: header)
            #expect(DiskProfile.check(read).map(\.profile) == .success(.asterism))
            #expect(try checked(header).stateDiskToken == StateDiskToken(kind: .asterism, initialized: false))
            #expect(try checked(header).uuid.text == uuid)
            #expect(shell("cryptsetup luksUUID \(image)").output.lowercased().hasPrefix(uuid))

            let volume = try LUKS2Volume(path: image, kdf: asterismKDF)
            let slot = try old.withUnsafeBytes { o in
                try new.withUnsafeBytes { try volume.addKeyslot(existing: o, new: $0, kdf: asterismKDF) }
            }
            #expect(slot == 1)
            #expect(try old.withUnsafeBytes { try volume.verify(key: $0) } == 0)
            #expect(try new.withUnsafeBytes { try volume.verify(key: $0) } == 1)
            try volume.destroyKeyslot(0)
            #expect(try old.withUnsafeBytes { try volume.verify(key: $0) } == nil)
            #expect(try new.withUnsafeBytes { try volume.verify(key: $0) } == 1)
            var verifySeconds: [Double] = []
            for _ in 0..<21 {
                let begin = now()
                _ = try new.withUnsafeBytes { try volume.verify(key: $0) }
                verifySeconds.append(now() - begin)
            }
            // The key without its bytes after the NUL must not open: the length is honoured.
            #expect(try new.prefix(7).withUnsafeBytes { try volume.verify(key: UnsafeRawBufferPointer($0)) } == nil)

            try writeFile(directory + "/new.key", new)
            try writeFile(directory + "/old.key", old)
            #expect(shell("cryptsetup open --test-passphrase --key-file \(directory)/new.key \(image)").status == 0)
            #expect(shell("cryptsetup open --test-passphrase --key-file \(directory)/old.key \(image)").status != 0)
            print(
                "LUKS2 asterism profile: format \(medianMilliseconds([formatSeconds])) ms, verify p50 \(medianMilliseconds(verifySeconds)) ms (21 runs)"
            )
        }
    }

    @Test("Constellation's profile round trip (argon2id 2000 ms, 64 MiB, 4 threads)")
    func constellation() throws {
        try withTemporaryDirectory { directory in
            let image = directory + "/disk.img"
            try makeImage(image)
            let old = randomKey()
            let new = randomKey()
            let kdf = LUKS2KDF.argon2id(timeMilliseconds: 2000, memoryKiB: 65536, threads: 4)
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            let rssBefore = usage.ru_maxrss
            let start = now()
            _ = try old.withUnsafeBytes {
                try LUKS2Volume.format(path: image, parameters: parameters(.constellation), passphrase: $0)
            }
            let formatSeconds = now() - start
            let header = try #require(try LUKS2Volume.inspect(path: image))
            #expect(header.keyslots.map(\.kdfType) == ["argon2id"])
            #expect(header.keyslots.first?.memoryKiB == 65536 && (1...4).contains(header.keyslots.first?.threads ?? 0))
            let read = try facts(of: header)
            #expect(DiskProfile.check(read).map(\.profile) == .success(.constellation))
            #expect(try checked(header).stateDiskToken == StateDiskToken(kind: .constellation, initialized: false))

            let volume = try LUKS2Volume(path: image, kdf: kdf)
            let begin = now()
            #expect(try old.withUnsafeBytes { try volume.verify(key: $0) } == 0)
            let verifySeconds = now() - begin
            let slot = try old.withUnsafeBytes { o in
                try new.withUnsafeBytes { try volume.addKeyslot(existing: o, new: $0, kdf: kdf) }
            }
            try volume.destroyKeyslot(0)
            #expect(try new.withUnsafeBytes { try volume.verify(key: $0) } == slot)
            getrusage(RUSAGE_SELF.rawValue, &usage)
            print(
                "LUKS2 constellation profile: format \(medianMilliseconds([formatSeconds])) ms, verify \(medianMilliseconds([verifySeconds])) ms, max RSS \(rssBefore / 1024) → \(usage.ru_maxrss / 1024) MiB"
            )
        }
    }

    enum Damage: String, CaseIterable {
        case primaryHeader, bothHeaders, bothMetadataAreas, keyslotArea, wholeFile
    }

    @Test("corruption matrix", arguments: Damage.allCases)
    func corruption(damage: Damage) throws {
        try withTemporaryDirectory { directory in
            let key = randomKey()
            let image = try formattedImage(in: directory, key: key)
            // Offsets from the independent oracle: metadata area size and the keyslot area.
            let dump = shell("cryptsetup luksDump \(image)").output
            #expect(dump.contains("Metadata area: \t16384 [bytes]"))
            func number(after label: String) -> Int? {
                for line in dump.split(separator: "\n") {
                    let text = line.trimmingSpaces
                    guard text.hasPrefix(label) else { continue }
                    return Int(text.dropFirst(label.count).prefix { $0 != "[" }.trimmingSpaces)
                }
                return nil
            }
            switch damage {
            case .primaryHeader:
                try zero(image, offset: 0, count: 4096)
                let header = try #require(try LUKS2Volume.inspect(path: image))
                #expect(try checked(header).profile == .asterism)
                let volume = try LUKS2Volume(path: image, kdf: asterismKDF)
                #expect(try key.withUnsafeBytes { try volume.verify(key: $0) } == 0)
            case .bothHeaders:
                try zero(image, offset: 0, count: 32768)
                #expect(try LUKS2Volume.inspect(path: image) == nil)
                #expect(throws: SystemError.self) { _ = try LUKS2Volume(path: image, kdf: asterismKDF) }
            case .bothMetadataAreas:
                // Binary headers (with their magic) stay; both JSON areas go: the header is damaged, not absent.
                try zero(image, offset: 4096, count: 12288)
                try zero(image, offset: 16384 + 4096, count: 12288)
                #expect(throws: SystemError.luks2HeaderUnreadable(path: image, "")) {
                    try LUKS2Volume.inspect(path: image)
                }
            case .keyslotArea:
                let offset = try #require(number(after: "Area offset:"))
                let length = try #require(number(after: "Area length:"))
                try zero(image, offset: offset, count: length)
                let volume = try LUKS2Volume(path: image, kdf: asterismKDF)
                #expect(try key.withUnsafeBytes { try volume.verify(key: $0) } == nil)
            case .wholeFile:
                try zero(image, offset: 0, count: 16 << 20)
                #expect(try LUKS2Volume.inspect(path: image) == nil)
            }
        }
    }

    @Test("libcryptsetup works on an opened image through its pinned /proc/self/fd path, after the lock probe")
    func pinnedImage() throws {
        try withTemporaryDirectory { directory in
            let image = directory + "/disk.img"
            try makeImage(image)
            let device = try DiskDevice(path: image)
            // keyd's order on an image: probe the lock, release it, then let libcryptsetup lock the file itself.
            let probe = try DeviceLock(device)
            probe.release()
            let old = randomKey()
            let new = randomKey()
            let uuid = try old.withUnsafeBytes {
                try LUKS2Volume.format(path: device.pinnedPath, parameters: parameters(.asterism), passphrase: $0)
            }
            let header = try #require(try LUKS2Volume.inspect(path: device.pinnedPath))
            #expect(try checked(header).uuid.text == uuid)
            let volume = try LUKS2Volume(path: device.pinnedPath, kdf: asterismKDF)
            let slot = try old.withUnsafeBytes { o in
                try new.withUnsafeBytes { try volume.addKeyslot(existing: o, new: $0, kdf: asterismKDF) }
            }
            #expect(try new.withUnsafeBytes { try volume.verify(key: $0) } == slot)
            try volume.destroyKeyslot(0)
            try volume.backupHeader(to: directory + "/header.backup")
            // The image itself changed, as cryptsetup sees it by its name.
            #expect(shell("cryptsetup luksUUID \(image)").output.hasPrefix(uuid))
            #expect(try LUKS2Volume.inspect(path: image)?.keyslots.map(\.index) == [slot])
            // Another process's lock (another open file description) makes the probe busy at once.
            let holder = try DiskDevice(path: image)
            let held = try DeviceLock(holder)
            #expect(throws: SystemError.errno(EBUSY, call: "")) { _ = try DeviceLock(device, exclusive: false) }
            held.release()
        }
    }

    @Test("header backup and restore bring back a disk whose headers were destroyed")
    func backupRestore() throws {
        try withTemporaryDirectory { directory in
            let key = randomKey()
            let image = try formattedImage(in: directory, key: key)
            let uuid = try #require(try LUKS2Volume.inspect(path: image)).uuid
            try LUKS2Volume(path: image, kdf: asterismKDF).backupHeader(to: directory + "/header.backup")
            try zero(image, offset: 0, count: 16 << 20)
            #expect(try LUKS2Volume.inspect(path: image) == nil)
            try LUKS2Volume.restoreHeader(path: image, from: directory + "/header.backup")
            #expect(try LUKS2Volume.inspect(path: image)?.uuid == uuid)
            let volume = try LUKS2Volume(path: image, kdf: asterismKDF)
            #expect(try key.withUnsafeBytes { try volume.verify(key: $0) } == 0)
        }
    }

    @Test("errors: missing device, wrong existing key, empty key; libcryptsetup messages reach the sink")
    func errors() throws {
        let messages = Mutex<[String]>([])
        LUKS2Log.setSink { _, message in messages.withLock { $0.append(message) } }
        defer { LUKS2Log.setSink(nil) }
        #expect(throws: SystemError.errno(ENOENT, call: "")) { try LUKS2Volume.inspect(path: "/nonexistent/disk.img") }
        try withTemporaryDirectory { directory in
            let key = randomKey()
            let image = try formattedImage(in: directory, key: key)
            let volume = try LUKS2Volume(path: image, kdf: asterismKDF)
            let wrong = randomKey()
            let error = try #require(throws: SystemError.self) {
                try wrong.withUnsafeBytes { w in
                    try key.withUnsafeBytes { try volume.addKeyslot(existing: w, new: $0, kdf: asterismKDF) }
                }
            }
            #expect(error.errno == EPERM)
            #expect(error.description.contains("damaged keyslot area"))
            #expect(throws: SystemError.self) { try volume.verify(key: UnsafeRawBufferPointer(start: nil, count: 0)) }
            #expect(try LUKS2Volume.inspect(path: image)?.keyslots.count == 1)
        }
        let logged = messages.withLock { $0 }
        #expect(!logged.isEmpty)
        #expect(logged.allSatisfy { !$0.hasSuffix("\n") })
    }

    @Test("token replaced in place keeps its id")
    func tokenReplace() throws {
        try withTemporaryDirectory { directory in
            let image = try formattedImage(in: directory, key: randomKey())
            let volume = try LUKS2Volume(path: image, kdf: asterismKDF)
            let id = try #require(try volume.tokens().first).id
            try volume.setToken(json: StateDiskToken(kind: .asterism, initialized: true).json, id: id)
            #expect(try volume.tokens().count == 1)
            #expect(try StateDiskToken(parsing: try #require(try volume.token(id: id))).initialized)
        }
    }

    @Test("libcryptsetup hands tokens out as json-c re-serializes them: a repeated name arrives once, its last value")
    func tokenNamesArriveOnce() throws {
        try withTemporaryDirectory { directory in
            let image = try formattedImage(in: directory, key: randomKey())
            let volume = try LUKS2Volume(path: image, kdf: asterismKDF)
            let id = try #require(try volume.tokens().first).id
            try volume.setToken(
                json:
                    #"{"type":"asterism-state-disk","keyslots":[],"initialized":false,"initialized":true,"formatVersion":1}"#,
                id: id
            )
            let stored = try #require(try volume.token(id: id))
            #expect(stored.components(separatedBy: "initialized").count == 2, "\(stored)")
            // keyd reads the value libcryptsetup keeps (json-c: the last), never another.
            #expect(try StateDiskToken(parsing: stored).initialized)
        }
    }

    @Test(
        "re-key crash at every step leaves a disk that opens with the old or the new key",
        arguments: StateDiskRekey.Step.allCases
    )
    func rekeyCrash(at crashStep: StateDiskRekey.Step) throws {
        try withTemporaryDirectory { directory in
            let old = randomKey()
            let new = randomKey()
            let image = try formattedImage(in: directory, key: old)

            /// Performs one step on a fresh handle, as keyd would.
            func perform(_ step: StateDiskRekey.Step) throws {
                let volume = try LUKS2Volume(path: image, kdf: asterismKDF)
                switch step {
                case .addNewKeyslot:
                    _ = try old.withUnsafeBytes { o in
                        try new.withUnsafeBytes { try volume.addKeyslot(existing: o, new: $0, kdf: asterismKDF) }
                    }
                case .verifyNewKeyslot:
                    #expect(try new.withUnsafeBytes { try volume.verify(key: $0) } != nil)
                case .markTokenInitialized:
                    let id = try #require(try volume.tokens().first { (try? StateDiskToken(parsing: $0.json)) != nil })
                        .id
                    try volume.setToken(json: StateDiskToken(kind: .asterism, initialized: true).json, id: id)
                case .removeOldKeyslot:
                    let slot = try #require(try old.withUnsafeBytes { try volume.verify(key: $0) })
                    try volume.destroyKeyslot(slot)
                case .done:
                    break
                }
            }
            /// What is on disk, from a fresh handle (the process that crashed is gone).
            func observe() throws -> StateDiskRekey.Observation {
                let volume = try LUKS2Volume(path: image, kdf: asterismKDF)
                let header = try volume.header()
                return StateDiskRekey.Observation(
                    oldKeyslot: try old.withUnsafeBytes { try volume.verify(key: $0) },
                    newKeyslot: try new.withUnsafeBytes { try volume.verify(key: $0) },
                    tokenInitialized: try checked(header).stateDiskToken?.initialized ?? false
                )
            }

            var step = StateDiskRekey.Step.addNewKeyslot
            while true {
                try perform(step)
                #expect(try observe().opens)
                if step == crashStep { break }
                step = StateDiskRekey.next(after: step)
            }
            // "Crash": the handle is gone; a new run resumes from what is on disk.
            var rounds = 0
            while case .perform(let next) = StateDiskRekey.resume(observed: try observe()), next != .done, rounds < 8 {
                try perform(next)
                #expect(try observe().opens)
                rounds += 1
            }
            let final = try observe()
            #expect(final.oldKeyslot == nil && final.newKeyslot != nil && final.tokenInitialized)
            try writeFile(directory + "/new.key", new)
            #expect(shell("cryptsetup open --test-passphrase --key-file \(directory)/new.key \(image)").status == 0)
        }
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs.
    fileprivate var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
