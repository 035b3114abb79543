import KeydCore
import Testing

/// Header facts of a disk that Asterism's profile formatted, changed by `change`.
func facts(_ change: (inout LUKS2HeaderFacts) -> Void = { _ in }) -> LUKS2HeaderFacts {
    var result = LUKS2HeaderFacts(
        cipher: "aes",
        cipherMode: "xts-plain64",
        volumeKeyBytes: 64,
        sectorSize: 4096,
        keyslotKDFs: ["pbkdf2"],
        digestTypes: ["pbkdf2"],
        segmentTypes: ["crypt"],
        tokenJSONs: [StateDiskToken(kind: .asterism, initialized: false).json],
        uuid: "0F8E0C8A-1C6B-4E59-9F5A-3E0D1C2B3A49",
        label: "asterism-state"
    )
    change(&result)
    return result
}

@Suite("DiskProfile")
struct DiskProfileTests {
    @Test("the profiles carry the documented parameters")
    func parameters() {
        #expect(DiskProfile.asterism.kdf == .pbkdf2(hash: "sha256", iterations: 1000))
        #expect(DiskProfile.constellation.kdf == .argon2id(timeMilliseconds: 2000, memoryKiB: 65536, threads: 4))
        for profile in DiskProfile.all {
            #expect(profile.cipher == "aes" && profile.cipherMode == "xts-plain64")
            #expect(profile.volumeKeyBytes == 64 && profile.sectorSize == 4096)
        }
        #expect(DiskProfile.named("constellation") == .constellation)
        #expect(DiskProfile.named("luks1") == nil)
        #expect(facts().uuid == "0f8e0c8a-1c6b-4e59-9f5a-3e0d1c2b3a49")
    }

    @Test("a header of each profile is accepted")
    func accepted() {
        #expect(DiskProfile.check(facts()) == .success(.asterism))
        let constellation = facts {
            $0.keyslotKDFs = ["argon2id", "argon2id"]
            $0.tokenJSONs = [#"{ "type":"constellation-state-disk", "keyslots":[ ], "diskIsInitialized":true }"#]
        }
        #expect(DiskProfile.check(constellation) == .success(.constellation))
        // Two pbkdf2 keyslots: the state in the middle of a re-key.
        #expect(DiskProfile.check(facts { $0.keyslotKDFs = ["pbkdf2", "pbkdf2"] }) == .success(.asterism))
    }

    @Test(
        "a header that fits no profile is refused, naming the field and the values",
        arguments: [
            (facts { $0.cipher = "serpent" }, "cipher", "serpent"),
            (facts { $0.cipherMode = "cbc-essiv:sha256" }, "cipher mode", "cbc-essiv:sha256"),
            (facts { $0.volumeKeyBytes = 32 }, "volume key bytes", "32"),
            (facts { $0.sectorSize = 512 }, "sector size", "512"),
            (facts { $0.segmentTypes = ["crypt", "crypt"] }, "segments", "crypt, crypt"),
            (facts { $0.segmentTypes = ["linear"] }, "segments", "linear"),
            (facts { $0.segmentTypes = [] }, "segments", "none"),
            (facts { $0.digestTypes = ["argon2"] }, "digests", "argon2"),
            (facts { $0.digestTypes = [] }, "digests", "none"),
            (facts { $0.keyslotKDFs = ["argon2i"] }, "keyslot KDF", "argon2i"),
            (facts { $0.keyslotKDFs = ["pbkdf2", "argon2id"] }, "keyslot KDF", "pbkdf2, argon2id"),
            (facts { $0.keyslotKDFs = [] }, "keyslot KDF", "none"),
            (facts { $0.keyslotKDFs = ["argon2id"] }, "token type", "asterism-state-disk"),
        ]
    )
    func refused(header: LUKS2HeaderFacts, field: String, found: String) throws {
        let result = DiskProfile.check(header)
        guard case .failure(let rejection) = result else {
            Issue.record("accepted \(header)")
            return
        }
        #expect(rejection.field == field)
        #expect(rejection.found == found)
        #expect(rejection.description.contains(field) && rejection.description.contains(found))
    }

    @Test("facts read from LUKS2 metadata JSON")
    func metadata() throws {
        let json = """
            {"keyslots":{"1":{"type":"luks2","kdf":{"type":"argon2id","time":4,"salt":"c2FsdDE="}},"0":{"type":"luks2","kdf":{"type":"pbkdf2","iterations":1000,"salt":"c2FsdDA="}}},
             "tokens":{},"segments":{"0":{"type":"crypt","offset":"16777216","sector_size":4096}},
             "digests":{"0":{"type":"pbkdf2","keyslots":["0","1"]}},"config":{"json_size":"12288"}}
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
        #expect(read.keyslotKDFs == ["pbkdf2", "argon2id"])
        #expect(read.digestTypes == ["pbkdf2"])
        #expect(read.segmentTypes == ["crypt"])
        #expect(read.uuid == "abc")
        #expect(read.keyslotSalts == [0: "c2FsdDA=", 1: "c2FsdDE="])
        #expect(throws: CoreError.self) {
            try LUKS2HeaderFacts(
                cipher: "aes",
                cipherMode: "xts-plain64",
                volumeKeyBytes: 64,
                sectorSize: 4096,
                tokenJSONs: [],
                uuid: "",
                label: "",
                metadataJSON: #"{"keyslots":{},"digests":{}}"#
            )
        }
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
        var facts = LUKS2HeaderFacts(
            cipher: "aes",
            cipherMode: "xts-plain64",
            volumeKeyBytes: 64,
            sectorSize: 4096,
            keyslotKDFs: ["pbkdf2", "pbkdf2"],
            digestTypes: ["pbkdf2"],
            segmentTypes: ["crypt"],
            tokenJSONs: [],
            uuid: "u",
            label: ""
        )
        facts.keyslotSalts = [0: "q83vEjRWeJA+/w==", 1: "other"]
        #expect(record.keyslot(in: facts) == 0)
        facts.keyslotSalts = [0: "replaced", 1: "q83vEjRWeJA+/w=="]
        #expect(record.keyslot(in: facts) == nil, "a keyslot 0 with another salt is not the first-boot keyslot")
        facts.keyslotSalts = [1: "other"]
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
