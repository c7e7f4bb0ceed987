"""Prometheus metrics of `serve` at GET /metrics, through the official prometheus-client, and the access log.

    mnist_keras_requests_total{route, model, code}        requests answered
    mnist_keras_request_errors_total{route, model, code}  of those, the 4xx and 5xx
    mnist_keras_request_seconds{route, model}             latency, request start to the answer's last byte
    mnist_keras_batch_size{model, version}                images per model call
    mnist_keras_queue_depth{model, version}               requests waiting for a model call (read when scraped)
    mnist_keras_model_version_served{model, version}      1 per version served
    mnist_keras_ready                                     1 when every model is loaded and the server not draining
`route` is the endpoint's name (predict, classify, infer, ...; "unmatched" for unknown paths) and `model` a served
model's name or "" (an unknown name in a URL makes no new series). The access log is one line per request on
stdout, written in batches at most FLUSH_SECONDS apart (a write per request would cost the event loop more
than the request's metrics).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .repository import Repository
from .served import ServedModel

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
FLUSH_SECONDS = 0.1


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
        self._children: dict[tuple, tuple] = {}

    def count(self, route: str, model: str, status: int, seconds: float) -> None:
        """One request answered: its count, its error if it is one, its latency."""
        key = (route, model, status)
        children = self._children.get(key)
        if children is None:  # the labelled series, looked up once per (route, model, code)
            code = str(status)
            children = self._children[key] = (self.requests.labels(route, model, code),
                                              self.errors.labels(route, model, code) if status >= 400 else None,
                                              self.latency.labels(route, model))
        children[0].inc()
        if children[1]:
            children[1].inc()
        children[2].observe(seconds)

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
    (`client "METHOD path" code milliseconds`) into `access_log`, if there is one."""

    def __init__(self, app, metrics: Metrics, access_log: "AccessLog | None"):
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
        self.metrics.count(route, name if name in self.metrics.repository.served else "", status, seconds)
        if self.access_log:
            client = scope.get("client") or ("-", 0)
            query = scope.get("query_string", b"")
            path = scope["path"] + (f"?{query.decode('latin-1')}" if query else "")
            self.access_log.add(f'{client[0]}:{client[1]} "{scope["method"]} {path[:200]}" {status} '
                                f'{seconds * 1000:.1f} ms\n')


class AccessLog:
    """Lines for stdout, held for at most FLUSH_SECONDS and written together (call flush() at the end)."""

    def __init__(self):
        self._lines: list[str] = []

    def add(self, line: str) -> None:
        if not self._lines:
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
        self._lines.append(line)

    def flush(self) -> None:
        """Write the access-log lines held so far to stdout."""
        lines, self._lines = self._lines, []
        if lines:
            sys.stdout.write("".join(lines))
            sys.stdout.flush()
