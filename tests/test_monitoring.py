"""`sophia flow serve`'s metrics as an operator reads them: Debian's Prometheus scrapes a
running serve on loopback, with the platform's alert rules loaded, and after a small load
finds every family with values that agree with what the data path did."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sophia_assets.demo.seed import DOCUMENTS_DDL
from tests.support.cdc import catalog_copy, drop_database, flow_process, new_database, sql
from tests.support.metric_families import EXPORTED, HISTOGRAMS
from tests.support.paths import REPO
from tests.support.processes import stop_and_show
from tests.support.prometheus import LoopbackPrometheus
from tests.support.search_api import free_port

pytestmark = pytest.mark.slow

CAPTURE = "sophia/source-postgres"
DERIVE = "derive:sophia/vector_updates"
INDEX = "index:sophia-ai-vectors"
TIMEOUT_S = 120
# serve's own families; a histogram by its buckets
FAMILIES = {
    f"{name}_bucket" if name in HISTOGRAMS else name
    for name in EXPORTED
    if name.startswith("sophia_flow_")
}


@pytest.fixture
def serve(postgres_url: str, tmp_path: Path, shared_model_cache: Path) -> Iterator[tuple[str, str]]:
    """(database URL, metrics address) of a full `sophia flow serve` on a scratch database,
    with the session's ONNX export (made once) in its model cache."""
    url = new_database(postgres_url)
    sql(url, DOCUMENTS_DDL)
    specs = catalog_copy(tmp_path, slot=f"metrics_{tmp_path.name[-12:].lower()}")
    address = f"127.0.0.1:{free_port()}"
    process = flow_process(url, specs, "serve", env={"SOPHIA_METRICS_ADDR": address})
    try:
        _until(lambda: _answers(address), process, "the metrics endpoint")
        yield url, address
    finally:
        stop_and_show(process)
        drop_database(url)


def _answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/metrics", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _until(condition: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert process.poll() is None, f"serve died while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling what another process is doing


def _values(prometheus: LoopbackPrometheus, expr: str) -> dict[str, float]:
    """`expr`'s series by their `task` (or `collection`) label."""
    return {
        r["metric"].get("task", r["metric"].get("collection", "")): float(r["value"][1])
        for r in prometheus.query(expr)
    }


def test_a_real_prometheus_scrapes_serve_and_finds_every_family(serve, tmp_path: Path) -> None:
    url, address = serve
    rules = REPO / "deploy" / "monitoring" / "alerts.yaml"
    targets = {"sophia-flow-serve": address}
    with LoopbackPrometheus(tmp_path / "prometheus", targets, rule_files=[rules]) as prometheus:
        # Changes, not backfilled rows: written once the capture streams from its slot.
        streaming = f'sophia_flow_task_serving{{task="{CAPTURE}"}} == 1'
        prometheus.wait_for(streaming, bool, timeout_s=TIMEOUT_S)
        for n in (1, 2, 3):  # three single-row transactions, then an update and a delete
            sql(url, "INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)",
                params=(n, f"Lamp {n}", f"How keeper {n} trims the wick."))  # fmt: skip
        sql(url, "UPDATE documents SET title = 'Lamp rooms' WHERE id = 1")
        sql(url, "DELETE FROM documents WHERE id = 2")
        searchable = f'sophia_flow_searchable_latency_seconds_count{{task="{INDEX}"}}'
        prometheus.wait_for(
            searchable, lambda r: bool(r) and float(r[0]["value"][1]) >= 2, timeout_s=TIMEOUT_S
        )
        caught_up = 'sophia_flow_lag_documents{task=~"derive:.*|index:.*"}'
        prometheus.wait_for(
            caught_up, lambda r: len(r) == 2 and all(s["value"][1] == "0" for s in r)
        )

        found = {name for name in FAMILIES if prometheus.query(name)}
        assert found == FAMILIES
        assert _values(prometheus, 'up{job="sophia-flow-serve"}') == {"": 1.0}
        assert _values(prometheus, "sophia_flow_task_serving") == {
            CAPTURE: 1.0, DERIVE: 1.0, INDEX: 1.0,
        }  # fmt: skip
        documents = _values(prometheus, "sophia_flow_documents_total")
        assert documents[CAPTURE] >= 5 and documents[DERIVE] >= 5 and documents[INDEX] >= 2
        written = _values(prometheus, "sophia_flow_bytes_total")
        assert written[CAPTURE] > 0 and written[DERIVE] > 0  # the index journals nothing
        assert written[INDEX] == 0
        assert _values(prometheus, "sophia_flow_quarantined_total") == {
            CAPTURE: 0.0, DERIVE: 0.0, INDEX: 0.0,
        }  # fmt: skip
        heads = _values(prometheus, "sophia_flow_journal_offset")
        applied = _values(prometheus, "sophia_flow_task_offset")
        assert applied[DERIVE] == heads["sophia/postgresql_cdc"]
        assert applied[INDEX] == heads["sophia/vector_updates"]
        changes = 'sophia_flow_capture_latency_seconds_count{task="sophia/source-postgres"}'
        assert _values(prometheus, changes)[CAPTURE] >= 2  # the update and the delete
        p99 = _values(
            prometheus,
            "histogram_quantile(0.99, sum by (task, le) "
            "(rate(sophia_flow_capture_latency_seconds_bucket[1m])))",
        )
        assert 0 < p99[CAPTURE] < 10  # seconds, on a loaded 2-core machine
        ages = _values(prometheus, "time() - sophia_flow_last_checkpoint_timestamp_seconds")
        assert set(ages) == {CAPTURE, DERIVE, INDEX} and all(a < TIMEOUT_S for a in ages.values())
        # The platform's alert rules loaded and evaluate on these series without error.
        rules = [rule for group in prometheus.rules() for rule in group["rules"]]
        assert rules and all(rule["health"] == "ok" for rule in rules), rules
