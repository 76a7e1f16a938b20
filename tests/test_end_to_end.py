"""End to end with the real processes: `sophia flow serve`, `dagster-daemon` and
`dagster-webserver` on loopback over a temporary DAGSTER_HOME. A row committed to
public.documents becomes searchable with no manual step, on both paths:
- live: serve embeds and indexes it itself, and the Estuary sensor reports the derived
  collection and the index as runless materializations, with the latency check evaluated;
- batch: with serve capturing only, the Estuary sensor starts the embedding run and the
  automation sensor the index run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from tests.support.cdc import catalog_copy, drop_database, new_database, sql
from tests.support.paths import REPO

pytestmark = pytest.mark.e2e


TIMEOUT_S = 240


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _indexed(url: str, vector_id: str) -> bool:
    try:
        return bool(
            sql(url, 'SELECT 1 FROM vectors."sophia-ai-vectors" WHERE id = %s', params=(vector_id,))
        )
    except psycopg2.Error:
        return False  # the index table does not exist yet


def test_a_committed_row_becomes_searchable_without_a_manual_step(
    postgres_url: str, tmp_path: Path, shared_home: Path
) -> None:
    from sophia_assets.demo.corpus import load_corpus
    from sophia_assets.demo.seed import seed_documents

    url = new_database(postgres_url)
    processes: list[subprocess.Popen] = []
    try:
        seed_documents(url, load_corpus(shared_home / "cache"), rows=20)
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "SOPHIA_POSTGRES_URL": url,
            "SOPHIA_FLOW_SPECS": str(catalog_copy(tmp_path, slot="e2e_slot")),
            "SOPHIA_EMBED_MAX_WAIT_S": "0",
            "SOPHIA_HOME": str(tmp_path / "sophia"),
        }
        # The instance's storage is made here, before the daemon and the webserver start:
        # made by them and this test at once, SQLite's migrations can collide.
        instance = dg.DagsterInstance.from_config(str(home))
        bin_dir = Path(sys.executable).parent
        serve = _start([str(bin_dir / "sophia"), "flow", "serve"], env, tmp_path / "serve.log")
        processes.append(serve)
        processes.append(
            _start(
                [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                env,
                tmp_path / "daemon.log",
            )
        )
        processes.append(
            _start(
                [
                    str(bin_dir / "dagster-webserver"),
                    "-w",
                    "workspace.yaml",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    "0",
                ],
                env,
                tmp_path / "webserver.log",
            )
        )

        deadline = time.monotonic() + TIMEOUT_S
        wait = _waiter(deadline, processes, tmp_path)
        wait(lambda: _indexed(url, "20:0"))  # the seeded rows flow in first
        runs_before = _embedding_runs(instance)  # a tick before serve had loaded its model

        # The live path: serve embeds and indexes the row; no run is involved.
        seconds = _commit_until_searchable(url, 1000, "Lighthouse keeping", wait)
        print(f"\nlive path, commit to searchable: {seconds * 1000:.0f} ms")
        index_key = dg.AssetKey(["pinecone", "sophia-ai-vectors"])
        wait(lambda: _served_report(instance, index_key, minimum_offset=1))
        # stored just after the materialization the sensor reported it with
        check_key = dg.AssetCheckKey(index_key, "searchable_latency_p99")
        wait(
            lambda: instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])
        )
        assert _embedding_runs(instance) == runs_before, _logs(tmp_path)  # serve did the work

        # The batch path: serve captures only; the sensors start the runs.
        serve.terminate()
        serve.wait(timeout=60)
        processes.remove(serve)
        processes.append(
            _start(
                [str(bin_dir / "sophia"), "flow", "serve", "--captures-only"],
                env,
                tmp_path / "serve-captures.log",
            )
        )
        seconds = _commit_until_searchable(url, 1001, "Clockwork lamps", wait)
        print(f"batch path, commit to searchable: {seconds:.1f} s")
        assert _embedding_runs(instance) > runs_before, _logs(tmp_path)
        runs = sql(url, "SELECT count(*) FROM flow.checkpoints WHERE task LIKE 'derive:%%'")
        assert runs == [(1,)], _logs(tmp_path)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        drop_database(url)


def _waiter(deadline: float, processes: list[subprocess.Popen], tmp_path: Path):
    def wait(condition) -> None:
        while not condition():
            assert time.monotonic() < deadline, _logs(tmp_path)
            assert all(p.poll() is None for p in processes), _logs(tmp_path)
            threading.Event().wait(0.05)

    return wait


def _commit_until_searchable(url: str, doc_id: int, title: str, wait) -> float:
    sql(
        url,
        "INSERT INTO documents (id, title, body) VALUES (%s, %s, "
        "'How a lighthouse keeper trims the lamp wick and winds the clockwork.')",
        params=(doc_id, title),
    )
    committed = time.monotonic()
    wait(lambda: _indexed(url, f"{doc_id}:0"))
    return time.monotonic() - committed


def _served_report(instance, key, minimum_offset: int) -> bool:
    """The sensor reported `key` as maintained by serve, up to at least `minimum_offset`. Not
    only the latest event: automation's first run of the never-materialized index may land
    after the sensor's report."""
    result = instance.fetch_materializations(key, limit=100)
    for record in result.records:
        materialization = record.asset_materialization
        if materialization is None or "flow serve" not in (materialization.description or ""):
            continue
        if materialization.metadata["applied_offset"].value >= minimum_offset:
            return True
    return False


def _embedding_runs(instance) -> int:
    return len(instance.get_runs(filters=dg.RunsFilter(job_name="embed")))


def _logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(tmp_path.glob("*.log"))
    )
