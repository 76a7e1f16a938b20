"""A scratch database on the platform's Postgres for a benchmark, dropped afterwards."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

from sophia_assets.catalog import Catalog
from sophia_assets.catalog.model import Capture
from sophia_assets.postgres.urls import with_database


@contextmanager
def scratch_database(platform_url: str, prefix: str) -> Iterator[str]:
    name = f"sophia_bench_{prefix}_{uuid.uuid4().hex[:8]}"
    _admin(platform_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(platform_url, name)
    finally:
        _admin(
            platform_url,
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE database = '{name}' AND NOT active",
        )
        _admin(platform_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(url: str, statement: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def scratch_capture(catalog: Catalog) -> tuple[Capture, Catalog]:
    """The catalog's capture with a slot and publication of its own (slot names are global
    to the server, so a benchmark must not take the real capture's)."""
    tag = uuid.uuid4().hex[:8]
    capture = next(iter(catalog.captures.values()))
    config = dict(capture.connector.config)
    config["advanced"] = {
        **(config.get("advanced") or {}),
        "slotName": f"bench_{tag}",
        "publicationName": f"bench_{tag}",
    }
    capture = dataclasses.replace(
        capture, connector=dataclasses.replace(capture.connector, config=config)
    )
    return capture, dataclasses.replace(catalog, captures={capture.name: capture})
