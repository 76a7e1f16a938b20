"""The search API's metrics, served at its own `/metrics` (no key: like the probes, it holds
no data, and the deployment's network policy decides who reaches it). Labels are the route's
template, never the path, so `/v1/documents/{source_key}` is one series whatever the keys."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METRICS_PATH = "/metrics"
# The 200 ms target of the API on a bucket edge.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS"})


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "sophia_api_requests",
            "Requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sophia_api_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "sophia_api_requests_in_flight", "Requests being answered now.", registry=self.registry
        )
        self.rate_limited = Counter(
            "sophia_api_rate_limited",
            "Requests refused with 429 by the per-key rate limit.",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Instrumented:
    """The outermost ASGI layer: times and counts every request (refusals included) and
    answers GET /metrics itself."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: list[BaseRoute]):
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the application's, to name the route of a refused request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == METRICS_PATH and scope["method"] == "GET":
            await self._expose(send)
            return
        status = 500  # what the client sees if the app fails before it answers
        started = time.perf_counter()

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed)
        finally:
            self.metrics.in_flight.dec()
            route = self._route_template(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            if status == 429:
                self.metrics.rate_limited.inc()

    async def _expose(self, send: Send) -> None:
        body = self.metrics.exposition()
        headers = [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length",
                   str(len(body)).encode())]  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _route_template(self, scope: Scope) -> str:
        """The route's template. A request the guard refused never reached routing, so it is
        matched here; `unmatched` when no route has the path (a 404)."""
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] != Match.NONE), None)
        return getattr(route, "path", None) or "unmatched"
