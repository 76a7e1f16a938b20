"""End to end with the real processes: `sophia flow serve`, `dagster-daemon` and
`dagster-webserver` on loopback over a temporary DAGSTER_HOME. A row committed to
public.documents becomes searchable with no manual step: the Estuary sensor starts the
embedding run, the automation sensor the index run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

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
        bin_dir = Path(sys.executable).parent
        processes.append(
            _start([str(bin_dir / "sophia"), "flow", "serve"], env, tmp_path / "serve.log")
        )
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
        while not _indexed(url, "20:0"):  # the seeded rows flow in first
            assert time.monotonic() < deadline, _logs(tmp_path)
            assert all(p.poll() is None for p in processes), _logs(tmp_path)
            threading.Event().wait(0.5)

        sql(
            url,
            "INSERT INTO documents (id, title, body) VALUES (1000, 'Lighthouse keeping', "
            "'How a lighthouse keeper trims the lamp wick and winds the clockwork.')",
        )
        committed = time.monotonic()
        while not _indexed(url, "1000:0"):
            assert time.monotonic() < deadline, _logs(tmp_path)
            threading.Event().wait(0.2)
        seconds = time.monotonic() - committed
        print(f"\ncommit to searchable: {seconds:.1f} s")
        runs = sql(url, "SELECT count(*) FROM flow.checkpoints WHERE task LIKE 'derive:%%'")
        assert runs == [(1,)]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        drop_database(url)


def _logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(tmp_path.glob("*.log"))
    )
