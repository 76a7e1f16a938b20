"""Embedded servers started by tests, stopped when the session ends (see conftest)."""

from __future__ import annotations

from pathlib import Path

from sophia_assets.postgres.embedded_server import EmbeddedPostgres

# Resources of a test read the source database's URL from this variable.
SOURCE_URL_ENV = "SOPHIA_TEST_SOURCE_URL"

started: list[EmbeddedPostgres] = []


def embedded(home: Path) -> EmbeddedPostgres:
    """An embedded server under `home`, remembered so the session stops it."""
    server = EmbeddedPostgres(home)
    started.append(server)
    return server
