"""The capture's least-privilege login, its rotation by the two-role scheme against the real
embedded Postgres (which asks these roles for passwords), the running capture switching over
without losing a change, the secret store file, and the secret-age check."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from resources.postgres import PostgresResource
from resources.secret_store import SecretStoreResource
from sophia_assets.assets.secrets import CAPTURE_LOGIN, capture_login
from sophia_assets.checks.secrets import secret_age_check
from sophia_assets.flow.capture import CaptureRunner
from sophia_assets.secrets.capture_login import RotatedLogin, set_up
from sophia_assets.secrets.postgres_roles import SECRET, rotate, with_login
from sophia_assets.secrets.store import FileSecretStore
from tests.support.cdc import (
    CAPTURE,
    catalog_copy,
    duplicated_changes,
    load,
    reduced_state,
    source_state,
    sql,
)
from tests.support.postgres import SOURCE_URL_ENV
from tests.support.processes import run_sophia

pytestmark = pytest.mark.slow


@pytest.fixture
def catalog(tmp_path: Path):
    return load(catalog_copy(tmp_path, slot=f"slot_{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def store(tmp_path: Path) -> FileSecretStore:
    return FileSecretStore(tmp_path / "secrets.json")


def _login(admin_url: str, entry: dict) -> str | None:
    """None when the login works, else the server's refusal."""
    try:
        psycopg2.connect(with_login(admin_url, entry["user"], entry["password"])).close()
    except psycopg2.OperationalError as err:
        return str(err)
    return None


def _as_capture(source: str, store: FileSecretStore, statement: str) -> str | None:
    """None when the statement succeeds as the current capture login, else the error."""
    conn = psycopg2.connect(RotatedLogin(store, source).url())
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
    except psycopg2.Error as err:
        return str(err).splitlines()[0]
    finally:
        conn.close()
    return None


def test_capture_login_reads_published_tables_only_and_writes_nothing(
    source: str, catalog, store
) -> None:
    sql(source, "CREATE TABLE public.payroll (id int PRIMARY KEY, salary int)")
    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, 'published', 'text')")
    setup = set_up(catalog, source, store)
    assert setup.tables == ["public.documents"] and setup.rotation.current == "sophia_capture_a"

    assert _as_capture(source, store, "SELECT title FROM public.documents") is None
    denied = {
        "read unpublished": "SELECT * FROM public.payroll",
        "insert": "INSERT INTO public.documents (id, title) VALUES (2, 'x')",
        "update": "UPDATE public.documents SET title = 'y'",
        "delete": "DELETE FROM public.documents",
        "create": "CREATE TABLE public.mine (id int)",
        "truncate": "TRUNCATE public.documents",
    }
    for what, statement in denied.items():
        assert "permission denied" in (_as_capture(source, store, statement) or ""), what
    # the one write it needs, as Estuary's capture: its backfill watermarks
    watermark = "INSERT INTO public.flow_watermarks VALUES ('s', 'w')"
    assert _as_capture(source, store, watermark) is None

    # ...and a real capture runs as that login (logical decoding over replication)
    report = CaptureRunner(
        catalog.captures[CAPTURE], catalog, RotatedLogin(store, source), source
    ).drain()
    reasons = sql(source, "SELECT reason FROM flow.quarantine")
    assert report.collections["sophia/postgresql_cdc"].documents == 1, reasons
    assert set_up(catalog, source, store).rotation is None  # idempotent: no new login


def _replication_user(source: str, slot: str) -> str | None:
    rows = sql(
        source,
        "SELECT r.usename FROM pg_stat_replication r JOIN pg_replication_slots s "
        "ON s.active_pid = r.pid WHERE s.slot_name = %s",
        params=(slot,),
    )
    return rows[0][0] if rows else None


def _wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)  # polling the server for the state we wait on


