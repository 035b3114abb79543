import KeydCore
import KeydProtocol
import Testing

/// A keyslot as Asterism's profile writes it, with `kdf` when given.
func keyslot(_ index: Int = 0, kdf: LUKS2KeyslotFacts.KDF = pbkdf2KDF()) -> LUKS2KeyslotFacts {
    LUKS2KeyslotFacts(
        index: index,
        type: "luks2",
        keyBytes: 64,
        areaEncryption: "aes-xts-plain64",
        areaKeyBytes: 64,
        antiForensic: .init(type: "luks1", stripes: 4000, hash: "sha256"),
        kdf: kdf
    )
}

/// A PBKDF2 keyslot KDF, Asterism's cost unless given.
func pbkdf2KDF(hash: String? = "sha256", iterations: UInt64? = 1000) -> LUKS2KeyslotFacts.KDF {
    .init(type: "pbkdf2", hash: hash, iterations: iterations, salt: "c2FsdA==")
}

/// An argon2id keyslot KDF, a benchmarked Constellation cost unless given.
func argon2KDF(time: UInt64? = 14, memoryKiB: UInt64? = 65536, threads: UInt64? = 4) -> LUKS2KeyslotFacts.KDF {
    .init(type: "argon2id", time: time, memoryKiB: memoryKiB, threads: threads, salt: "c2FsdA==")
}

/// Header facts of a disk that Asterism's profile formatted, changed by `change`.
func facts(_ change: (inout LUKS2HeaderFacts) -> Void = { _ in }) -> LUKS2HeaderFacts {
    var result = LUKS2HeaderFacts(
        cipher: "aes",
        cipherMode: "xts-plain64",
        volumeKeyBytes: 64,
        sectorSize: 4096,
        keyslots: [keyslot()],
        digests: [LUKS2DigestFacts(type: "pbkdf2", hash: "sha256", iterations: 1000)],
        segmentTypes: ["crypt"],
        tokenJSONs: [StateDiskToken(kind: .asterism, initialized: false).json],
        uuid: "0f8e0c8a-1c6b-4e59-9f5a-3e0d1c2b3a49",
        label: "asterism-state"
    )
    change(&result)
    return result
}

/// Header facts of a disk that Constellation's profile formatted, changed by `change`.
func constellationFacts(_ change: (inout LUKS2HeaderFacts) -> Void = { _ in }) -> LUKS2HeaderFacts {
    facts {
        $0.keyslots = [keyslot(kdf: argon2KDF())]
        $0.digests = [LUKS2DigestFacts(type: "pbkdf2", hash: "sha256", iterations: 230_557)]
        $0.tokenJSONs = [StateDiskToken(kind: .constellation, initialized: true).json]
        change(&$0)
    }
}

/// A token of another kind that a header may carry beside the state-disk token.
let foreignToken = #"{"type":"systemd-tpm2","keyslots":["0"],"tpm2-pcrs":[7]}"#

@Suite("DiskProfile")
struct DiskProfileTests {
    @Test("the profiles carry the documented parameters")
    func parameters() {
        #expect(DiskProfile.asterism.kdf == .pbkdf2(hash: "sha256", iterations: 1000))
        #expect(DiskProfile.constellation.kdf == .argon2id(timeMilliseconds: 2000, memoryKiB: 65536, threads: 4))
        for profile in DiskProfile.all {
            #expect(profile.cipher == "aes" && profile.cipherMode == "xts-plain64")
            #expect(profile.volumeKeyBytes == 64 && profile.sectorSize == 4096)
            #expect(profile.encryption == "aes-xts-plain64")
        }
        #expect(DiskProfile.asterism.digestIterations == 1000...1000)
        #expect(DiskProfile.named("constellation") == .constellation)
        #expect(DiskProfile.named("luks1") == nil)
    }

