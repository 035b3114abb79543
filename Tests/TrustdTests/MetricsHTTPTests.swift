import AsterismProto
import Foundation
import GRPCCore
import Testing
import Trustd
import TrustdCore

/// `/metrics` scraped over HTTP after real calls.
@Suite struct MetricsHTTPTests {
    /// Runs `body` with a metrics listener for `metrics` on a loopback port.
    func withMetricsServer(_ metrics: TrustdMetrics, _ body: (Int) async throws -> Void) async throws {
        let server = try await MetricsHTTPServer.bind(
            host: "127.0.0.1",
            port: 0,
            metrics: metrics,
            limits: patientLimits,
            group: testEventLoops
        )
        try await serving(server, body)
    }

    @Test func scrapeShowsTheCallsMade() async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source)
        try await fixture.withGRPC { verify in
            for _ in 0..<3 {
                let request = attestationRequest()
                _ = try await verify.getAttestation(request)
            }
            let bad = attestationRequest([1, 2, 3])
            await #expect(throws: RPCError.self) { _ = try await verify.getAttestation(bad) }
        }
        try await fixture.withHTTP { port in
            let answer = try await rawHTTP(
                port: port,
                "GET /?nonce=\(base64URL(randomNonce())) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            #expect(answer.status == 200)
        }
        let metrics = fixture.metrics
        metrics.joinTicket(.issued, reason: "ok")
        metrics.joinTicket(.issued, reason: "ok")
        metrics.joinTicket(.refused, reason: "evidence_rejected")
        metrics.releaseSeconds.record(0.003)
        metrics.releaseSeconds.record(0.2)
        metrics.keydRoundTripSeconds.record(0.0007)

        try await withMetricsServer(metrics) { port in
            let answer = try await rawHTTP(port: port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect(answer.status == 200)
            #expect(answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
            let text = answer.text
            let expected: [(String, Double)] = [
                (#"trustd_verification_requests_total{transport="grpc",outcome="ok"}"#, 3),
                (#"trustd_verification_requests_total{transport="grpc",outcome="invalid"}"#, 1),
                (#"trustd_verification_requests_total{transport="http",outcome="ok"}"#, 1),
                (#"trustd_admission_rejections_total{service="verification",reason="queue_full"}"#, 0),
                (#"trustd_admission_in_flight{service="verification"}"#, 0),
                (#"trustd_join_tickets_total{outcome="issued",reason="ok"}"#, 2),
                (#"trustd_join_tickets_total{outcome="refused",reason="evidence_rejected"}"#, 1),
                (#"trustd_release_seconds_bucket{le="0.005"}"#, 1),
                (#"trustd_release_seconds_bucket{le="0.25"}"#, 2),
                (#"trustd_release_seconds_count"#, 2),
                (#"trustd_keyd_roundtrip_seconds_bucket{le="0.001"}"#, 1),
                // This scrape's own connection, counted as it was accepted.
                (#"trustd_open_connections{listener="metrics"}"#, 1),
            ]
            for (series, value) in expected {
                #expect(sample(series, in: text) == value, "\(series)")
            }
            #expect(text.contains("# TYPE trustd_release_seconds histogram"))
            #expect(text.contains("# HELP trustd_join_tickets_total "))
        }
        // The source was asked only for the good requests.
        #expect(source.calls == 4)
    }

    @Test(arguments: [("GET", "/", 404), ("GET", "/metricsx", 404), ("POST", "/metrics", 405)])
    func onlyGetMetrics(method: String, target: String, status: Int) async throws {
        try await withMetricsServer(TrustdMetrics()) { port in
            let answer = try await rawHTTP(port: port, "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect(answer.status == status)
        }
    }
}
