import Prometheus
import TrustdCore

/// trustd's Prometheus metrics, in one registry that `/metrics` serves. Every metric is made through the
/// registry here, with its help text in one place (the registry traps on a second, different help text);
/// the library never bootstraps the global MetricsSystem. Label values are fixed words chosen by trustd,
/// never text from a peer, so the number of series stays bounded.
public final class TrustdMetrics: Sendable {
    /// The registry `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    /// `trustd_release_seconds`: a join or rejoin ticket's release through keyd, request to answer.
    public let releaseSeconds: ValueHistogram
    /// `trustd_keyd_roundtrip_seconds`: one request to keyd and its answer (KeydGateway's `observe`).
    public let keydRoundTripSeconds: ValueHistogram

    /// How a join or rejoin ticket request ended.
    public enum TicketOutcome: String, Sendable {
        /// A ticket was issued.
        case issued
        /// The request was refused.
        case refused
    }

    /// A VerificationService transport.
    public enum VerificationTransport: String, Sendable {
        /// `verify.API/GetAttestation` over gRPC.
        case grpc
        /// Constellation's `GET /?nonce=` form.
        case http
    }

    /// How a VerificationService request ended.
    public enum VerificationOutcome: String, Sendable, CaseIterable {
        /// Evidence was returned.
        case ok
        /// The request was malformed (nonce size, encoding, method, path).
        case invalid
        /// Admission control or keyd's own limits refused it.
        case busy
        /// keyd could not produce evidence.
        case unavailable
    }

    /// Release latency buckets in seconds (sealed release goal: p99 ≤ 50 ms).
    static let releaseBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    /// keyd round-trip buckets in seconds (a TPM quote takes 50–100 ms).
    static let keydBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5]

    /// Metrics in `registry` (a new one by default).
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        releaseSeconds = registry.makeValueHistogram(
            descriptor: Self.descriptor(
                "trustd_release_seconds",
                "Time from a join or rejoin ticket request to keyd's release answer"
            ),
            buckets: Self.releaseBuckets
        )
        keydRoundTripSeconds = registry.makeValueHistogram(
            descriptor: Self.descriptor("trustd_keyd_roundtrip_seconds", "Time of one request to keyd and its answer"),
            buckets: Self.keydBuckets
        )
    }

    /// `trustd_join_tickets_total{outcome, reason}`: counts one ticket request; `reason` is a fixed word
    /// (`ok`, or the refusal's short name such as `evidence_rejected`).
    public func joinTicket(_ outcome: TicketOutcome, reason: String) {
        registry.makeCounter(
            descriptor: Self.descriptor(
                "trustd_join_tickets_total",
                "Join and rejoin ticket requests by outcome and reason"
            ),
            labels: [("outcome", outcome.rawValue), ("reason", reason)]
        ).increment()
    }

    /// `trustd_admission_rejections_total{service, reason}` for the gate named `service`.
    public func admissionRejections(service: String, reason: AdmissionRefusalReason) -> Counter {
        registry.makeCounter(
            descriptor: Self.descriptor(
                "trustd_admission_rejections_total",
                "Calls refused by admission control, by gate and reason"
            ),
            labels: [("service", service), ("reason", reason.rawValue)]
        )
    }

    /// `trustd_admission_in_flight{service}`: calls the gate named `service` runs now.
    public func admissionInFlight(service: String) -> Gauge {
        registry.makeGauge(
            descriptor: Self.descriptor("trustd_admission_in_flight", "Calls running past admission control"),
            labels: [("service", service)]
        )
    }

    /// `trustd_admission_queued{service}`: calls waiting in the gate named `service`.
    public func admissionQueued(service: String) -> Gauge {
        registry.makeGauge(
            descriptor: Self.descriptor("trustd_admission_queued", "Calls waiting for admission"),
            labels: [("service", service)]
        )
    }

    /// `trustd_open_connections{listener}`: connections open now on the listener named `listener`.
    public func openConnections(listener: String) -> Gauge {
        registry.makeGauge(
            descriptor: Self.descriptor("trustd_open_connections", "Client connections open now, by listener"),
            labels: [("listener", listener)]
        )
    }

    /// `trustd_verification_requests_total{transport, outcome}`: counts one VerificationService request.
    public func verificationRequests(_ transport: VerificationTransport, _ outcome: VerificationOutcome) -> Counter {
        registry.makeCounter(
            descriptor: Self.descriptor(
                "trustd_verification_requests_total",
                "VerificationService requests by transport and outcome"
            ),
            labels: [("transport", transport.rawValue), ("outcome", outcome.rawValue)]
        )
    }

    /// The registry in Prometheus' text exposition format (version 0.0.4).
    public func exposition() -> [UInt8] { registry.emitToBuffer() }

    /// A descriptor whose full name is `name` (no namespace or unit parts).
    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}
