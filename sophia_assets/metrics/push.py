"""Figures of work that does not live long enough to be scraped (a Dagster run's step, a
sensor's tick), pushed to a Prometheus Pushgateway as gauges. Each push replaces its group
(PUT), so a group holds the figures of the latest push only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler


@dataclass(frozen=True)
class Figure:
    help: str
    value: float


def push_figures(
    gateway: str,
    job: str,
    grouping: Mapping[str, str],
    figures: Mapping[str, Figure],
    timeout_s: float,
) -> None:
    """One PUT of `figures` (name -> Figure) to the group `job` + `grouping`, whose labels
    Prometheus attaches to every series (scrape the gateway with honor_labels)."""
    registry = CollectorRegistry()  # fresh: a group is replaced whole, never merged
    for name, figure in figures.items():
        Gauge(name, figure.help, registry=registry).set(figure.value)
    address, handler = _address_and_handler(gateway)
    push_to_gateway(
        address,
        job=job,
        registry=registry,
        grouping_key=dict(grouping),
        timeout=timeout_s,
        handler=handler,
    )


def _address_and_handler(gateway: str):
    """A gateway URL's `user:password@` becomes HTTP basic auth: urllib would take it for
    part of the host (and put the password in its error)."""
    parts = urlsplit(gateway if "://" in gateway else f"http://{gateway}")
    if parts.username is None:
        return gateway, default_handler
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    address = urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    handler = partial(
        basic_auth_handler,
        username=unquote(parts.username),
        password=unquote(parts.password or ""),
    )
    return address, handler
