import Testing

@testable import TrustdCore

/// A node whose set-up is run by the same loop trustd runs (resume, persist, act), with a crash that
/// stops the process right after a step's effect, before or after its progress is persisted. The state
/// file survives as bytes; everything in memory (the ticket) dies with the process.
struct SimulatedNode {
    /// Where the process stops.
    struct Crash: Hashable, CustomTestStringConvertible {
        let step: NodeSetUpStep
        /// Whether the step's progress reached the state file before the crash.
        let persisted: Bool
        var testDescription: String { "after \(step), \(persisted ? "persisted" : "not persisted")" }
    }

    /// The process ended here.
    struct Crashed: Error {}

    var keydBootKey = [UInt8](repeating: 1, count: 32)
    var diskOpen = false
    var pcr15 = false
    var joinMaterial = false
    var kubeadmMarker = false
    var kubeadmConfigured = true
    var stateFile: [UInt8]?
    var tickets: [JoinTicketKind] = []
    var kubeadmRuns = 0
    let clusterID = [UInt8](repeating: 0xC1, count: 32)

    var observations: NodeSetUpObservations {
        NodeSetUpObservations(
            keydBootKey: keydBootKey,
            joinMaterialPresent: joinMaterial,
            kubeadmCompleted: kubeadmMarker,
            kubeadmConfigured: kubeadmConfigured
        )
    }

    /// keyd restarts (a reboot, as far as the set-up is concerned): new boot key, disk closed.
    mutating func restartKeyd() {
        keydBootKey = keydBootKey.map { $0 &+ 1 }
        diskOpen = false
    }

    /// The set-up loop, until done or `crash`.
    mutating func run(crash: Crash? = nil) throws {
        while true {
            let persisted = try stateFile.map { bytes throws(NodeSetUpError) in try NodeSetUpState(parsing: bytes) }
            var (state, action) = try NodeSetUp.resume(from: persisted, observing: observations)
            stateFile = state.encoded
            /// Records `step` after its effect, crashing where asked.
            func record(_ step: NodeSetUpStep, clusterID: [UInt8]? = nil) throws {
                if crash == Crash(step: step, persisted: false) { throw Crashed() }
                state = state.recording(step, clusterID: clusterID)
                stateFile = state.encoded
                if crash == Crash(step: step, persisted: true) { throw Crashed() }
            }
            switch action {
            case .done:
                return
            case .requestTicket(let kind):
                tickets.append(kind)
                try record(.ticketReceived)
                // envelope.accept: keyd opens the disk and marks PCR 15 in one request.
                diskOpen = true
                pcr15 = true
                try record(.envelopeAccepted)
                try record(.pcr15Marked, clusterID: clusterID)
                try record(.diskOpened)
                if kind == .join { joinMaterial = true }
                try record(.nodeStateWritten)
            case .runKubeadm:
                kubeadmRuns += 1
                kubeadmMarker = true
                try record(.kubeadmDone)
            }
        }
    }
}

@Suite struct NodeSetUpTests {
    static let crashes = NodeSetUpStep.allCases.flatMap {
        [SimulatedNode.Crash(step: $0, persisted: false), SimulatedNode.Crash(step: $0, persisted: true)]
    }

    @Test func firstBootRunsEveryStepInOrder() throws {
        var node = SimulatedNode()
        try node.run()
        #expect(node.tickets == [.join])
        #expect(node.kubeadmRuns == 1 && node.diskOpen && node.pcr15 && node.joinMaterial)
        let state = try NodeSetUpState(parsing: try #require(node.stateFile))
        #expect(state.completed == .kubeadmDone && state.clusterID == node.clusterID && state.kind == .join)
        // trustd restarts alone: keyd's steps stand for this boot, nothing runs again.
        try node.run()
        #expect(node.tickets == [.join] && node.kubeadmRuns == 1)
        // keyd restarts too: a rejoin, kubeadm not again.
        node.restartKeyd()
        try node.run()
        #expect(node.tickets == [.join, .rejoin] && node.kubeadmRuns == 1 && node.diskOpen)
    }

    @Test(arguments: crashes)
    func crashedJoinResumes(crash: SimulatedNode.Crash) throws {
        var node = SimulatedNode()
        #expect(throws: SimulatedNode.Crashed.self) { try node.run(crash: crash) }
        try node.run()
        #expect(node.kubeadmMarker && node.joinMaterial && node.diskOpen && node.pcr15)
        #expect(try NodeSetUpState(parsing: try #require(node.stateFile)).completed == .kubeadmDone)
        // kubeadm runs once: its marker is written before its step is persisted.
        #expect(node.kubeadmRuns == 1)
        // A second ticket when the first one died before its files were written (a join's material
        // exists only in the ticket).
        let lostTicket = crash.step <= .diskOpened
        #expect(node.tickets == (lostTicket ? [.join, .join] : [.join]), "\(node.tickets)")
    }

    @Test(arguments: crashes)
    func crashedJoinResumesAfterKeydRestarts(crash: SimulatedNode.Crash) throws {
        var node = SimulatedNode()
        #expect(throws: SimulatedNode.Crashed.self) { try node.run(crash: crash) }
        node.restartKeyd()
        try node.run()
        #expect(node.kubeadmMarker && node.joinMaterial && node.diskOpen)
        #expect(node.kubeadmRuns == 1)
        // A new keyd boot always needs a ticket: a rejoin once the join files exist.
        let second: JoinTicketKind = crash.step >= .nodeStateWritten ? .rejoin : .join
        #expect(node.tickets == [.join, second])
    }

    /// A rejoin finds kubeadm's marker and has no kubeadm step to crash in.
    @Test(arguments: crashes.filter { $0.step != .kubeadmDone })
    func crashedRejoinResumes(crash: SimulatedNode.Crash) throws {
        var node = SimulatedNode()
        try node.run()
        node.restartKeyd()
        #expect(throws: SimulatedNode.Crashed.self) { try node.run(crash: crash) }
        try node.run()
        #expect(node.diskOpen && node.kubeadmRuns == 1)
        let lostTicket = crash.step < .diskOpened || (crash.step == .diskOpened && !crash.persisted)
        #expect(node.tickets == (lostTicket ? [.join, .rejoin, .rejoin] : [.join, .rejoin]))
    }

    @Test func withoutKubeadmTheSetUpEndsAtTheFiles() throws {
        var node = SimulatedNode()
        node.kubeadmConfigured = false
        try node.run()
        #expect(node.kubeadmRuns == 0)
        #expect(try NodeSetUpState(parsing: try #require(node.stateFile)).completed == .nodeStateWritten)
        // kubeadm configured later: it runs on the next start, without a new ticket.
        node.kubeadmConfigured = true
        try node.run()
        #expect(node.kubeadmRuns == 1 && node.tickets == [.join])
    }

    @Test func contradictionsAreErrors() throws {
        var node = SimulatedNode()
        try node.run()
        var missingFiles = node
        missingFiles.joinMaterial = false
        let files = #expect(throws: NodeSetUpError.self) { try missingFiles.run() }
        #expect(files?.code == .contradiction)
        #expect(
            files?.description
                == "node set-up state contradicts the node: the join files were written this boot but are gone"
        )
        var missingMarker = node
        missingMarker.kubeadmMarker = false
        let marker = #expect(throws: NodeSetUpError.self) { try missingMarker.run() }
        #expect(marker?.description.contains("kubeadm completed this boot but its marker is gone") == true)
    }

    @Test func stateRoundTrips() throws {
        let state = NodeSetUpState(keydBootKey: [UInt8](repeating: 0xAB, count: 32), kind: .rejoin)
            .recording(.ticketReceived).recording(.envelopeAccepted)
            .recording(.pcr15Marked, clusterID: [UInt8](repeating: 7, count: 32))
        #expect(try NodeSetUpState(parsing: state.encoded) == state)
        let text = String(decoding: state.encoded, as: UTF8.self)
        #expect(text.hasPrefix("asterism-node-setup v1\nkeyd-boot-key=abab"))
        #expect(text.contains("\nkind=rejoin\ncompleted=pcr15-marked\ncluster-id=0707"))
        #expect(state.nextStep == .diskOpened)
        #expect(state.recording(.diskOpened).recording(.nodeStateWritten).recording(.kubeadmDone).nextStep == nil)
    }

    static let valid = String(
        decoding: NodeSetUpState(keydBootKey: [UInt8](repeating: 1, count: 32), kind: .join).encoded,
        as: UTF8.self
    )

    static let garbled: [(String, String)] = [
        ("", "not UTF-8 text ending in a newline"),
        (valid.replacing("v1", with: "v2"), "the first line is not asterism-node-setup v1"),
        (valid + "extra=1\n", "unknown key extra"),
        (valid + "kind=join\n", "kind is set twice"),
        (valid.replacing("kind=join\n", with: ""), "1 of its 4 keys are missing"),
        (valid.replacing("kind=join", with: "kind=init"), "kind is neither join nor rejoin"),
        (valid.replacing("completed=none", with: "completed=done"), "completed names no step"),
        (valid.replacing("completed=none", with: "completed=disk-opened"), "PCR 15 is marked but cluster-id is empty"),
        (valid.replacing("keyd-boot-key=01", with: "keyd-boot-key="), "keyd-boot-key is not 64 hex digits"),
        (valid.replacing("keyd-boot-key=01", with: "keyd-boot-key=AB"), "keyd-boot-key is not 64 hex digits"),
        (valid.replacing("cluster-id=", with: "cluster-id=00"), "cluster-id is neither empty nor 64 hex digits"),
        (valid.replacing("\n", with: "\r\n"), "not UTF-8 text ending in a newline"),
        (valid + "x", "not UTF-8 text ending in a newline"),
        (valid + String(repeating: "#", count: 1024) + "\n", "over 1024"),
        (valid + "no equals\n", "a line has no '='"),
    ]

    @Test(arguments: garbled)
    func garbledStateIsAnError(text: String, says: String) {
        let error = #expect(throws: NodeSetUpError.self) { try NodeSetUpState(parsing: Array(text.utf8)) }
        #expect(error?.code == .garbled)
        #expect(error?.description.hasPrefix("node set-up state is garbled: ") == true)
        #expect(error?.description.contains(says) == true, "\(String(describing: error))")
    }

    @Test func invalidUTF8IsGarbled() {
        #expect(throws: NodeSetUpError.self) { try NodeSetUpState(parsing: [0xFF, 0x0A]) }
    }
}

@Suite struct BoundedLineSplitterTests {
    @Test func splitsBoundsAndRepairs() {
        var splitter = BoundedLineSplitter(maxLength: 8)
        #expect(splitter.feed(Array("one\ntw".utf8)) == ["one"])
        #expect(splitter.feed(Array("o\r\n".utf8)) == ["two"])
        #expect(
            splitter.feed(Array("0123456789abc\nok\n".utf8)) == ["01234567" + BoundedLineSplitter.truncationMark, "ok"]
        )
        #expect(splitter.feed([0xFF, 0x41, 0x0A]) == ["\u{FFFD}A"])
        #expect(splitter.finish() == nil)
        #expect(splitter.feed(Array("tail".utf8)).isEmpty)
        #expect(splitter.finish() == "tail")
    }
}
