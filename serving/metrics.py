"""Prometheus metrics on the app's own registry (several apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gateway_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("gateway_request_latency_seconds", "Gateway latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.backend_latency = Histogram("gateway_backend_latency_seconds", "Backend generation latency", ["backend"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("gateway_in_flight_requests", "Requests being served now", registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens in prompts (in) and answers (out)", ["direction"], registry=r)
        self.errors = Counter("gateway_errors", "Failed requests by kind", ["kind"], registry=r)
        self.model = Info("gateway_model", "The served base model and active adapter", registry=r)
        self.rollouts = Counter("gateway_adapter_switches", "Active adapter switches", registry=r)
