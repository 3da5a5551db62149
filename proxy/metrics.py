"""Prometheus metrics and the per-request timing middleware.

The middleware (pure ASGI, so streams are not buffered) gives every response an ``x-request-id``
(echoed or generated) and, for the admin key, ``x-obliviate-overhead-ms`` (time in the proxy, excluding
time spent waiting on the backend, up to the moment headers are sent: it differs between requests the
guards matched and those they did not, so client keys get it only with ``client_decision_headers``),
and records when the response ends:
requests by route and status, total latency, upstream time and proxy overhead.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "obliviate_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "obliviate_request_seconds",
            "Total request latency (until the last byte)",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.upstream = Histogram(
            "obliviate_upstream_seconds",
            "Time spent waiting on the backend",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "obliviate_overhead_seconds",
            "Proxy overhead: latency minus backend time",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.stream_errors = Counter(
            "obliviate_stream_errors", "Streams that ended with an error event", ["route"], registry=self.registry
        )
        self.guard_actions = Counter(
            "obliviate_guard_actions",
            "Requests by guard action (pass, refuse, rewrite+suppress, ...)",
            ["action"],
            registry=self.registry,
        )
        self.guard_decisions = Counter(
            "obliviate_guard_decisions",
            "Guard decisions by guard and verdict",
            ["guard", "verdict"],
            registry=self.registry,
        )
        self.output_leaks = Counter(
            "obliviate_output_leaks", "Responses the output guard cut, by signal", ["guard"], registry=self.registry
        )


@dataclass
class Timing:
    """Per-request clock. Code that awaits the backend adds to ``upstream_s``."""

    start: float = field(default_factory=time.perf_counter)
    upstream_s: float = 0.0

    def overhead_s(self, now: float | None = None) -> float:
        return max(0.0, (now or time.perf_counter()) - self.start - self.upstream_s)


def route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class TimingMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, clients_see_overhead: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.clients_see_overhead = clients_see_overhead

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timing = Timing()
        scope.setdefault("state", {})["timing"] = timing
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        scope["state"]["request_id"] = request_id
        status = 500
        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            now = time.perf_counter()
            label = route_label(scope)
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.latency.labels(label).observe(now - timing.start)
            self.metrics.upstream.labels(label).observe(timing.upstream_s)
            self.metrics.overhead.labels(label).observe(timing.overhead_s(now))

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1", "replace")))
                principal = scope["state"].get("principal")
                if principal is not None and (principal.is_admin or self.clients_see_overhead):
                    headers.append((b"x-obliviate-overhead-ms", f"{timing.overhead_s() * 1000:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            record()


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            value = v.decode("latin-1").strip()
            if value and len(value) <= 200 and value.isprintable():
                return value
    return None
