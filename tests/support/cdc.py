"""Helpers for the capture tests: a fresh database per test, a catalog with small backfill
chunks, SQL shortcuts, and the comparison of a collection with its source table."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import yaml

from sophia_assets.catalog import Catalog, load_catalog
from sophia_assets.flow.capture import CaptureRunner
from sophia_assets.home import FLOW_SPECS_DIR
from sophia_assets.postgres.urls import database_of, with_database

CAPTURE = "sophia/source-postgres"
COLLECTION = "sophia/postgresql_cdc"

DOCUMENTS_DDL = """
CREATE TABLE public.documents (
    id         bigint PRIMARY KEY,
    title      text,
    body       text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    price      numeric,
    tags       text[],
    scores     int[],
    attrs      jsonb,
    published  boolean
)
"""


def sql(url: str, *statements: str, params: tuple = ()) -> list[tuple]:
    """Runs the statements in one transaction; returns the last one's rows (if any)."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            rows: list[tuple] = []
            for statement in statements:
                cur.execute(statement, params or None)
                rows = cur.fetchall() if cur.description else []
            return rows
    finally:
        conn.close()


def new_database(admin_url: str) -> str:
    name = f"cdc_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return with_database(admin_url, name)


def drop_database(url: str) -> None:
    name = database_of(url)
    conn = psycopg2.connect(with_database(url, "postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = %s AND NOT active",
            (name,),
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def catalog_copy(tmp_path: Path, chunk_size: int = 50_000, slot: str = "flow_slot") -> Path:
    root = tmp_path / "flow_specs"
    shutil.copytree(FLOW_SPECS_DIR, root)
    path = root / "source-postgres.flow.yaml"
    doc = yaml.safe_load(path.read_text())
    advanced = doc["captures"][CAPTURE]["endpoint"]["connector"]["config"]["advanced"]
    advanced["backfill_chunk_size"] = chunk_size
    advanced["slotName"] = slot
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def add_collection(
    root: Path, name: str, keys: list[str], properties: dict[str, Any], stream: str, only: bool
) -> None:
    """Adds a collection to the catalog copy at `root`, with Estuary's usual delete (a
    document with _meta.op d removes its key), and binds the capture's `stream` to it: as its
    only binding, or beside the shipped one."""
    collections = root / "collections.flow.yaml"
    doc = yaml.safe_load(collections.read_text())
    doc["collections"][name] = {
        "key": keys,
        "schema": {
            "type": "object",
            "required": [k.lstrip("/") for k in keys],
            "properties": properties,
            "if": {
                "required": ["_meta"],
                "properties": {"_meta": {"properties": {"op": {"const": "d"}}}},
            },
            "then": {"reduce": {"strategy": "merge", "delete": True}},
            "else": {"reduce": {"strategy": "merge"}},
        },
    }
    collections.write_text(yaml.safe_dump(doc, sort_keys=False))
    capture = root / "source-postgres.flow.yaml"
    doc = yaml.safe_load(capture.read_text())
    binding = {"resource": {"namespace": "public", "stream": stream}, "target": name}
    bindings = doc["captures"][CAPTURE]["bindings"]
    doc["captures"][CAPTURE]["bindings"] = [binding] if only else [*bindings, binding]
    capture.write_text(yaml.safe_dump(doc, sort_keys=False))


def runner(url: str, catalog: Catalog, **kwargs: Any) -> CaptureRunner:
    return CaptureRunner(catalog.captures[CAPTURE], catalog, url, url, **kwargs)


def load(root: Path) -> Catalog:
    return load_catalog(root)


def source_state(url: str) -> dict[int, dict[str, Any]]:
    rows = sql(
        url,
        "SELECT id, title, body, updated_at, price::text, tags, scores, attrs, "
        "published FROM public.documents",
    )
    return {row[0]: _row(row) for row in rows}


def reduced_state(url: str, collection: str = COLLECTION) -> dict[int, dict[str, Any]]:
    rows = sql(url, "SELECT document FROM flow.reduced WHERE collection = %s", params=(collection,))
    state = {}
    for (doc,) in rows:
        state[doc["id"]] = _row(
            (
                doc["id"],
                doc.get("title"),
                doc.get("body"),
                datetime.fromisoformat(doc["updated_at"]),
                doc.get("price"),
                doc.get("tags"),
                doc.get("scores"),
                doc.get("attrs"),
                doc.get("published"),
            )
        )
    return state


def _row(row: tuple) -> dict[str, Any]:
    keys = ("id", "title", "body", "updated_at", "price", "tags", "scores", "attrs", "published")
    return dict(zip(keys, row, strict=True))


def duplicated_changes(url: str, collection: str = COLLECTION) -> list[tuple]:
    """Source changes (by event LSN and op: a key change is a create and a delete at one
    LSN) that appear more than once in the journal."""
    return sql(
        url,
        "SELECT document #>> '{_meta,source,loc,1}', document #>> '{_meta,op}', count(*) "
        "FROM flow.journal "
        "WHERE collection = %s AND document #> '{_meta,source,snapshot}' IS NULL "
        "GROUP BY 1, 2 HAVING count(*) > 1",
        params=(collection,),
    )


def flow_process(
    url: str, specs: Path, *verb: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`sophia flow serve --captures-only` (or another flow verb) on the catalog copy, as its
    own process: what a test kills with SIGKILL."""
    sophia = Path(sys.executable).parent / "sophia"
    env = {**os.environ, **(env or {}), "SOPHIA_POSTGRES_URL": url, "SOPHIA_FLOW_SPECS": str(specs)}
    return subprocess.Popen(
        [str(sophia), "flow", *(verb or ["serve", "--captures-only"])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
