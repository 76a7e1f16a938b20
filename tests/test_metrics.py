"""The metrics engine on its own (fast): where it serves, what a scrape of a serve process
holds before any database answers, and the histograms' seconds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sophia_assets.metrics.exposition import (
    Address,
    MetricsAddressError,
    metrics_address,
    serve_metrics,
)
from sophia_assets.metrics.serve import ServeMetrics, TaskFigures, WatchedTask


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", Address("127.0.0.1", 9464)),
        (":0", Address("0.0.0.0", 0)),
        ("[::1]:9000", Address("::1", 9000)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_the_address_is_host_port_or_off(text: str, expected: Address | None) -> None:
    assert metrics_address(text) == expected


def test_the_default_address_is_loopback_9464(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOPHIA_METRICS_ADDR")
    assert metrics_address() == Address("127.0.0.1", 9464)


@pytest.mark.parametrize("text", ["9464", "localhost:port", "127.0.0.1:70000"])
def test_a_bad_address_names_the_variable_and_the_form(text: str) -> None:
    with pytest.raises(MetricsAddressError, match=r"SOPHIA_METRICS_ADDR=.*127\.0\.0\.1:9464"):
        metrics_address(text)


def test_a_port_in_use_says_which_variable_moves_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsAddressError, match="SOPHIA_METRICS_ADDR"):
            serve_metrics(CollectorRegistry(), Address("127.0.0.1", port))


def _scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    bound = serve_metrics(registry, Address("127.0.0.1", 0))
    with urllib.request.urlopen(f"http://{bound}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_scrape_reads_each_tasks_figures_and_says_when_the_journal_is_down() -> None:
    registry = CollectorRegistry()
    with socket.socket() as closed:  # a port nothing listens on: the database is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    metrics = ServeMetrics(registry, f"postgresql://nobody@127.0.0.1:{port}/none")
    figures = TaskFigures(12, 3400, 1, 4, 2, True)
    metrics.watch(WatchedTask("sophia/source-postgres", lambda: figures))
    metrics.captured("sophia/source-postgres", 1000.080, [1000_000, 1000_050, 1001_000])
    samples = _scrape(registry)
    task = (("task", "sophia/source-postgres"),)
    assert samples[("sophia_flow_documents_total", task)] == 12
    assert samples[("sophia_flow_bytes_total", task)] == 3400
    assert samples[("sophia_flow_quarantined_total", task)] == 1
    assert samples[("sophia_flow_reconnects_total", task)] == 2
    assert samples[("sophia_flow_task_serving", task)] == 1
    assert samples[("sophia_flow_journal_up", ())] == 0
    # 80 ms and 30 ms after their source commits; a clock behind the source counts as 0.
    latency = "sophia_flow_capture_latency_seconds"
    assert samples[(f"{latency}_count", task)] == 3
    assert samples[(f"{latency}_sum", task)] == pytest.approx(0.110)
    assert samples[(f"{latency}_bucket", (("le", "0.05"), *task))] == 2
    assert samples[(f"{latency}_bucket", (("le", "0.1"), *task))] == 3


def test_serve_on_a_taken_port_exits_saying_which_variable_moves_it() -> None:
    sophia = Path(sys.executable).parent / "sophia"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {
            **os.environ,
            "SOPHIA_METRICS_ADDR": address,
            "SOPHIA_POSTGRES_URL": "postgresql://nobody@127.0.0.1:1/none",  # never reached
        }
        result = subprocess.run(
            [str(sophia), "flow", "serve"], env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"cannot serve metrics on {address}" in result.stderr
    assert "set SOPHIA_METRICS_ADDR to a free host:port, or 'off'" in result.stderr
