"""Collections stored in Postgres: an append-only journal per collection, the reduced view by
key, the captures' checkpoints and the quarantine, all under the schema `flow`.

A writer appends documents, updates the reduced view and saves its checkpoint in one
transaction (the caller's), so a crash leaves either all of it or none. Documents are stored
as `json` (checked text), not `jsonb`: they are written far more often than they are queried
inside, and converting to jsonb was most of the journal's write cost.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

DDL = """
CREATE SCHEMA IF NOT EXISTS flow;
CREATE TABLE IF NOT EXISTS flow.journal (
    collection  text        NOT NULL,
    "offset"    bigint      NOT NULL,
    key         jsonb       NOT NULL,
    document    json        NOT NULL,
    commit_lsn  pg_lsn      NOT NULL,
    source_ts   timestamptz,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (collection, "offset")
);
-- Appends arrive in time order, so a BRIN index finds a recent window for almost no upkeep.
CREATE INDEX IF NOT EXISTS journal_captured_at ON flow.journal USING brin (captured_at);
CREATE TABLE IF NOT EXISTS flow.reduced (
    collection text   NOT NULL,
    key        jsonb  NOT NULL,
    document   json   NOT NULL,
    "offset"   bigint NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE TABLE IF NOT EXISTS flow.checkpoints (
    task       text        PRIMARY KEY,
    lsn        pg_lsn      NOT NULL,
    state      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS flow.derivation_state (
    derivation   text NOT NULL,
    source_key   text NOT NULL,
    content_hash text NOT NULL,
    chunks       int  NOT NULL,
    model        text NOT NULL,
    PRIMARY KEY (derivation, source_key)
);
CREATE TABLE IF NOT EXISTS flow.quarantine (
    id             bigserial   PRIMARY KEY,
    collection     text        NOT NULL,
    document       jsonb       NOT NULL,
    reason         text        NOT NULL,
    source         jsonb       NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);
-- One writer per derivation or index task (flow/leases.py).
CREATE TABLE IF NOT EXISTS flow.leases (
    task      text             PRIMARY KEY,
    owner     text,
    kind      text,
    epoch     bigint           NOT NULL DEFAULT 0,
    heartbeat timestamptz,
    ttl_s     double precision NOT NULL DEFAULT 15,
    pid       int,
    backend_start timestamptz,
    wanted_by text,
    wanted_at timestamptz
);
-- When each captured change became searchable in an index (vectors/searchable.py).
CREATE TABLE IF NOT EXISTS flow.searchable (
    index         text        NOT NULL,
    source_key    text        NOT NULL,
    source_ts     timestamptz NOT NULL,
    searchable_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS searchable_window ON flow.searchable (index, searchable_at);
"""
# Appends NOTIFY this channel with the collection's name; delivered when they commit, so a
# continuous reader wakes on a commit instead of polling.
CHANNEL = "flow_journal"


@dataclass(slots=True)
class Entry:
    """One document bound for a collection's journal."""

    key: str  # the key as a JSON array, e.g. `[42]`
    document: dict[str, Any]
    commit_lsn: str  # `X/Y`
    source_ts_ms: int | None


def ensure_schema(conn) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('flow.ddl'))")
        cur.execute(DDL)


def next_offset(cur, collection: str) -> int:
    cur.execute(
        'SELECT coalesce(max("offset"), -1) + 1 FROM flow.journal WHERE collection = %s',
        (collection,),
    )
    return cur.fetchone()[0]


def reduced_documents(cur, collection: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    if not keys:
        return {}
    cur.execute(
        "SELECT key::text, document::text FROM flow.reduced "
        "WHERE collection = %s AND key = ANY(%s::jsonb[])",
        (collection, keys),
    )
    return {canonical_key(key): orjson.loads(doc) for key, doc in cur.fetchall()}


def reduced_keys(cur, collection: str) -> list[list[Any]]:
    """Every key in the collection's reduced view, as its array of values."""
    cur.execute("SELECT key::text FROM flow.reduced WHERE collection = %s", (collection,))
    return [orjson.loads(key) for (key,) in cur.fetchall()]


def canonical_key(key_text: str) -> str:
    """Postgres prints jsonb arrays with spaces; our keys are compact JSON."""
    return orjson.dumps(orjson.loads(key_text)).decode()


def append(
    cur, collection: str, first_offset: int, entries: list[Entry], texts: dict[int, str]
) -> None:
    """COPY the entries into the journal at offsets first_offset, first_offset + 1, ...
    `texts` collects each document's COPY text by id(), for `write_reduced` to reuse."""
    buffer = io.StringIO()
    write = buffer.write
    name = _copy_text(collection)
    for index, entry in enumerate(entries):
        ts = "\\N" if entry.source_ts_ms is None else _timestamp_text(entry.source_ts_ms)
        document = texts.get(id(entry.document)) or document_text(entry.document)
        texts[id(entry.document)] = document
        write(
            f"{name}\t{first_offset + index}\t{_json_copy_text(entry.key)}\t{document}\t"
            f"{entry.commit_lsn}\t{ts}\n"
        )
    buffer.seek(0)
    cur.copy_expert(
        'COPY flow.journal (collection, "offset", key, document, commit_lsn, source_ts) FROM STDIN',
        buffer,
    )
    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, collection))


def write_reduced(
    cur,
    collection: str,
    documents: dict[str, tuple[dict | None, int]],
    existing: set[str],
    texts: dict[int, str],
) -> None:
    """Stores each key's reduced document (None deletes the key), with its last offset.
    Keys not `existing` before the batch are COPYed straight in; the others go through a
    temporary table, one delete and one upsert."""
    fresh = io.StringIO()
    changed = io.StringIO()
    for key, (document, offset) in documents.items():
        text = "\\N" if document is None else texts.get(id(document)) or _json_copy_text(document)
        line = f"{_json_copy_text(key)}\t{text}\t{offset}\n"
        if key in existing:
            changed.write(line)
        elif document is not None:
            fresh.write(f"{_copy_text(collection)}\t{line}")
    if fresh.tell():
        fresh.seek(0)
        cur.copy_expert('COPY flow.reduced (collection, key, document, "offset") FROM STDIN', fresh)
    if not changed.tell():
        return
    changed.seek(0)
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS reduced_load (key jsonb, document json, "
        '"offset" bigint) ON COMMIT DELETE ROWS'
    )
    # One transaction writes every collection of a batch: empty what the last one loaded.
    cur.execute("TRUNCATE reduced_load")
    cur.copy_expert('COPY reduced_load (key, document, "offset") FROM STDIN', changed)
    cur.execute(
        "DELETE FROM flow.reduced r USING reduced_load l "
        "WHERE r.collection = %s AND r.key = l.key AND l.document IS NULL",
        (collection,),
    )
    cur.execute(
        'INSERT INTO flow.reduced (collection, key, document, "offset") '
        'SELECT %s, key, document, "offset" FROM reduced_load WHERE document IS NOT NULL '
        "ON CONFLICT (collection, key) DO UPDATE "
        'SET document = EXCLUDED.document, "offset" = EXCLUDED."offset"',
        (collection,),
    )


def document_text(document: dict[str, Any]) -> str:
    """A document as the journal's COPY text. Raises TypeError for one JSON cannot write
    (nested deeper than orjson's 254 levels, say): the writer quarantines it."""
    return _json_copy_text(document)


def _json_copy_text(value) -> str:
    """JSON as a COPY text field: orjson escapes control characters, so only backslashes
    need doubling."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text.replace("\\", "\\\\")


@functools.lru_cache(maxsize=4096)  # every change of a transaction shares its commit time
def _timestamp_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def quarantine(
    cur, collection: str, document: dict[str, Any], reason: str, source: dict[str, Any]
) -> None:
    cur.execute(
        "INSERT INTO flow.quarantine (collection, document, reason, source) "
        "VALUES (%s, %s, %s, %s)",
        (collection, _quarantined_text(document), reason, orjson.dumps(source).decode()),
    )


def _quarantined_text(document: dict[str, Any]) -> str:
    """The document as JSON, even one orjson cannot write (the standard library nests
    deeper); failing that, with each field it cannot write replaced by a note, so that the
    quarantine never fails the batch."""
    try:
        return orjson.dumps(document).decode()
    except TypeError:
        pass
    try:
        return json.dumps(document, default=str)
    except (TypeError, ValueError, RecursionError):
        return json.dumps({key: _writable(value) for key, value in document.items()})


def _writable(value: Any) -> Any:
    try:
        json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        return "(not kept: nested too deep to write as JSON)"
    return value


def save_checkpoint(cur, task: str, lsn: str, state: dict[str, Any]) -> None:
    cur.execute(
        "INSERT INTO flow.checkpoints (task, lsn, state) VALUES (%s, %s, %s) "
        "ON CONFLICT (task) DO UPDATE SET lsn = EXCLUDED.lsn, state = EXCLUDED.state, "
        "updated_at = now()",
        (task, lsn, orjson.dumps(state).decode()),
    )


def load_checkpoint(cur, task: str) -> tuple[str, dict[str, Any]] | None:
    cur.execute("SELECT lsn::text, state::text FROM flow.checkpoints WHERE task = %s", (task,))
    row = cur.fetchone()
    return (row[0], orjson.loads(row[1])) if row else None


def read(
    cur, collection: str, since: int = 0, limit: int | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(offset, document) from `since` on, in journal order."""
    cur.execute(
        'SELECT "offset", document::text FROM flow.journal WHERE collection = %s '
        'AND "offset" >= %s ORDER BY "offset" LIMIT %s',
        (collection, since, limit),
    )
    for offset, document in cur:
        yield offset, orjson.loads(document)


def read_reduced(cur, collection: str) -> Iterator[dict[str, Any]]:
    cur.execute(
        "SELECT document::text FROM flow.reduced WHERE collection = %s ORDER BY key", (collection,)
    )
    for (document,) in cur:
        yield orjson.loads(document)


def _copy_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
