"""The quarantine (`flow.quarantine`): documents a capture could not journal, each with the
reason and its source position, so that one bad row never stops the capture. Listing,
showing and replaying them is what `sophia flow quarantine` runs.

A replay publishes a collection's quarantined documents in the order they were captured,
through the same commit path as the capture (validation, reduction, journal, reduced view),
under the capture's lock so that no capture writes the journal meanwhile. A document is
dropped instead when the journal already holds a later change of its key (publishing it
would roll the key back), and kept when its reason is a value with no JSON form: that is
fixed in the source row, which the capture then reads again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import orjson

from sophia_assets.flow import journal
from sophia_assets.flow.bindings import Binding
from sophia_assets.flow.documents import CREATE, Change, key_text, op_of, source_of
from sophia_assets.flow.tasks import capture_lock
from sophia_assets.flow.writer import checked_text, write_changes

VALUE_PROBLEM = "value: "  # the reason's prefix for a value with no JSON form


class ReplayRefused(RuntimeError):
    """The replay cannot run now (the capture is running); the message says what to do."""


@dataclass(frozen=True)
class Quarantined:
    id: int
    collection: str
    reason: str
    source: dict[str, Any]
    quarantined_at: datetime
    document: dict[str, Any] | None = None  # only when asked for

    def as_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "collection": self.collection,
            "reason": self.reason,
            "source": self.source,
            "quarantined_at": self.quarantined_at.isoformat(),
        }
        if self.document is not None:
            out["document"] = self.document
        return out


@dataclass
class ReplayReport:
    collection: str
    published: list[int] = field(default_factory=list)
    superseded: list[int] = field(default_factory=list)
    still_quarantined: list[int] = field(default_factory=list)  # reasons updated
    kept: list[int] = field(default_factory=list)  # value problems: fix the source row


def listing(cur, collection: str | None = None) -> list[Quarantined]:
    cur.execute(
        "SELECT id, collection, reason, source::text, quarantined_at FROM flow.quarantine "
        "WHERE %(c)s::text IS NULL OR collection = %(c)s ORDER BY id",
        {"c": collection},
    )
    return [Quarantined(i, c, r, orjson.loads(s), at) for i, c, r, s, at in cur.fetchall()]


def one(cur, quarantine_id: int) -> Quarantined | None:
    cur.execute(
        "SELECT id, collection, reason, source::text, quarantined_at, document::text "
        "FROM flow.quarantine WHERE id = %s",
        (quarantine_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    i, c, r, s, at, d = row
    return Quarantined(i, c, r, orjson.loads(s), at, orjson.loads(d))


def replay(conn, task: str, binding: Binding, ids: list[int] | None = None) -> ReplayReport:
    """Publishes the binding's collection's quarantined documents (all, or `ids`) in order,
    in one transaction. Raises ReplayRefused while the capture `task` runs."""
    name = binding.collection.name
    report = ReplayReport(name)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (capture_lock(task),))
        if not cur.fetchone()[0]:
            conn.rollback()
            raise ReplayRefused(
                f"capture {task} is running (sophia flow serve, or a Dagster run); stop it "
                "and replay again: the replay writes the same journal"
            )
        rows = _quarantined(cur, name, ids, binding.key_columns)
        latest = _latest_positions(cur, name, [key for _, key, _, _ in rows])
        changes: list[Change] = []
        for quarantine_id, key, reason, document in rows:
            if reason.startswith(VALUE_PROBLEM):
                report.kept.append(quarantine_id)
            elif key in latest and latest[key] >= position(document):
                report.superseded.append(quarantine_id)
            elif (problem := checked_text(binding.validate, document)[1]) is not None:
                cur.execute(
                    "UPDATE flow.quarantine SET reason = %s WHERE id = %s",
                    (problem, quarantine_id),
                )
                report.still_quarantined.append(quarantine_id)
            else:
                changes.append(_change(binding, key, document))
                report.published.append(quarantine_id)
        if changes:
            figures = SimpleNamespace(collections={})
            write_changes(cur, name, changes, journal.next_offset(cur, name), figures)
        cur.execute(
            "DELETE FROM flow.quarantine WHERE id = ANY(%s)",
            (report.published + report.superseded,),
        )
    conn.commit()
    return report


def position(document: dict[str, Any]) -> tuple[int, int]:
    """Where a change stands in the source's commit order: (commit LSN, event LSN); a
    backfilled row stands at its chunk's watermark."""
    loc = source_of(document).get("loc") or [0, 0, 0]
    return (loc[2] or loc[0], loc[1])


def _quarantined(
    cur, name: str, ids: list[int] | None, key_columns: tuple[str, ...]
) -> list[tuple[int, str, str, dict]]:
    cur.execute(
        "SELECT id, reason, document::text FROM flow.quarantine WHERE collection = %s "
        "AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[])) ORDER BY id FOR UPDATE",
        (name, ids, ids),
    )
    out = []
    for quarantine_id, reason, text in cur.fetchall():
        document = orjson.loads(text)
        key = key_text(tuple(document.get(column) for column in key_columns))
        out.append((quarantine_id, key, reason, document))
    return out


def _latest_positions(cur, name: str, keys: list[str]) -> dict[str, tuple[int, int]]:
    """The newest journaled source position of each key (one scan of the collection)."""
    if not keys:
        return {}
    cur.execute(
        "SELECT key::text, document #> '{_meta,source,loc}' FROM flow.journal "
        "WHERE collection = %s AND key = ANY(%s::jsonb[])",
        (name, list(set(keys))),
    )
    latest: dict[str, tuple[int, int]] = {}
    for key, loc in cur.fetchall():
        compact = journal.canonical_key(key)
        at = position({"_meta": {"source": {"loc": loc}}})
        latest[compact] = max(latest.get(compact, at), at)
    return latest


def _change(binding: Binding, key: str, document: dict[str, Any]) -> Change:
    """The document as the capture would have handed it to the writer."""
    ts_ms = source_of(document).get("ts_ms")
    return Change(
        binding, op_of(document) or CREATE, key, document, (), ts_ms, position(document)[0]
    )
