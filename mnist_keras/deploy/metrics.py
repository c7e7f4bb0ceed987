"""Prometheus metrics of `serve` at GET /metrics, through the official prometheus-client, and the access log.

    mnist_keras_requests_total{route, model, code}        requests answered
    mnist_keras_request_errors_total{route, model, code}  of those, the 4xx and 5xx
    mnist_keras_request_seconds{route, model}             latency, request start to the answer's last byte
    mnist_keras_batch_size{model, version}                images per model call
    mnist_keras_queue_depth{model, version}               requests waiting for a model call (read when scraped)
    mnist_keras_model_version_served{model, version}      1 per version served
    mnist_keras_ready                                     1 when every model is loaded and the server not draining
`route` is the endpoint's name (predict, classify, infer, ...; "unmatched" for unknown paths) and `model` a served
model's name or "" (an unknown name in a URL makes no new series).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .repository import Repository
from .served import ServedModel

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
access = logging.getLogger("mnist_keras.access")


class Metrics:
    """The server's metrics, in a registry of their own (two servers in one process do not mix)."""

    def __init__(self, repository: Repository):
        self.repository = repository
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["route", "model", "code"]
        self.requests = Counter("mnist_keras_requests", "Requests answered", labels, registry=self.registry)
        self.errors = Counter("mnist_keras_request_errors", "Requests answered with a 4xx or 5xx", labels,
                              registry=self.registry)
        self.latency = Histogram("mnist_keras_request_seconds", "Seconds from a request's start to its answer's end",
                                 ["route", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("mnist_keras_batch_size", "Images per model call", ["model", "version"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.registry.register(_Served(repository))

    def batch_observer(self, model: ServedModel) -> Callable[[int], None]:
        return self.batch_size.labels(model.name, str(model.version)).observe

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _Served:
    """A collector of what the repository holds now: queue depth, versions served, readiness."""

    def __init__(self, repository: Repository):
        self.repository = repository

    def collect(self):
        depth = GaugeMetricFamily("mnist_keras_queue_depth", "Requests waiting for a model call",
                                  labels=["model", "version"])
        served = GaugeMetricFamily("mnist_keras_model_version_served", "1 per model version served",
                                   labels=["model", "version"])
        for name, servable in self.repository.servables():
            version = str(servable.model.version)
            depth.add_metric([name, version], servable.batcher.queued)
            served.add_metric([name, version], 1)
        yield depth
        yield served
        yield GaugeMetricFamily("mnist_keras_ready", "1 when the server is ready", value=int(self.repository.ready))


class Measured:
    """ASGI middleware: counts and times every HTTP request into `metrics`, and writes one access-log line each
    (`client "METHOD path" code milliseconds model/version`) when the access log is on."""

    def __init__(self, app, metrics: Metrics, access_log: bool):
        self.app, self.metrics, self.access_log = app, metrics, access_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope, status: int, seconds: float) -> None:
        endpoint = scope.get("endpoint")
        route = getattr(endpoint, "__name__", "unmatched")
        name = scope.get("path_params", {}).get("name", "")
        model = name if name in self.metrics.repository.served else ""
        code = str(status)
        self.metrics.requests.labels(route, model, code).inc()
        if status >= 400:
            self.metrics.errors.labels(route, model, code).inc()
        self.metrics.latency.labels(route, model).observe(seconds)
        if self.access_log:
            client = scope.get("client") or ("-", 0)
            query = scope.get("query_string", b"")
            path = scope["path"] + (f"?{query.decode('latin-1')}" if query else "")
            access.info('%s:%s "%s %s" %s %.1f ms', client[0], client[1], scope["method"], path[:200], code,
                        seconds * 1000)