def test_three_rotations_while_the_capture_serves_lose_nothing(
    source: str, catalog, store, caplog
) -> None:
    caplog.set_level(logging.DEBUG)  # every log line of the serving capture, to search
    set_up(catalog, source, store)
    first = store.read(SECRET)["current"]
    capture = catalog.captures[CAPTURE]
    slot = capture.connector.config["advanced"]["slotName"]
    serving = CaptureRunner(capture, catalog, RotatedLogin(store, source), source)
    stop = threading.Event()
    server = threading.Thread(target=serving.serve, args=(stop,))
    server.start()
    writes = iter(range(1, 10_000))
    # One client connection for the 260 writes (a connection costs more than its statement);
    # each write is still its own transaction, as with a connection per write.
    writer = psycopg2.connect(source)

    def write_some(n: int) -> None:
        for _ in range(n):
            i = next(writes)
            with writer, writer.cursor() as cur:
                cur.execute("INSERT INTO documents (id, title, body) VALUES (%s, 'v1', 'b')", (i,))
            with writer, writer.cursor() as cur:
                cur.execute("UPDATE documents SET title = 'v2' WHERE id = %s", (i,))

    try:
        _wait_for(lambda: _replication_user(source, slot) == "sophia_capture_a")
        logins = [first]
        for turn in range(3):
            write_some(20)
            rotation = rotate(source, store)
            logins.append(store.read(SECRET)["current"])
            write_some(20)
            # the serving capture reconnects as the new login, where it stopped
            _wait_for(lambda r=rotation: _replication_user(source, slot) == r.current)
            assert _login(source, logins[-1]) is None  # current works
            assert _login(source, logins[-2]) is None  # previous still works
            if turn >= 1:  # two rotations on, the login before the previous is refused
                assert "password authentication failed" in _login(source, logins[-3])
        for entry in logins:  # reconnecting as each login logged none of the passwords
            assert entry["password"] not in caplog.text
        assert [entry["user"] for entry in logins] == [
            "sophia_capture_a",
            "sophia_capture_b",
            "sophia_capture_a",
            "sophia_capture_b",
        ]
        write_some(10)
        marker = sql(source, "SELECT pg_current_wal_lsn()::text")[0][0]
        _wait_for(
            lambda: sql(
                source,
                "SELECT coalesce(max(lsn), '0/0') >= %s::pg_lsn FROM flow.checkpoints "
                "WHERE task = %s",
                params=(marker, CAPTURE),
            )[0][0]
        )
    finally:
        writer.close()
        stop.set()
        server.join(timeout=60)
    assert reduced_state(source) == source_state(source)
    assert len(reduced_state(source)) == 130  # 3 x (20 + 20) + 10
    assert duplicated_changes(source) == []


