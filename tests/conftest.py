"""Shared fixtures. Every embedded server a test starts is stopped when the session ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from resources.postgres_server import POSTGRES_URL_ENV, EmbeddedPostgres

REPO = Path(__file__).resolve().parent.parent
_started: list[EmbeddedPostgres] = []


def embedded(home: Path) -> EmbeddedPostgres:
    """An embedded server under `home`, remembered so the session stops it."""
    server = EmbeddedPostgres(home)
    _started.append(server)
    return server


@pytest.fixture(scope="session", autouse=True)
def _stop_embedded_servers() -> Iterator[None]:
    yield
    for server in _started:
        server.stop()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's own server, Dagster home or catalog override."""
    for name in (POSTGRES_URL_ENV, "DAGSTER_HOME", "SOPHIA_FLOW_SPECS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SOPHIA_HOME", str(tmp_path / "sophia-home"))


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-sophia-home")


@pytest.fixture(scope="session")
def postgres_url(shared_home: Path) -> str:
    """One embedded server for the tests that only need a database."""
    return embedded(shared_home).ensure_running()


@pytest.fixture
def clean_documents(postgres_url: str) -> str:
    """The shared server with no `public.documents` table."""
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS public.documents")
    conn.close()
    return postgres_url


SOURCE_URL_ENV = "SOPHIA_TEST_SOURCE_URL"


@pytest.fixture
def source(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database with the capture tests' `public.documents` (more column types than
    the demo's); its URL is also in SOURCE_URL_ENV for resources to read."""
    from cdc import DOCUMENTS_DDL, drop_database, new_database, sql

    url = new_database(postgres_url)
    sql(url, DOCUMENTS_DDL)
    monkeypatch.setenv(SOURCE_URL_ENV, url)
    yield url
    drop_database(url)


def run_python(
    code: str, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter of this environment (another process)."""
    return _run([sys.executable, "-c", code], env, cwd, check)


def run_sophia(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs the installed `sophia` console script."""
    return _run([str(Path(sys.executable).parent / "sophia"), *args], env, cwd, check)


def _run(
    command: list[str], env: dict[str, str] | None, cwd: Path | None, check: bool
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env={**os.environ, **(env or {})},
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )
