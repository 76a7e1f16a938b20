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


def superuser_password(url: str) -> str:
    """The embedded superuser's generated password, from the passfile its URL names: for a
    client that takes a password but no passfile (Dagster's Postgres storage config)."""
    from urllib.parse import parse_qsl, urlsplit

    passfile = Path(dict(parse_qsl(urlsplit(url).query))["passfile"])
    return passfile.read_text().strip().rsplit(":", 1)[1]
