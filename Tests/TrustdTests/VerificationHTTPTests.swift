import Attestation
import Foundation
import ServiceLifecycle
import Testing
import TrustdCore

@testable import Trustd

/// Constellation's HTTP form of VerificationService, spoken to over a raw TCP socket.
@Suite struct VerificationHTTPTests {
    /// A GET request line and the headers a client sends.
    static func get(_ target: String, method: String = "GET") -> String {
        "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: trustd-tests\r\n\r\n"
    }

    @Test func goodRequestAnswersTheDocumentAsJSON() async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source)
        try await fixture.withHTTP { port in
            let nonce = randomNonce()
            let answer = try await rawHTTP(port: port, Self.get("/?nonce=\(base64URL(nonce))"))
            #expect(answer.status == 200)
            #expect(answer.headers["content-type"] == "application/json")
            #expect(answer.headers["connection"] == "close")
            #expect(answer.headers["content-length"] == String(answer.body.count))
            // Exactly one member, `data`, standard base64 with its slashes unescaped, and Go's newline.
            #expect(answer.body.last == 0x0A)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: String])
            #expect(Array(object.keys) == ["data"])
            #expect(!answer.text.contains(#"\/"#))
            let data = try #require(object["data"])
            let document = try #require(Data(base64Encoded: data))
            let validated = try source.validator.validate(document: Array(document), nonce: nonce, at: Date())
            #expect(validated.userData == VerificationUserData.constellation)
        }
    }

    @Test func clientThatShutsItsSideGetsTheAnswer() async throws {
        let fixture = VerificationFixture(source: FakeAttestationSource())
        try await fixture.withHTTP { port in
            let target = "/?nonce=\(base64URL(randomNonce()))"
            let answer = try await rawHTTP(port: port, Self.get(target), halfClose: true)
            #expect(answer.status == 200)
            // Half a request and the end of input: a truncated request, 400 from NIO's decoder.
            let partial = try await rawHTTP(port: port, "GET /?nonce=", halfClose: true)
            #expect(partial.status == 400)
        }
    }

    @Test func percentEncodedPaddingIsDecoded() async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source)
        try await fixture.withHTTP { port in
            let nonce = randomNonce()
            let target = "/?nonce=" + base64URL(nonce).replacingOccurrences(of: "=", with: "%3D")
            let answer = try await rawHTTP(port: port, Self.get(target))
            #expect(answer.status == 200)
        }
    }

    @Test(arguments: [
        ("/?nonce=!!!!", "nonce is not base64url with padding"),
        // Standard base64's `+` and `/` are not base64url.
        (
            "/?nonce=" + Data([0xFB, 0xFF, 0xBF] + [UInt8](repeating: 0, count: 29)).base64EncodedString(),
            "nonce is not base64url with padding"
        ),
        // Unpadded base64url (43 characters for 32 bytes).
        ("/?nonce=" + String(base64URL(randomNonce()).dropLast()), "nonce is not base64url with padding"),
        ("/?nonce=" + base64URL([UInt8](repeating: 1, count: 16)), "nonce must be 32 bytes"),
        ("/?nonce=" + base64URL([UInt8](repeating: 1, count: 33)), "nonce must be 32 bytes"),
        ("/", "nonce parameter is required exactly once"),
        ("/?nonce=", "nonce parameter is required exactly once"),
        (
            "/?nonce=\(base64URL(randomNonce()))&nonce=\(base64URL(randomNonce()))",
            "nonce parameter is required exactly once"
        ),
    ])
    func badNonceIsRefused(target: String, message: String) async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source)
        try await fixture.withHTTP { port in
            let answer = try await rawHTTP(port: port, Self.get(target))
            #expect(answer.status == 400)
            #expect(answer.text == message + "\n")
            #expect(answer.headers["content-type"] == "text/plain; charset=utf-8")
        }
        #expect(source.calls == 0)
    }

    @Test(arguments: [
        ("POST", "/?nonce=AAAA", 405),
        ("PUT", "/", 405),
        ("GET", "/metrics", 404),
        ("GET", "/attestation?nonce=AAAA", 404),
    ])
    func wrongMethodOrPath(method: String, target: String, status: Int) async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source)
        try await fixture.withHTTP { port in
            let answer = try await rawHTTP(port: port, Self.get(target, method: method))
            #expect(answer.status == status)
            if status == 405 { #expect(answer.headers["allow"] == "GET") }
        }
        #expect(source.calls == 0)
    }

    @Test func oversizeHeaderIsRefused() async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source)
        var limits = patientLimits
        limits.maxRequestBytes = 4096
        try await fixture.withHTTP(limits: limits) { port in
            let request =
                "GET /?nonce=\(base64URL(randomNonce())) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + "X-Padding: \(String(repeating: "a", count: 5000))\r\n\r\n"
            let answer = try await rawHTTP(port: port, request)
            #expect(answer.status == 431)
        }
        #expect(source.calls == 0)
    }

    @Test func malformedRequestIsBadRequest() async throws {
        let fixture = VerificationFixture(source: FakeAttestationSource())
        try await fixture.withHTTP { port in
            let answer = try await rawHTTP(port: port, "NOT HTTP AT ALL\r\n\r\n")
            #expect(answer.status == 400)
        }
    }

    @Test func rateLimitedSourceGets429WhileAnotherSourceIsServed() async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source, ratePerSecond: 1, burst: 1)
        try await fixture.withHTTP { port in
            let first = try await rawHTTP(port: port, Self.get("/?nonce=\(base64URL(randomNonce()))"))
            #expect(first.status == 200)
            let limited = try await rawHTTP(port: port, Self.get("/?nonce=\(base64URL(randomNonce()))"))
            #expect(limited.status == 429)
            #expect(limited.headers["retry-after"] == "1")
            #expect(limited.headers["retry-after-ms"] == "1000")
            #expect(limited.text == "busy; retry later\n")
            // Another loopback address is another source with its own bucket.
            let other = try await rawHTTP(
                port: port,
                Self.get("/?nonce=\(base64URL(randomNonce()))"),
                localHost: "127.0.0.2"
            )
            #expect(other.status == 200)
        }
        #expect(source.calls == 2)
    }

    @Test func slowEvidenceIsCutOffAtTheAnswerDeadline() async throws {
        let source = GatedAttestationSource()
        let fixture = VerificationFixture(source: source)
        var limits = patientLimits
        limits.answerTimeout = .milliseconds(200)
        try await fixture.withHTTP(limits: limits) { port in
            // The source never answers while the client waits: the server closes without an answer.
            let received = try await rawBytes(port: port, Self.get("/?nonce=\(base64URL(randomNonce()))"))
            #expect(received.isEmpty)
        }
        // Whether or not the call reached the source before the close cancelled it, let it finish.
        source.open()
    }

    @Test func connectionsBeyondTheCapAreClosed() async throws {
        let source = GatedAttestationSource()
        let fixture = VerificationFixture(source: source)
        var limits = patientLimits
        limits.maxConnections = 2
        try await fixture.withHTTP(limits: limits) { port in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        try await rawHTTP(port: port, Self.get("/?nonce=\(base64URL(randomNonce()))")).status
                    }
                }
                // Both connections are open and waiting for evidence: a third one is closed unanswered.
                await source.waitUntilStarted(2)
                // (The client may see the close before its write: then the write fails.)
                let refused = try? await rawBytes(port: port, Self.get("/?nonce=\(base64URL(randomNonce()))"))
                #expect(refused?.isEmpty ?? true)
                source.open()
                for try await status in group { #expect(status == 200) }
            }
        }
        #expect(source.inner.calls == 2)
    }

    @Test(arguments: [
        ("AA==", [UInt8(0)]),
        ("AAA=", [0, 0]),
        ("AAAA", [0, 0, 0]),
        ("-_-_", [0xFB, 0xFF, 0xBF]),
        ("", []),
    ])
    func base64URLDecodes(text: String, bytes: [UInt8]) {
        #expect(VerificationHTTPServer.decodeBase64URL(text) == bytes)
    }

    @Test(arguments: ["A===", "AA=A", "AA", "+/+/", "AA==AA==", "AA%3D", String(repeating: "A", count: 68)])
    func base64URLRefuses(text: String) {
        #expect(VerificationHTTPServer.decodeBase64URL(text) == nil)
    }

    @Test func gracefulShutdownLetsTheCallInFlightFinish() async throws {
        let source = GatedAttestationSource()
        let fixture = VerificationFixture(source: source)
        let server = try await VerificationHTTPServer.bind(
            host: "127.0.0.1",
            port: 0,
            service: fixture.service,
            metrics: fixture.metrics,
            limits: patientLimits,
            group: testEventLoops
        )
        let port = try #require(server.localAddress?.port)
        let services = ServiceGroup(services: [server], logger: quietLogger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            let inFlight = Task { try await rawHTTP(port: port, Self.get("/?nonce=\(base64URL(randomNonce()))")) }
            await source.waitUntilStarted(1)
            // SIGTERM's path: the listener closes, the call already in the TPM still gets its answer, and
            // run() returns once that connection is done.
            await services.triggerGracefulShutdown()
            source.open()
            #expect(try await inFlight.value.status == 200)
            try await group.waitForAll()
        }
    }

    @Test func silentClientIsDisconnectedAtTheRequestDeadline() async throws {
        let fixture = VerificationFixture(source: FakeAttestationSource())
        var limits = patientLimits
        limits.requestTimeout = .milliseconds(200)
        try await fixture.withHTTP(limits: limits) { port in
            // Half a request head and then nothing: the server closes without an answer.
            let received = try await rawBytes(port: port, "GET /?nonce=")
            #expect(received.isEmpty)
        }
    }
}
