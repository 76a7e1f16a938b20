"""Figures of work that does not live long enough to be scraped (a Dagster run's step, a
sensor's tick), pushed to a Prometheus Pushgateway as gauges. Each push replaces its group
(PUT), so a group holds the figures of the latest push only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway


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
    push_to_gateway(gateway, job=job, registry=registry, grouping_key=dict(grouping),
                    timeout=timeout_s)  # fmt: skip
