"""Watermarks (as source-postgres): a row written to the watermarks table marks a point in
the replication stream. Its commit coming back through the slot tells the capture that every
change before it has been seen: the end of a backfill chunk's window, the WAL position a
drain must reach, or (heartbeat) just a reason for an idle slot to advance."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg2 import sql

from sophia_assets.flow.bindings import CaptureSettings
from sophia_assets.flow.source import relation

BACKFILL = "backfill"
DRAIN = "drain"
HEARTBEAT = "heartbeat"


def write_watermark(cur, settings: CaptureSettings, purpose: str) -> str:
    """Writes a fresh watermark for the capture's slot; returns it."""
    mark = f"{purpose}:{uuid.uuid4()}"
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (slot, watermark) VALUES (%s, %s) "
            "ON CONFLICT (slot) DO UPDATE SET watermark = EXCLUDED.watermark"
        ).format(sql.Identifier(*relation(settings.watermarks_table))),
        (settings.slot, mark),
    )
    return mark


def watermark_of(values: Sequence[Any] | None) -> str | None:
    """The watermark in a replicated (slot, watermark) tuple of the watermarks table."""
    return values[1] if values and len(values) > 1 else None
