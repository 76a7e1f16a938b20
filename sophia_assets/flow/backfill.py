"""Backfill with watermarks, as Estuary's source-postgres does it: read a chunk of rows after
the cursor in key order, then write a watermark row; the chunk's rows are emitted when the
watermark comes back through the replication stream (see capture.py for how changes racing
the chunk are folded in). Also the scan that finds keys deleted while no slot was watching."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from sophia_assets.flow.bindings import Binding, CaptureSettings
from sophia_assets.flow.documents import Location, key_text, with_meta
from sophia_assets.flow.source import SourceTable


@dataclass
class Chunk:
    binding: Binding
    high: tuple | None  # last key of the chunk; None when it runs to the end of the table
    rows: dict[str, tuple[tuple, dict[str, Any]]]  # key -> (key values, document)
    watermark: str


def read_chunk(
    cur, table: SourceTable, binding: Binding, cursor: list | None, settings: CaptureSettings
) -> Chunk:
    """The next `chunk_size` rows after `cursor`, as snapshot documents, and the watermark
    written after reading them."""
    keys = ", ".join(order_column(table, k) for k in binding.key_columns)
    # Aliased, so ORDER BY reads the key column itself and not its text.
    select_list = ", ".join(f'"{c}"::text AS _c{n}' for n, c in enumerate(table.columns))
    where = ""
    parameters: list[Any] = []
    if cursor is not None:
        where = f"WHERE ({keys}) > ({', '.join(['%s'] * len(cursor))})"
        parameters = list(cursor)
    converters = table.converters()
    key_index = [table.columns.index(k) for k in binding.key_columns]
    rows: dict[str, tuple[tuple, dict[str, Any]]] = {}
    scan_ms = int(time.time() * 1000)
    cur.execute(
        f"SELECT {select_list} FROM {table.quoted} {where} ORDER BY {keys} LIMIT %s",
        [*parameters, settings.chunk_size],
    )
    for row in cur:
        document = {
            name: (None if value is None else convert(value))
            for name, value, convert in zip(table.columns, row, converters, strict=True)
        }
        key_values = tuple(document[table.columns[i]] for i in key_index)
        with_meta(document, "c", table.namespace, table.name, scan_ms, Location())
        rows[key_text(key_values)] = (key_values, document)
    high = None
    if len(rows) == settings.chunk_size:
        high = next(reversed(rows.values()))[0]
    watermark = write_watermark(cur, settings, "backfill")
    return Chunk(binding, high, rows, watermark)


def present_keys(cur, table: SourceTable, binding: Binding) -> set[str]:
    """Every key now in the source table, as key text."""
    converters = table.converters()
    key_index = [table.columns.index(k) for k in binding.key_columns]
    columns = ", ".join(f'"{table.columns[i]}"::text' for i in key_index)
    cur.execute(f"SELECT {columns} FROM {table.quoted}")
    return {
        key_text(tuple(converters[i](v) for i, v in zip(key_index, row, strict=True)))
        for row in cur
    }


def write_watermark(cur, settings: CaptureSettings, purpose: str) -> str:
    """A watermark row in the source; its change marks a point of the replication stream."""
    mark = f"{purpose}:{uuid.uuid4()}"
    cur.execute(
        f"INSERT INTO {settings.watermarks_table} (slot, watermark) VALUES (%s, %s) "
        "ON CONFLICT (slot) DO UPDATE SET watermark = EXCLUDED.watermark",
        (settings.slot, mark),
    )
    return mark


def order_column(table: SourceTable, column: str) -> str:
    """Keys order by bytes (COLLATE "C"), as Python compares strings."""
    text_types = {25, 1043, 1042}
    oid = table.type_oids[table.columns.index(column)]
    return f'"{column}" COLLATE "C"' if oid in text_types else f'"{column}"'
