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


# -- container images: a small project and a stand-in `docker` ---------------------------------

PROJECT = {
    "Dockerfile": "FROM python:3.11.14-slim-bookworm\n"
    "RUN --mount=type=bind,source=uv.lock,target=uv.lock true\n"
    "COPY pyproject.toml ./\nCOPY pkg ./pkg\nUSER 10001:10001\n",
    ".dockerignore": ".sophia\ntests\n**/__pycache__\n",
    "pyproject.toml": "[project]\nname = 'x'\n",
    "uv.lock": "version = 1\n",
    "pkg/a.py": "A = 1\n",
    "pkg/__pycache__/a.cpython-311.pyc": "bytecode",
    "tests/test_a.py": "def test(): pass\n",
    ".sophia/state": "local state",
    "notes.md": "not read by the Dockerfile",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, text in PROJECT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


STUB = f"""#!{sys.executable}
import hashlib, json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_RECORD"], "w") as f:
    json.dump(args, f)
required = ["buildx", "build", "--push", "--provenance=mode=max", "--sbom=true",
            "--metadata-file", "--builder", "--progress=plain"]
missing = [flag for flag in required if flag not in args]
if missing:
    print("stub docker: missing " + " ".join(missing), file=sys.stderr)
    sys.exit(2)
mode = os.environ.get("STUB_MODE", "ok")
print("#1 [internal] load build definition from Dockerfile")
print("#1 DONE 0.0s")
for step in range(2, 62):
    print(f"#{{step}} [build {{step}}/61] RUN step {{step}}")
    print(f"#{{step}} CACHED" if step % 3 else f"#{{step}} DONE 0.1s")
print("STUB-LOG-MARKER pushing layers")
if mode == "fail":
    print("ERROR: failed to solve: process did not complete successfully: exit code: 1")
    sys.exit(1)
if mode != "no-metadata":
    tags = [args[i + 1] for i, a in enumerate(args) if a == "--tag"]
    with open(args[args.index("--metadata-file") + 1], "w") as f:
        digest = "sha256:" + hashlib.sha256(tags[0].encode()).hexdigest()
        json.dump({{"containerimage.digest": digest,
                   "image.name": ",".join(tags),
                   "buildx.build.ref": "cloud-acme-sophia/cloud-acme-sophia0/abc"}}, f)
"""


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


def step_failure(result) -> str:
    """The failed step's error and its causes, as one text (from an in-process result)."""
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error, messages = event.step_failure_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


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
