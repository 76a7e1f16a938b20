"""The embedded server: start, reuse across processes, stop, restart with data, and the
external-server switch."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest

from sophia_assets.postgres.embedded_server import (
    POSTGRES_URL_ENV,
    PostgresStartError,
    postgres_url,
)
from tests.support.postgres import embedded
from tests.support.processes import run_python

pytestmark = pytest.mark.slow


ENSURE_AND_REPORT = (
    "import json, os; from pathlib import Path;"
    "from sophia_assets.postgres.embedded_server import EmbeddedPostgres;"
    "s = EmbeddedPostgres(Path(os.environ['SOPHIA_HOME']));"
    "url = s.ensure_running();"
    "print(json.dumps({'url': url, 'pid': s.status().pid}))"
)


def _query(url: str, sql: str):
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0] if cur.description else None
    finally:
        conn.close()


def test_start_gives_logical_replication_and_pgvector(tmp_path: Path) -> None:
    server = embedded(tmp_path)
    url = server.ensure_running()
    assert _query(url, "SHOW wal_level") == "logical"
    assert _query(url, "SELECT extversion FROM pg_extension WHERE extname = 'vector'") >= "0.8"
    assert _query(url, "SELECT current_setting('server_version_num')::int") >= 180000
    assert _query(url, "SELECT '[1,0]'::vector <=> '[0,1]'::vector") == pytest.approx(1.0)


def test_second_process_reuses_the_running_server(tmp_path: Path) -> None:
    server = embedded(tmp_path)
    url = server.ensure_running()
    first_pid = server.status().pid
    other = json.loads(run_python(ENSURE_AND_REPORT, env={"SOPHIA_HOME": str(tmp_path)}).stdout)
    assert other == {"url": url, "pid": first_pid}


def test_processes_starting_at_once_share_one_server(tmp_path: Path) -> None:
    embedded(tmp_path)  # registered for the session's clean-up

    def start() -> dict:
        result = run_python(ENSURE_AND_REPORT, env={"SOPHIA_HOME": str(tmp_path)})
        return json.loads(result.stdout)

    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = list(pool.map(lambda _: start(), range(4)))
    assert len({(r["url"], r["pid"]) for r in reports}) == 1


def test_stop_then_restart_keeps_data(tmp_path: Path) -> None:
    server = embedded(tmp_path)
    url = server.ensure_running()
    _query(url, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives a restart')")
    old_pid = server.status().pid

    assert server.stop() is True
    assert server.status().running is False
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(url, connect_timeout=2)
    assert server.stop() is False

    restarted = server.ensure_running()
    assert server.status().pid != old_pid
    assert restarted == url  # the port is reused while it is free, so URLs stay valid
    assert _query(restarted, "SELECT v FROM kept") == "survives a restart"


def test_external_url_is_honoured_and_nothing_starts(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(POSTGRES_URL_ENV, postgres_url)
    home = tmp_path / "unused-home"
    assert postgres_url == postgres_url_for(home)
    assert not (home / "postgres").exists()

    result = run_python(
        "from resources.postgres import PostgresResource;"
        "r = PostgresResource(home='" + str(home) + "');"
        "c = r.connect(); cur = c.cursor(); cur.execute('SELECT inet_server_port()');"
        "print(cur.fetchone()[0], r.uses_embedded_server())",
        env={POSTGRES_URL_ENV: postgres_url},
    )
    port = postgres_url.rsplit(":", 1)[1].split("/")[0]
    assert result.stdout.split() == [port, "False"]
    assert not (home / "postgres").exists()


def postgres_url_for(home: Path) -> str:
    return postgres_url(home)


def test_start_failure_quotes_the_server_log(tmp_path: Path) -> None:
    server = embedded(tmp_path)
    server.ensure_running()
    server.stop()
    conf = server.data / "postgresql.conf"
    conf.write_text(conf.read_text() + "\nshared_buffers = 'plenty'\n")

    with pytest.raises(PostgresStartError) as failure:
        server.ensure_running()
    message = str(failure.value)
    assert 'invalid value for parameter "shared_buffers": "plenty"' in message
    assert str(server.log) in message


def test_cli_start_status_stop(tmp_path: Path) -> None:
    from tests.support.processes import run_sophia

    env = {"SOPHIA_HOME": str(tmp_path)}
    embedded(tmp_path)
    assert run_sophia("postgres", "status", env=env, check=False).returncode == 3
    started = run_sophia("postgres", "start", env=env)
    assert "running: postgresql://postgres@127.0.0.1:" in started.stdout
    status = run_sophia("postgres", "status", env=env)
    assert status.stdout.startswith("running: pid ")
    assert run_sophia("postgres", "stop", env=env).stdout.strip() == "stopped"
    assert run_sophia("postgres", "status", env=env, check=False).returncode == 3


def test_cli_masks_an_external_password() -> None:
    from tests.support.processes import run_sophia

    env = {POSTGRES_URL_ENV: "postgresql://app:hunter2@db.internal:5432/app"}
    out = run_sophia("postgres", "status", env=env).stdout
    assert "hunter2" not in out
    assert "app:***@db.internal:5432/app" in out
    assert os.environ.get(POSTGRES_URL_ENV) is None


def test_the_superuser_needs_its_generated_password(tmp_path: Path) -> None:
    server = embedded(tmp_path)
    url = server.ensure_running()
    assert "passfile=" in url and _query(url, "SELECT current_user") == "postgres"
    assert oct(server.passfile.stat().st_mode & 0o777) == "0o600"
    port = server.status().port
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(f"postgresql://postgres@127.0.0.1:{port}/sophia", passfile="/dev/null")
    assert _query(
        url, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'"
    )


def test_a_server_made_before_passwords_gets_one_on_its_next_start(tmp_path: Path) -> None:
    server = embedded(tmp_path)
    server.ensure_running()
    # as an older version left it: no password file, every local login trusted
    server.passfile.unlink()
    hba = server.data / "pg_hba.conf"
    hba.write_text("host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n")
    server.stop()
    server._pg_ctl(["-l", str(server.log), "-w", "-o", f"-p {_free(server)}", "start"])
    url = server.ensure_running()
    assert server.passfile.exists() and "trust" not in hba.read_text()
    assert _query(url, "SELECT 1") == 1
    port = server.status().port
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(f"postgresql://postgres@127.0.0.1:{port}/sophia", passfile="/dev/null")


def _free(server) -> int:
    return int((server.root / "port").read_text())
