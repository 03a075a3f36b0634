"""Prometheus metrics on the app's own registry (several apps in one process never collide).

With several workers (PROMETHEUS_MULTIPROC_DIR set before they start) each process writes its
values to files there and /metrics adds them up, so any worker answers for all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MODEL_LABELS = ("backend", "base_model", "adapter", "adapter_version")


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gateway_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("gateway_request_latency_seconds", "Gateway latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("gateway_time_to_first_token_seconds", "Streamed answers: request to first token",
                                     ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.backend_latency = Histogram("gateway_backend_latency_seconds", "Backend generation latency", ["backend"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("gateway_in_flight_requests", "Requests being served now", registry=r,
                               multiprocess_mode="livesum")
        self.tokens = Counter("gateway_tokens", "Tokens in prompts (in) and answers (out)", ["direction"], registry=r)
        self.errors = Counter("gateway_errors", "Failed requests by kind", ["kind"], registry=r)
        # a gauge at 1, not an Info: Info cannot be shared across worker processes
        self.model = Gauge("gateway_model_info", "The served base model and active adapter (1)", MODEL_LABELS,
                           registry=r, multiprocess_mode="livemax")
        self.rollouts = Counter("gateway_adapter_switches", "Active adapter switches", registry=r)
        self._model_labels: tuple[str, ...] | None = None

    def set_model(self, *labels: str) -> None:
        if self._model_labels is not None and self._model_labels != labels:
            self.model.labels(*self._model_labels).set(0)  # with workers, its file keeps a label set once written:
            self.model.remove(*self._model_labels)          # 0 there; gone here
        self.model.labels(*labels).set(1)
        self._model_labels = labels

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
