"""A real dagster-webserver on loopback loads workspace.yaml and serves the asset graph."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.e2e


LOCATION_STATUS = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
ASSET_NODES = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    home = tmp_path_factory.mktemp("dagster-home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()
    output: list[str] = []

    def watch() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            output.append(line)
            if "Serving dagster-webserver on" in line:
                ready.set()
        ready.set()  # the process ended

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(timeout=180) or process.poll() is not None:
            pytest.fail("dagster-webserver did not start:\n" + "".join(output[-40:]))
        _wait_until_answering(f"http://127.0.0.1:{port}/server_info", process)
        yield f"http://127.0.0.1:{port}/graphql"
    finally:
        process.terminate()
        process.wait(timeout=60)


def _wait_until_answering(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    """The "Serving" line is logged just before the socket is bound: poll until it answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(url, timeout=5).raise_for_status()
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            threading.Event().wait(0.1)


def _graphql(url: str, query: str) -> dict:
    response = httpx.post(url, json={"query": query}, timeout=120)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_location_is_loaded(webserver: str) -> None:
    entries = _graphql(webserver, LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
    assert [(e["name"], e["loadStatus"]) for e in entries] == [("sophia_assets", "LOADED")]
    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"


def test_asset_nodes_carry_the_lineage(webserver: str) -> None:
    nodes = _graphql(webserver, ASSET_NODES)["assetNodes"]
    deps = {
        "/".join(n["assetKey"]["path"]): sorted("/".join(d["path"]) for d in n["dependencyKeys"])
        for n in nodes
    }
    assert deps == {
        "postgres/public/documents": [],
        "sophia/postgresql_cdc": ["postgres/public/documents"],
        "sophia/vector_updates": ["sophia/postgresql_cdc"],
        "pinecone/sophia-ai-vectors": ["sophia/vector_updates"],
        # the images beside the data path, upstream of the deployment that uses them
        "images/code-location": [],
        "images/gpu-embedding": [],
        "deploy/helm_values": ["images/code-location"],
        "secrets/postgres_capture": [],
        "images/n8n": [],
        "infra/n8n": ["images/n8n"],
        "infra/dagster": ["images/code-location"],
        "infra/gpu-embedding": ["images/gpu-embedding"],
        "infra/search-api": ["images/code-location"],
    }
