import Foundation
import Testing

/// `make demo`'s scenario as an end-to-end test: scripts/demo with the binaries of this build, three nodes in
/// network namespaces (swtpm, keyd, trustd each) and the operator CLI outside. It must pass every step and
/// leave nothing behind: no namespace, no process, no work directory.
@Suite(.serialized, .needsSwtpm, .needsRoot) struct ClusterDemoTests {
    @Test("three nodes: init, join, verify, rejoin, recovery, rejoin through the recovered control plane")
    func clusterLifecycle() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let timings = FileManager.default.temporaryDirectory.appending(path: "demo-timings-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: timings) }
        let result = try await onThread {
            try runCommand(
                "/usr/bin/env",
                ["BIN=\(BuiltProducts.directory)", "DEMO_TIMINGS=\(timings)", "bash", root + "/scripts/demo"]
            )
        }
        #expect(result.status == 0, "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        for step in [
            "policy v1 from the nodes' verified evidence", "init node 1: cluster ID", "node 2 joined as control plane",
            "node 3 joined as worker", "a policy signed by another key: refused", "verified nodes 1-3",
            "restarted node 3: rejoin opened its disk", "recovery server up", "recovered node 2",
            "node 3 rejoined through node 2", "on every running node",
        ] {
            #expect(lines.contains { $0.contains(step) }, "no step \"\(step)\" in:\n\(result.stdout)")
        }
        // One cluster ID throughout: the init line's is the one every node carries at the end.
        let initLine = try #require(lines.first { $0.contains("init node 1: cluster ID") })
        let clusterID = try #require(initLine.split(separator: " ").first { $0.hasSuffix("…,") }).dropLast(2)
        #expect(lines.last { $0.contains("on every running node") }?.contains(clusterID) == true)
        let recorded = try String(contentsOfFile: timings, encoding: .utf8)
        for name in ["init_to_ready", "start_to_joined", "restart_to_disk_opened"] {
            #expect(recorded.contains(name + " "), "\(recorded)")
        }
        // Nothing left: the namespaces and bridge named on the first line, the work directory.
        let network = try #require(lines.first { $0.contains("network: bridge") })
        let made = network.split(separator: " ").map(String.init).filter { $0.hasPrefix("ast") }
        #expect(made.count == 4, "\(network)")
        let namespaces = try await runCommand("/usr/sbin/ip", ["netns", "list"]).stdout
        let links = try await runCommand("/usr/sbin/ip", ["-o", "link"]).stdout
        for name in made { #expect(!namespaces.contains(name) && !links.contains(name), "\(name) left behind") }
        let keyLine = try #require(lines.first { $0.contains("operator key") })
        let keyPath = try #require(keyLine.split(separator: "(").last?.split(separator: ",").first)
        let workDirectory = URL(fileURLWithPath: String(keyPath)).deletingLastPathComponent()
            .deletingLastPathComponent().path
        #expect(workDirectory.hasPrefix("/tmp/asterism-demo."), "\(keyLine)")
        #expect(!FileManager.default.fileExists(atPath: workDirectory), "\(workDirectory) left behind")
    }
}
