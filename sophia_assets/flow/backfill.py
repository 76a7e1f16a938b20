"""The backfill (as source-postgres's backfill.go): tables are read in chunks in key order,
each chunk followed by a watermark. Until the watermark comes back through the stream,
changes to keys inside the chunk are folded into its rows (each change carries the full row,
so folding in commit order ends at the latest state), changes to keys the backfill has
passed are emitted, and changes beyond the chunk are dropped (a later chunk reads them).
A chunk ends at `backfill_chunk_size` rows or at the batch byte limit, whichever comes first,
so a table of megabyte rows is read in smaller chunks.

Per binding, the capture's checkpoint state is {"backfilled", "cursor" (the text of the
last key read), and after a reset "reconcile"}: re-backfilled tables then delete the keys
gone meanwhile. Key positions compare in the order the backfill reads by (key_order.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from sophia_assets.flow.bindings import Binding, CaptureSettings
from sophia_assets.flow.documents import (
    CREATE,
    DELETE,
    Change,
    as_snapshot,
    key_text,
    location,
    set_location,
    snapshot_meta,
)
from sophia_assets.flow.key_order import KeyOrder, output_text
from sophia_assets.flow.limits import BatchLimits
from sophia_assets.flow.source import SourceTable
from sophia_assets.flow.values import problem_of
from sophia_assets.flow.watermarks import BACKFILL, write_watermark

Row = tuple[tuple, dict[str, Any], str | None]  # (key position, document, problem)


def initial_state() -> dict[str, Any]:
    return {"backfilled": False, "cursor": None}


def rebackfill_state() -> dict[str, Any]:
    return {**initial_state(), "reconcile": True}


def key_order(table: SourceTable, binding: Binding) -> KeyOrder:
    return KeyOrder.of(
        binding.key_columns,
        [table.type_oids[table.columns.index(k)] for k in binding.key_columns],
    )


def passed(state: dict[str, Any], position: tuple, order: KeyOrder) -> bool:
    """Whether the backfill has read this key already: its changes are emitted as they come."""
    return state["backfilled"] or (
        state["cursor"] is not None and position <= order.position(state["cursor"])
    )


@dataclass
class Chunk:
    binding: Binding
    high: tuple | None  # last key's position; None when the chunk runs to the end of the table
    cursor: list | None  # that key's column texts, for the checkpoint
    rows: dict[str, Row]  # key text -> row
    watermark: str

    def covers(self, binding: Binding, position: tuple) -> bool:
        return binding is self.binding and (self.high is None or position <= self.high)

    def fold(self, change: Change, position: tuple) -> None:
        """A streamed change to a key inside the chunk replaces the row read."""
        if change.op == DELETE:
            self.rows.pop(change.key, None)
            return
        previous = self.rows.get(change.key)
        document = change.document
        for column in change.unchanged:
            if previous is not None and column in previous[1]:
                document[column] = previous[1][column]
        self.rows[change.key] = (position, as_snapshot(document), change.problem)

    def changes(self, lsn: int) -> list[Change]:
        """The chunk's rows as creates in key order, located at the watermark's commit."""
        out = []
        for key, (_position, document, problem) in sorted(
            self.rows.items(), key=lambda kv: kv[1][0]
        ):
            set_location(document, location(last_commit_end=lsn))
            out.append(Change(self.binding, CREATE, key, document, (), None, lsn, problem=problem))
        return out


def read_chunk(
    cur,
    settings: CaptureSettings,
    binding: Binding,
    table: SourceTable,
    cursor: list | None,
    limits: BatchLimits,
) -> Chunk:
    """Reads the rows after `cursor` (up to the chunk size or the byte limit), then writes
    the watermark that closes the chunk."""
    order = key_order(table, binding)
    keys = order.expressions()
    # Each value as its output function writes it (as pgoutput sends it); aliased, so
    # ORDER BY reads the key column itself and not its text.
    select_list = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(output_text(c), sql.Identifier(f"_c{n}"))
        for n, c in enumerate(table.columns)
    )
    where = sql.SQL("")
    parameters: list[Any] = []
    if cursor is not None:
        placeholders = sql.SQL(", ").join(sql.Placeholder() for _ in cursor)
        where = sql.SQL("WHERE ({}) > ({})").format(keys, placeholders)
        parameters = [str(value) for value in cursor]
    converters = table.converters()
    key_index = [table.columns.index(k) for k in binding.key_columns]
    rows: dict[str, Row] = {}
    last_texts: list | None = None
    scan_ms = int(time.time() * 1000)
    query = sql.SQL("SELECT {} FROM {} {} ORDER BY {} LIMIT %s").format(
        select_list, table.identifier, where, keys
    )
    scanned, cut = _scan(cur.connection, query, [*parameters, settings.chunk_size], limits)
    for row in scanned:
        problem = None
        try:
            document = {
                name: (None if value is None else convert(value))
                for name, value, convert in zip(table.columns, row, converters, strict=True)
            }
        except (ValueError, RecursionError):  # quarantined by the writer; the backfill goes on
            document, problem = problem_of(table.columns, row, converters)
        key_values = tuple(document[table.columns[i]] for i in key_index)
        last_texts = [row[i] for i in key_index]
        document["_meta"] = snapshot_meta(CREATE, scan_ms, table.namespace, table.name, location())
        rows[key_text(key_values)] = (order.position(last_texts), document, problem)
    # Rows read, not keys: two rows may share a key text (a date `infinity` and 9999-12-31).
    full = cut or len(scanned) == settings.chunk_size
    high = order.position(last_texts) if full else None
    watermark = write_watermark(cur, settings, BACKFILL)
    return Chunk(binding, high, last_texts if full else None, rows, watermark)


def _scan(conn, query, parameters: list, limits: BatchLimits) -> tuple[list[tuple], bool]:
    """The query's rows up to the byte limit, and whether it cut them there. A server-side
    cursor in a read transaction of its own, fetched in pages sized to what is left of the
    budget: neither this process nor the server holds more than that (a WITH HOLD cursor
    would have the server copy the whole result first)."""
    rows: list[tuple] = []
    size = 0
    page = 16
    autocommit, conn.autocommit = conn.autocommit, False
    try:
        with conn.cursor(name="sophia_backfill") as scan:
            scan.execute(query, parameters)
            while batch := scan.fetchmany(page):
                for row in batch:
                    rows.append(row)
                    size += sum(len(value) for value in row if value is not None)
                    if size >= limits.bytes:
                        return rows, True
                left = (limits.bytes - size) * len(rows) // max(size, 1)  # rows that fit
                page = max(1, min(1000, left // 4))
        return rows, False
    finally:
        conn.rollback()  # ends the read transaction
        conn.autocommit = autocommit


def source_keys(cur, binding: Binding, table: SourceTable) -> set[str]:
    """Every key now in the source table, as key text."""
    converters = table.converters()
    key_index = [table.columns.index(k) for k in binding.key_columns]
    columns = sql.SQL(", ").join(output_text(table.columns[i]) for i in key_index)
    cur.execute(sql.SQL("SELECT {} FROM {}").format(columns, table.identifier))
    key_converters = [converters[i] for i in key_index]
    return {key_text(_key_values(row, key_converters)) for row in cur}


def _key_values(texts: tuple, converters: list) -> tuple:
    """A key's values; the Postgres texts when one has no JSON form (as its quarantined
    documents are keyed)."""
    try:
        return tuple(convert(text) for convert, text in zip(converters, texts, strict=True))
    except ValueError:
        return texts


def reconciling_deletes(
    binding: Binding, table: SourceTable, stale: list[list], present: set[str], lsn: int
) -> list[Change]:
    """Deletes for the collection's keys that are no longer in the source: they were
    deleted while no slot was watching."""
    out = []
    for values in stale:
        key = key_text(tuple(values))
        if key in present:
            continue
        document = dict(zip(binding.key_columns, values, strict=True))
        document["_meta"] = snapshot_meta(
            DELETE,
            int(time.time() * 1000),
            table.namespace,
            table.name,
            location(last_commit_end=lsn),
        )
        out.append(Change(binding, DELETE, key, document, (), None, lsn))
    return out