    @Test(
        "a header of each profile is accepted, with its validated UUID, label and token",
        arguments: [
            (facts(), DiskProfile.asterism),
            (constellationFacts(), .constellation),
            // Two keyslots: the state in the middle of a re-key.
            (facts { $0.keyslots = [keyslot(0), keyslot(1)] }, .asterism),
            // Constellation's costs at their bounds.
            (
                constellationFacts {
                    $0.keyslots = [keyslot(kdf: argon2KDF(time: 128, memoryKiB: 65536, threads: 4))]
                    $0.digests[0].iterations = 4_194_304
                }, .constellation
            ),
            (
                constellationFacts { $0.keyslots = [keyslot(kdf: argon2KDF(time: 4, memoryKiB: 32, threads: 1))] },
                .constellation
            ),
            // Tokens of other kinds do not matter; neither does a missing state-disk token.
            (facts { $0.tokenJSONs.insert(foreignToken, at: 0) }, .asterism),
            (facts { $0.tokenJSONs = [] }, .asterism),
            // A label of 47 printable characters, or none.
            (facts { $0.label = String(repeating: "~", count: 47) }, .asterism),
            (facts { $0.label = "" }, .asterism),
        ]
    )
    func accepted(header: LUKS2HeaderFacts, profile: DiskProfile) throws {
        let checked = try DiskProfile.check(header).get()
        #expect(checked.profile == profile)
        #expect(checked.uuid.text == header.uuid)
        #expect(checked.label == header.label)
        let token = header.tokenJSONs.compactMap { try? StateDiskToken(parsing: $0) }.first
        #expect(checked.stateDiskToken == token)
    }

