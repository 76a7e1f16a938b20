"""Shared fixtures. Every embedded server a test starts is stopped when the session ends; the
helpers that tests import live in tests/support."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from sophia_assets.postgres.embedded_server import POSTGRES_URL_ENV
from tests.support import postgres as test_postgres
from tests.support.images import PROJECT, STUB
from tests.support.postgres import SOURCE_URL_ENV, embedded

# A test that needs the embedded server is slow, whichever module it is in.
DATABASE_FIXTURES = {"postgres_url", "shared_home", "source", "clean_documents"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _stop_embedded_servers() -> Iterator[None]:
    yield
    for server in test_postgres.started:
        server.stop()


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test sees the developer's own server, Dagster home or catalog override."""
    for name in (
        POSTGRES_URL_ENV,
        "DAGSTER_HOME",
        "SOPHIA_FLOW_SPECS",
        "SOPHIA_LAMBDA_API_KEY",
        "SOPHIA_PINECONE_HOST",
        "SOPHIA_ESC_ENVIRONMENT",
        "SOPHIA_SECRET_STORE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SOPHIA_HOME", str(tmp_path / "sophia-home"))
    # No serve a test starts binds the default metrics port; the metrics tests choose theirs.
    monkeypatch.setenv("SOPHIA_METRICS_ADDR", "off")
    # Model caches are keyed by what they derive from, so one per session is safe, and each
    # test need not export the model again (30-60 s); the ONNX tests isolate their own.
    monkeypatch.setenv("SOPHIA_CACHE", str(_shared_cache(tmp_path_factory)))


def _shared_cache(factory: pytest.TempPathFactory) -> Path:
    return factory.getbasetemp() / "shared-model-cache"


@pytest.fixture(scope="session")
def shared_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test's SOPHIA_CACHE, holding the model's ONNX export, made once for the session
    (`tests.support.caches.place_onnx_export` copies it into a cache of a test's own)."""
    from sophia_assets.embedding import onnx_export
    from sophia_assets.embedding.embedder import ModelCard, default_model_path

    cache = _shared_cache(tmp_path_factory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOPHIA_CACHE", str(cache))
        onnx_export.cached_model(ModelCard.read(default_model_path()))
    return cache


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-sophia-home")


@pytest.fixture(scope="session")
def corpus_file(shared_home: Path) -> Path:
    """The demo corpus's cache file in `shared_home`, built once for the session
    (`tests.support.caches.place_corpus` copies it into another home)."""
    from sophia_assets.demo.corpus import load_corpus

    load_corpus(shared_home / "cache")
    [path] = (shared_home / "cache").glob("corpus-*.json.gz")
    return path


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


@pytest.fixture
def source(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database with the capture tests' `public.documents` (more column types than
    the demo's); its URL is also in SOURCE_URL_ENV for resources to read."""
    from tests.support.cdc import DOCUMENTS_DDL, drop_database, new_database, sql

    url = new_database(postgres_url)
    sql(url, DOCUMENTS_DDL)
    monkeypatch.setenv(SOURCE_URL_ENV, url)
    yield url
    drop_database(url)


# -- container images: a small project and a stand-in `docker` ---------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, text in PROJECT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def docker_stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "docker"
    stub.write_text(STUB)
    stub.chmod(0o755)
    record = tmp_path / "docker-argv.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STUB_RECORD", str(record))
    return record
