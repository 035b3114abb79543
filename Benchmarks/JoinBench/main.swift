// join-bench: join tickets end to end through trustd's JoinService (issue 15). One real keyd (release
// build, on its own swtpm for its audit anchors) holds a KEK and a signed policy that allow-lists the
// bench's software P-256 AKs; the JoinService (Trustd library) runs in this process behind its aTLS gRPC
// server on loopback. Every ticket is what a joining node does: a fresh aTLS connection (the service's
// attestation verified; the node's join evidence, made here with a software AK exactly as keyd's
// joinEvidence.issue makes it, bound to the connection's keyd challenge in the handshake), then
// IssueJoinTicket, which the service answers after keyd's key.release (audited and fsync'd). No disk
// work: the clients do not call envelope.accept; a sample of envelopes is opened with their boot keys.
// Figures: tickets/s and p50/p99 with 1, 16 and 64 concurrent clients; the rejoin round trip from one
// client beside `clevis decrypt` against tangd on this machine; a boot storm of 1,000 clients.
//
//   join-bench [--keyd PATH] [--seconds S] [--tickets N] [--clients N ...] [--rejoins N]
//              [--clevis-runs N] [--storm N]
import ArgumentParser
import BenchSupport
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "join-bench",
        abstract: "Join tickets/s end to end (aTLS + gRPC + keyd's key.release), rejoin beside clevis, a boot storm."
    )

    @OptionGroup var keyd: KeydBinaryOption
    @OptionGroup var duration: SecondsOption
    @Option(help: ArgumentHelp("Tickets per load mode at most; a mode also stops at --seconds.", valueName: "n"))
    var tickets = 50_000
    @Option(parsing: .upToNextOption, help: ArgumentHelp("Concurrent clients of each load mode.", valueName: "n"))
    var clients = [1, 16, 64]
    @Option(help: ArgumentHelp("Rejoins timed from one client (also bounded by --seconds).", valueName: "n"))
    var rejoins = 500
    @Option(help: ArgumentHelp("clevis decrypt runs timed against tangd (0 skips the anchor).", valueName: "n"))
    var clevisRuns = 20
    @Option(help: ArgumentHelp("Clients of the boot storm, started at once (0 skips it).", valueName: "n"))
    var storm = 1000
    @Option(help: ArgumentHelp("Threads of the JoinService's aTLS pool (challenges, certificates).", valueName: "n"))
    var serverThreads = 8
    @Option(help: ArgumentHelp("keyd connections of the JoinService's KeydGateway.", valueName: "n"))
    var gatewayConnections = 16

    func validate() throws {
        guard (1...10_000_000).contains(tickets) else { throw ValidationError("--tickets \(tickets) outside 1...1e7") }
        guard !clients.isEmpty, clients.allSatisfy({ (1...1024).contains($0) }) else {
            throw ValidationError("--clients \(clients) must be 1...1024 each")
        }
        guard (1...1_000_000).contains(rejoins) else { throw ValidationError("--rejoins \(rejoins) outside 1...1e6") }
        guard (0...10_000).contains(clevisRuns) else { throw ValidationError("--clevis-runs outside 0...10000") }
        guard (0...4096).contains(storm) else { throw ValidationError("--storm \(storm) outside 0...4096") }
        guard (1...256).contains(serverThreads) else { throw ValidationError("--server-threads outside 1...256") }
        guard (1...200).contains(gatewayConnections) else {
            throw ValidationError("--gateway-connections \(gatewayConnections) outside 1...200 (keyd's per-uid 256)")
        }
    }
}

let options = Options.parseOrExit()
let settings = BenchSettings(
    keyd: options.keyd.path,
    seconds: options.duration.seconds(default: 5),
    tickets: options.tickets,
    clients: options.clients,
    rejoins: options.rejoins,
    clevisRuns: options.clevisRuns,
    storm: options.storm,
    serverThreads: options.serverThreads,
    gatewayConnections: options.gatewayConnections
)
exit(await JoinBench(settings: settings).run() ? 0 : 1)