    static let refusals: [(LUKS2HeaderFacts, String, String)] = [
        // The UUID names files and derives the key: anything but canonical lowercase is refused.
        (facts { $0.uuid = "0F8E0C8A-1C6B-4E59-9F5A-3E0D1C2B3A49" }, "UUID", "0F8E0C8A-1C6B-4E59-9F5A-3E0D1C2B3A49"),
        (facts { $0.uuid = "../../watched/x" }, "UUID", "../../watched/x"),
        (facts { $0.uuid = "../../../../tmp/x" }, "UUID", "../../../../tmp/x"),
        (facts { $0.uuid = "0f8e0c8a-1c6b-4e59-9f5a-3e0d1c2b/a49" }, "UUID", "0f8e0c8a-1c6b-4e59-9f5a-3e0d1c2b/a49"),
        (facts { $0.uuid = "0f8e0c8a-1c6b-4e59" }, "UUID", "0f8e0c8a-1c6b-4e59"),
        (
            facts { $0.uuid = "0f8e0c8a-1c6b-4e59-9f5a-3e0d1c2b3a4\u{0}" }, "UUID",
            "0f8e0c8a-1c6b-4e59-9f5a-3e0d1c2b3a4\u{0}"
        ),
        (facts { $0.uuid = "0f8e0c8a-1c6b-4e59-9f5a-3e0d1c2b3g49" }, "UUID", "0f8e0c8a-1c6b-4e59-9f5a-3e0d1c2b3g49"),
        (facts { $0.uuid = "" }, "UUID", ""),
        // The label: printable ASCII, at most 47 bytes.
        (facts { $0.label = "a\u{1B}[2Jb" }, "label", "a\u{1B}[2Jb"),
        (facts { $0.label = "line\nbreak" }, "label", "line\nbreak"),
        (facts { $0.label = "état" }, "label", "état"),
        (facts { $0.label = String(repeating: "x", count: 48) }, "label", String(repeating: "x", count: 48)),
        // Segment, cipher and sector size.
        (facts { $0.cipher = "serpent" }, "cipher", "serpent"),
        (facts { $0.cipherMode = "cbc-essiv:sha256" }, "cipher mode", "cbc-essiv:sha256"),
        (facts { $0.volumeKeyBytes = 32 }, "volume key bytes", "32"),
        (facts { $0.sectorSize = 512 }, "sector size", "512"),
        (facts { $0.segmentTypes = ["crypt", "crypt"] }, "segments", "crypt, crypt"),
        (facts { $0.segmentTypes = ["linear"] }, "segments", "linear"),
        (facts { $0.segmentTypes = [] }, "segments", "none"),
        // Persistent flags and requirements.
        (facts { $0.persistentFlags = ["allow-discards"] }, "persistent flags", "allow-discards"),
        (
            facts { $0.persistentFlags = ["same-cpu-crypt", "no-read-workqueue"] }, "persistent flags",
            "same-cpu-crypt, no-read-workqueue"
        ),
        (facts { $0.requirements = ["online-reencrypt-v2"] }, "requirements", "online-reencrypt-v2"),
        // Digests: exactly one PBKDF2-SHA-256 with the profile's iterations.
        (facts { $0.digests[0].type = "argon2" }, "digests", "argon2"),
        (facts { $0.digests = [] }, "digests", "none"),
        (facts { $0.digests.append($0.digests[0]) }, "digests", "pbkdf2, pbkdf2"),
        (facts { $0.digests[0].hash = "sha1" }, "digest hash", "sha1"),
        (facts { $0.digests[0].iterations = 1_000_000_000 }, "digest PBKDF2 iterations", "1000000000"),
        (facts { $0.digests[0].iterations = 2000 }, "digest PBKDF2 iterations", "2000"),
        (facts { $0.digests[0].iterations = nil }, "digest PBKDF2 iterations", "none"),
        (constellationFacts { $0.digests[0].iterations = 4_194_305 }, "digest PBKDF2 iterations", "4194305"),
        // Keyslots: how many, which KDF.
        (facts { $0.keyslots = [] }, "keyslots", "0"),
        (facts { $0.keyslots = [keyslot(0), keyslot(1), keyslot(2)] }, "keyslots", "3"),
        (
            facts { $0.keyslots = [keyslot(kdf: .init(type: "argon2i", time: 4, memoryKiB: 32, threads: 1))] },
            "keyslot KDF", "argon2i"
        ),
        (facts { $0.keyslots = [keyslot(0), keyslot(1, kdf: argon2KDF())] }, "keyslot KDF", "pbkdf2, argon2id"),
        // Each keyslot: type, key, area cipher, splitter.
        (facts { $0.keyslots[0].type = "reencrypt" }, "keyslot 0 type", "reencrypt"),
        (facts { $0.keyslots[0].keyBytes = 32 }, "keyslot 0 key bytes", "32"),
        (facts { $0.keyslots[0].areaEncryption = "cipher_null-ecb" }, "keyslot 0 encryption", "cipher_null-ecb"),
        (
            facts { $0.keyslots[0].areaEncryption = "serpent-xts-plain64" }, "keyslot 0 encryption",
            "serpent-xts-plain64"
        ),
        (facts { $0.keyslots[0].areaKeyBytes = 32 }, "keyslot 0 encryption key bytes", "32"),
        (
            facts {
                $0.keyslots = [keyslot(0), keyslot(1)]
                $0.keyslots[1].antiForensic?.stripes = 40000
            },
            "keyslot 1 anti-forensic splitter", "luks1 40000 stripes sha256"
        ),
        (facts { $0.keyslots[0].antiForensic = nil }, "keyslot 0 anti-forensic splitter", "none"),
        // KDF cost: PBKDF2 exactly the profile's, argon2id within Constellation's.
        (
            facts { $0.keyslots = [keyslot(kdf: pbkdf2KDF(iterations: 1_000_000_000))] }, "keyslot 0 PBKDF2 iterations",
            "1000000000"
        ),
        (facts { $0.keyslots = [keyslot(kdf: pbkdf2KDF(iterations: 999))] }, "keyslot 0 PBKDF2 iterations", "999"),
        (facts { $0.keyslots = [keyslot(kdf: pbkdf2KDF(iterations: nil))] }, "keyslot 0 PBKDF2 iterations", "none"),
        (facts { $0.keyslots = [keyslot(kdf: pbkdf2KDF(hash: "sha1"))] }, "keyslot 0 PBKDF2 hash", "sha1"),
        (
            constellationFacts { $0.keyslots = [keyslot(kdf: argon2KDF(memoryKiB: 4_194_304))] },
            "keyslot 0 argon2id memory KiB", "4194304"
        ),
        (constellationFacts { $0.keyslots = [keyslot(kdf: argon2KDF(threads: 8))] }, "keyslot 0 argon2id threads", "8"),
        (constellationFacts { $0.keyslots = [keyslot(kdf: argon2KDF(threads: 0))] }, "keyslot 0 argon2id threads", "0"),
        (
            constellationFacts { $0.keyslots = [keyslot(kdf: argon2KDF(time: 1000))] }, "keyslot 0 argon2id time cost",
            "1000"
        ),
        (
            constellationFacts { $0.keyslots = [keyslot(kdf: argon2KDF(time: nil))] }, "keyslot 0 argon2id time cost",
            "none"
        ),
        // Tokens: one state-disk token at most, well-formed, of the profile; every token bounded.
        (facts { $0.keyslots = [keyslot(kdf: argon2KDF())] }, "token type", "asterism-state-disk"),
        (
            facts { $0.tokenJSONs.append(StateDiskToken(kind: .asterism, initialized: true).json) },
            "state-disk tokens", "2"
        ),
        (
            facts { $0.tokenJSONs.append(StateDiskToken(kind: .constellation, initialized: true).json) },
            "state-disk tokens", "2"
        ),
        (
            facts { $0.tokenJSONs = [#"{"type":"asterism-state-disk","keyslots":[],"initialized":true}"#] },
            "state-disk token", #"{"type":"asterism-state-disk","keyslots":[],"initialized":true}"#
        ),
        (facts { $0.tokenJSONs.append("[]") }, "token", "[]"),
        (
            facts { $0.tokenJSONs.append(#"{"type":"x","pad":""# + String(repeating: "p", count: 5000) + #""}"#) },
            "token JSON size", "5021 bytes"
        ),
    ]

    @Test("a header that fits no profile is refused, naming the field and the values", arguments: refusals)
    func refused(header: LUKS2HeaderFacts, field: String, found: String) throws {
        let result = DiskProfile.check(header)
        guard case .failure(let rejection) = result else {
            Issue.record("accepted \(header)")
            return
        }
        #expect(rejection.field == field)
        #expect(rejection.found == found)
        #expect(rejection.description.contains(field) && rejection.description.contains(quotedForMessage(found)))
        // The value the host wrote reaches the message quoted: no control character, no line break.
        #expect(!rejection.description.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F })
    }

    @Test("facts read from LUKS2 metadata JSON")
    func metadata() throws {
        let json = """
            {"keyslots":{"1":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},
              "area":{"type":"raw","offset":"290816","size":"258048","encryption":"aes-xts-plain64","key_size":64},
              "kdf":{"type":"argon2id","time":4,"memory":1048576,"cpus":4,"salt":"c2FsdDE="}},
             "0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},
              "area":{"type":"raw","offset":"32768","size":"258048","encryption":"cipher_null-ecb","key_size":32},
              "kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"c2FsdDA="}}},
             "tokens":{},"segments":{"0":{"type":"crypt","offset":"16777216","sector_size":4096}},
             "digests":{"0":{"type":"pbkdf2","keyslots":["0","1"],"hash":"sha256","iterations":1000}},
             "config":{"json_size":"12288","flags":["allow-discards"],
              "requirements":{"mandatory":["online-reencrypt-v2"],"optional":[]}}}
            """
        let read = try LUKS2HeaderFacts(
            cipher: "aes",
            cipherMode: "xts-plain64",
            volumeKeyBytes: 64,
            sectorSize: 4096,
            tokenJSONs: [],
            uuid: "ABC",
            label: "",
            metadataJSON: json
        )
        #expect(read.keyslots.map(\.kdf.type) == ["pbkdf2", "argon2id"])
        #expect(read.keyslots.map(\.index) == [0, 1])
        #expect(read.keyslots[0].areaEncryption == "cipher_null-ecb" && read.keyslots[0].areaKeyBytes == 32)
        #expect(read.keyslots[0].kdf == pbkdf2KDF(iterations: 1000).with(salt: "c2FsdDA="))
        #expect(read.keyslots[1].kdf == argon2KDF(time: 4, memoryKiB: 1_048_576, threads: 4).with(salt: "c2FsdDE="))
        #expect(read.keyslots[1].antiForensic == .init(type: "luks1", stripes: 4000, hash: "sha256"))
        #expect(read.digests == [LUKS2DigestFacts(type: "pbkdf2", hash: "sha256", iterations: 1000)])
        #expect(read.segmentTypes == ["crypt"])
        #expect(read.persistentFlags == ["allow-discards"])
        #expect(read.requirements == ["online-reencrypt-v2", "optional"])
        #expect(read.uuid == "ABC", "the UUID is kept as the header holds it; the check decides")
        #expect(read.keyslotSalts == [0: "c2FsdDA=", 1: "c2FsdDE="])
        #expect(DiskProfile.check(read).map(\.profile) != .success(.asterism))
    }

    @Test(
        "metadata a host could write that does not decode is refused",
        arguments: [
            #"{"keyslots":{},"digests":{}}"#,
            #"{"keyslots":{},"digests":{},"segments":{},"config":{"flags":"allow-discards"}}"#,
            #"{"keyslots":{},"digests":{},"segments":{},"config":{"requirements":{"mandatory":[1]}}}"#,
            #"{"keyslots":{"0":{"type":"luks2","key_size":64,"area":{"encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"pbkdf2","iterations":-1}}},"digests":{},"segments":{},"config":{}}"#,
            #"{"keyslots":{"0":{"type":"luks2","key_size":64,"area":{"encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"pbkdf2","iterations":1e30}}},"digests":{},"segments":{},"config":{}}"#,
            #"{"keyslots":{"x":{"type":"luks2","key_size":64,"area":{"encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"pbkdf2"}}},"digests":{},"segments":{},"config":{}}"#,
        ]
    )
    func undecodableMetadata(json: String) {
        #expect(throws: CoreError.self) {
            try LUKS2HeaderFacts(
                cipher: "aes",
                cipherMode: "xts-plain64",
                volumeKeyBytes: 64,
                sectorSize: 4096,
                tokenJSONs: [],
                uuid: "",
                label: "",
                metadataJSON: json
            )
        }
    }
}

extension LUKS2KeyslotFacts.KDF {
    /// This KDF with another salt.
    func with(salt: String) -> Self {
        var copy = self
        copy.salt = salt
        return copy
    }
}

@Suite("StateDiskToken")
struct StateDiskTokenTests {
    @Test("encodes the documented JSON")
    func encode() {
        #expect(
            StateDiskToken(kind: .asterism, initialized: false).json
                == #"{"type":"asterism-state-disk","keyslots":[],"initialized":false,"formatVersion":1}"#
        )
        #expect(
            StateDiskToken(kind: .constellation, initialized: true).json
                == #"{"type":"constellation-state-disk","keyslots":[],"diskIsInitialized":true}"#
        )
    }

    @Test(
        "parses its own output and libcryptsetup's spacing",
        arguments: [
            (
                #"{"type":"asterism-state-disk","keyslots":[],"initialized":true,"formatVersion":1}"#,
                StateDiskToken.Kind.asterism, true
            ),
            (
                #"{ "type":"asterism-state-disk", "keyslots":[ ], "initialized":false, "formatVersion":1 }"#, .asterism,
                false
            ),
            (#"{"formatVersion":1,"initialized":false,"keyslots":[],"type":"asterism-state-disk"}"#, .asterism, false),
            (#"{"type":"constellation-state-disk","keyslots":[],"diskIsInitialized":true}"#, .constellation, true),
            (
                "{\n  \"type\":\"constellation-state-disk\",\n  \"keyslots\":[\n  ],\n  \"diskIsInitialized\":false\n}",
                .constellation, false
            ),
        ]
    )
    func parse(json: String, kind: StateDiskToken.Kind, initialized: Bool) throws {
        let token = try StateDiskToken(parsing: json)
        #expect(token == StateDiskToken(kind: kind, initialized: initialized))
        #expect(try StateDiskToken(parsing: token.json) == token)
    }

    @Test(
        "refuses anything else",
        arguments: [
            "",
            "[]",
            #"{"type":"luks2-keyring","keyslots":[],"initialized":true,"formatVersion":1}"#,
            #"{"type":"asterism-state-disk","keyslots":[],"initialized":true}"#,
            #"{"type":"asterism-state-disk","keyslots":[],"initialized":true,"formatVersion":2}"#,
            #"{"type":"asterism-state-disk","keyslots":["0"],"initialized":true,"formatVersion":1}"#,
            #"{"type":"asterism-state-disk","keyslots":[],"initialized":"yes","formatVersion":1}"#,
            #"{"type":"asterism-state-disk","keyslots":[],"initialized":true,"formatVersion":1,"extra":0}"#,
            #"{"type":"asterism-state-disk","keyslots":[],"initialized":true,"formatVersion":1} x"#,
            #"{"type":"asterism-state-disk","keyslots":[],"initialized":true,"formatVersion":1.5}"#,
            #"{"type":"asterism-state-disk","keyslots":[],"initialized":null,"formatVersion":1}"#,
            #"{"type":"constellation-state-disk","keyslots":[],"initialized":true}"#,
            #"{"type":"asterism-state-disk","keyslots":[],"initialized":true,"formatVersion":1"#,
            String(repeating: "[", count: 40) + String(repeating: "]", count: 40),
        ]
    )
    func refused(json: String) {
        #expect(throws: CoreError.self) { try StateDiskToken(parsing: json) }
    }
}

@Suite("StateDiskRekey")
struct StateDiskRekeyTests {
    /// A model of the disk: keyslot number → which key it holds, and the token flag.
    struct ModelDisk {
        enum Key { case old, new, torn }
        var slots: [Int: Key] = [0: .old]
        var tokenInitialized = false

        var observation: StateDiskRekey.Observation {
            StateDiskRekey.Observation(
                oldKeyslot: slots.first { $0.value == .old }?.key,
                newKeyslot: slots.first { $0.value == .new }?.key,
                tokenInitialized: tokenInitialized
            )
        }

        /// Performs `step`; `torn` stops a write halfway (a keyslot that opens with nothing).
        mutating func perform(_ step: StateDiskRekey.Step, torn: Bool = false) {
            switch step {
            case .addNewKeyslot:
                let free = (0..<32).first { slots[$0] == nil }!
                slots[free] = torn ? .torn : .new
            case .verifyNewKeyslot, .done:
                break
            case .markTokenInitialized:
                if !torn { tokenInitialized = true }
            case .removeOldKeyslot:
                if let old = slots.first(where: { $0.value == .old })?.key { slots[old] = nil }
            }
        }

        /// Resumes from what is on disk until done; every intermediate state must open.
        mutating func resumeToEnd() -> Bool {
            for _ in 0..<10 {
                guard observation.opens else { return false }
                guard case .perform(let step) = StateDiskRekey.resume(observed: observation) else { return false }
                if step == .done { return true }
                perform(step)
            }
            return false
        }
    }

    @Test("an uninterrupted run visits the steps in order")
    func order() {
        var step = StateDiskRekey.Step.addNewKeyslot
        var visited: [StateDiskRekey.Step] = [step]
        while step != .done {
            step = StateDiskRekey.next(after: step)
            visited.append(step)
        }
        #expect(visited == [.addNewKeyslot, .verifyNewKeyslot, .markTokenInitialized, .removeOldKeyslot, .done])
        #expect(StateDiskRekey.resume(observed: ModelDisk().observation) == .perform(.addNewKeyslot))
    }

    @Test(
        "a crash after or inside any step leaves a disk that opens and resumes to the new key only",
        arguments: StateDiskRekey.Step.allCases,
        [false, true]
    )
    func crash(at crashStep: StateDiskRekey.Step, torn: Bool) {
        var disk = ModelDisk()
        var step = StateDiskRekey.Step.addNewKeyslot
        while step != crashStep {
            disk.perform(step)
            #expect(disk.observation.opens)
            step = StateDiskRekey.next(after: step)
        }
        disk.perform(crashStep, torn: torn)
        #expect(disk.observation.opens, "crash in \(crashStep) (torn: \(torn)) left a disk that opens with neither key")
        let finished = disk.resumeToEnd()
        #expect(finished)
        #expect(disk.observation.oldKeyslot == nil)
        #expect(disk.observation.newKeyslot != nil)
        #expect(disk.tokenInitialized)
    }

    @Test(
        "resume decisions",
        arguments: [
            (
                StateDiskRekey.Observation(oldKeyslot: 0, newKeyslot: nil, tokenInitialized: false),
                StateDiskRekey.Decision.perform(.addNewKeyslot)
            ),
            (.init(oldKeyslot: 0, newKeyslot: 1, tokenInitialized: false), .perform(.markTokenInitialized)),
            (.init(oldKeyslot: 0, newKeyslot: 1, tokenInitialized: true), .perform(.removeOldKeyslot)),
            (.init(oldKeyslot: nil, newKeyslot: 1, tokenInitialized: true), .perform(.done)),
            (.init(oldKeyslot: nil, newKeyslot: 1, tokenInitialized: false), .perform(.markTokenInitialized)),
            (.init(oldKeyslot: 0, newKeyslot: nil, tokenInitialized: true), .perform(.addNewKeyslot)),
            (.init(oldKeyslot: nil, newKeyslot: nil, tokenInitialized: false), .neitherKeyOpens),
            (.init(oldKeyslot: 2, newKeyslot: 2, tokenInitialized: false), .keysShareKeyslot(2)),
        ]
    )
    func decisions(observed: StateDiskRekey.Observation, decision: StateDiskRekey.Decision) {
        #expect(StateDiskRekey.resume(observed: observed) == decision)
    }
}

@Suite("FirstBootKeyslot")
struct FirstBootKeyslotTests {
    @Test("round trip and recognition only by index and salt together")
    func roundTrip() throws {
        let record = FirstBootKeyslot(index: 0, salt: "q83vEjRWeJA+/w==")
        #expect(record.text == "keyslot 0 salt q83vEjRWeJA+/w==\n")
        #expect(try FirstBootKeyslot(parsing: record.text) == record)
        var facts = facts { $0.keyslots = [keyslot(0, kdf: pbkdf2KDF()), keyslot(1, kdf: pbkdf2KDF())] }
        facts.keyslots[0].kdf.salt = "q83vEjRWeJA+/w=="
        facts.keyslots[1].kdf.salt = "other"
        #expect(record.keyslot(in: facts) == 0)
        facts.keyslots[0].kdf.salt = "replaced"
        facts.keyslots[1].kdf.salt = "q83vEjRWeJA+/w=="
        #expect(record.keyslot(in: facts) == nil, "a keyslot 0 with another salt is not the first-boot keyslot")
        facts.keyslots = [keyslot(1, kdf: pbkdf2KDF().with(salt: "other"))]
        #expect(record.keyslot(in: facts) == nil, "a removed keyslot is not named")
    }

    @Test(
        "malformed records are refused",
        arguments: [
            "", "keyslot 0 salt abc", "keyslot 0 salt \n", "keyslot 32 salt abc\n", "keyslot -1 salt abc\n",
            "slot 0 salt abc\n", "keyslot 0 salt abc extra\n", "keyslot 0 salt a b\n", "keyslot 0 salt a\"b\n",
            "keyslot 0 salt " + String(repeating: "a", count: 300) + "\n",
        ]
    )
    func malformed(text: String) {
        let error = #expect(throws: CoreError.self) { try FirstBootKeyslot(parsing: text) }
        #expect(error?.code == .invalidFirstBootRecord)
    }
}