def test_store_file_is_private_and_refused_when_not(store: FileSecretStore) -> None:
    store.write("x", {"current": {"user": "u", "password": "p", "rotated_at": 1}})
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    os.chmod(store.path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        store.read("x")


def test_rotation_asset_and_secret_age_check(source: str, catalog, store, monkeypatch) -> None:
    set_up(catalog, source, store)
    check = secret_age_check(CAPTURE_LOGIN, SECRET)
    resources = {
        "postgres": PostgresResource(url_env=SOURCE_URL_ENV),
        "secret_store": SecretStoreResource(path=str(store.path)),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([capture_login, check], instance=instance, resources=resources)
        [materialization] = result.asset_materializations_for_node("secrets__postgres_capture")
        [evaluation] = result.get_asset_check_evaluations()
        logs = "\n".join(e.user_message for e in instance.all_logs(result.run_id))
    state = store.read(SECRET)
    assert materialization.metadata["current_login"].value == state["current"]["user"]
    for secret in (state["current"]["password"], state["previous"]["password"]):
        assert secret not in str(materialization.metadata) and secret not in logs
    assert evaluation.passed and evaluation.metadata["age_days"].value < 0.01

    stale = {**state, "current": {**state["current"], "rotated_at": time.time() - 40 * 86_400}}
    store.write(SECRET, stale)
    aged = dg.materialize(
        [capture_login, check], resources=resources, selection=dg.AssetSelection.checks(check)
    )
    [evaluation] = aged.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["age_days"].value == pytest.approx(40, abs=0.01)
    assert "rotate it" in evaluation.description


def test_db_roles_command_sets_up_once(source: str, tmp_path: Path) -> None:
    env = {"SOPHIA_POSTGRES_URL": source, "SOPHIA_HOME": str(tmp_path / "home")}
    first = run_sophia("db", "roles", env=env)
    assert "first login: sophia_capture_a" in first.stdout
    assert "  public.documents" in first.stdout
    again = run_sophia("db", "roles", env=env)
    assert "first login" not in again.stdout
    rotated = run_sophia("db", "rotate", env=env)
    assert "current login: sophia_capture_b (previous: sophia_capture_a)" in rotated.stdout
    stored = FileSecretStore(tmp_path / "home" / "secrets.json").read(SECRET)
    assert stored["current"]["password"] not in first.stdout + again.stdout + rotated.stdout
    # REPLICATION lets the login decode its publication, never copy the whole cluster
    refusal = _base_backup(source, stored["current"], tmp_path / "copy")
    assert "pg_hba.conf rejects replication connection" in refusal
    assert "sophia_capture_b" in refusal and stored["current"]["password"] not in refusal


def _base_backup(source: str, login: dict, target: Path) -> str:
    """pg_basebackup as `login` (the password in its environment, never its arguments);
    returns what it said on failing."""
    from urllib.parse import urlsplit

    from sophia_assets.postgres.embedded_server import _binary

    port = str(urlsplit(source).port)
    command = [str(_binary("pg_basebackup")), "-h", "127.0.0.1", "-p", port, "-U", login["user"]]
    result = subprocess.run(
        [*command, "-D", str(target), "-X", "none", "--no-password"],
        env={**os.environ, "PGPASSWORD": login["password"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, "the capture login copied the cluster"
    return result.stderr


def test_rotation_never_sends_the_password_to_the_server(
    source: str, catalog, store, shared_home: Path
) -> None:
    from sophia_assets.postgres.embedded_server import EmbeddedPostgres

    def admin(statement: str) -> None:  # ALTER SYSTEM cannot run in a transaction
        conn = psycopg2.connect(source)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
        conn.close()

    set_up(catalog, source, store)
    admin("ALTER SYSTEM SET log_statement = 'all'")
    admin("SELECT pg_reload_conf()")
    try:
        _wait_for(lambda: sql(source, "SHOW log_statement")[0][0] == "all")
        rotate(source, store)
    finally:
        admin("ALTER SYSTEM RESET log_statement")
        admin("SELECT pg_reload_conf()")
    log = EmbeddedPostgres(shared_home).log.read_text(errors="replace")
    assert "ALTER ROLE" in log and "SCRAM-SHA-256$4096:" in log  # the statement, with a verifier
    assert store.read(SECRET)["current"]["password"] not in log


HOSTILE_PASSWORD = "p/@:?#% w'\"x&=y"


def test_a_source_password_with_any_characters_connects_and_is_never_shown(
    source: str, tmp_path: Path, monkeypatch
) -> None:
    from urllib.parse import urlsplit

    from sophia_assets.flow.runtime import source_url
    from sophia_assets.postgres.scram import scram_verifier
    from sophia_assets.postgres.urls import masked

    role = f"sophia_hostile_{uuid.uuid4().hex[:6]}"
    sql(
        source,
        f'CREATE ROLE "{role}" LOGIN PASSWORD %s',
        params=(scram_verifier(HOSTILE_PASSWORD),),
    )
    specs = catalog_copy(tmp_path)
    spec = specs / "source-postgres.flow.yaml"
    spec.write_text(spec.read_text().replace("user: postgres", f"user: {role}"))
    parts = urlsplit(source)
    monkeypatch.setenv("SOPHIA_SOURCE_ADDRESS", f"{parts.hostname}:{parts.port}")
    monkeypatch.setenv("SOPHIA_SOURCE_PASSWORD", HOSTILE_PASSWORD)
    try:
        url = source_url(load(specs).captures[CAPTURE], platform_url=source)
        assert sql(url, "SELECT current_user")[0][0] == role  # the catalog's endpoint
        assert sql(with_login(source, role, HOSTILE_PASSWORD), "SELECT 1")[0][0] == 1  # rotated
        assert HOSTILE_PASSWORD not in masked(f"connecting to {url}")
        with pytest.raises(psycopg2.OperationalError) as refused:
            psycopg2.connect(with_login(source, role, HOSTILE_PASSWORD + "!"))
        assert "password authentication failed" in str(refused.value)
        assert "p/@" not in str(refused.value)
    finally:
        sql(source, f'DROP ROLE "{role}"')
