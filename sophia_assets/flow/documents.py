"""The change document, as Estuary's source-postgres writes it: the row's columns plus
`_meta` = {op, source: {ts_ms, schema, table, [snapshot], loc, [txid]}, [before]}.

Everything that builds or reads `_meta` goes through here, so the journal's documents keep
one shape (and one key order: the journal stores the JSON text as built).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from sophia_assets.flow.bindings import Binding

CREATE = "c"
UPDATE = "u"
DELETE = "d"


@dataclass(slots=True)
class Change:
    """One document bound for a collection, with what the commit path needs to journal it."""

    binding: Binding  # anything with `collection`, `validate` and `reducer`
    op: str  # CREATE, UPDATE or DELETE
    key: str  # the key as compact JSON, see `key_text`
    document: dict[str, Any]
    unchanged: tuple[str, ...]  # columns whose unchanged TOASTed value must be carried over
    source_ts_ms: int | None
    commit_lsn: int
    # For the create of a changed key: the old key, whose document holds the unchanged values.
    carried_from: str | None = None
    # Why a value has no faithful JSON form (values.py): the document goes to the quarantine.
    problem: str | None = None


def key_text(values: tuple) -> str:
    """A key as the journal stores it: a compact JSON array, e.g. `[42]`."""
    return orjson.dumps(list(values)).decode()


def location(last_commit_end: int = 0, event: int = 0, commit: int = 0) -> list[int]:
    """`_meta.source.loc`, Estuary's [end LSN of the previous commit, LSN of this event,
    final LSN of this event's transaction]; backfilled rows carry only the first."""
    return [last_commit_end, event, commit]


def streamed_meta(
    op: str, ts_ms: int, schema: str, table: str, loc: list[int], txid: int
) -> dict[str, Any]:
    """`_meta` of a change read from the replication stream."""
    return {
        "op": op,
        "source": {"ts_ms": ts_ms, "schema": schema, "table": table, "loc": loc, "txid": txid},
    }


def snapshot_meta(op: str, ts_ms: int, schema: str, table: str, loc: list[int]) -> dict[str, Any]:
    """`_meta` of a document the backfill produced (a scanned row or a reconciling delete)."""
    return {
        "op": op,
        "source": {"ts_ms": ts_ms, "schema": schema, "table": table, "snapshot": True, "loc": loc},
    }


def derived(document: dict[str, Any], op: str) -> dict[str, Any]:
    """A derived collection's document: `_meta` holds only the op (the derivation's own
    checkpoint keeps the source position)."""
    document["_meta"] = {"op": op}
    return document


def as_snapshot(document: dict[str, Any]) -> dict[str, Any]:
    """A streamed change folded into a backfill chunk becomes a scanned row (op `c`, no
    location until the chunk is emitted), keeping the change's commit time."""
    source = document["_meta"]["source"]
    document["_meta"] = snapshot_meta(
        CREATE, source["ts_ms"], source["schema"], source["table"], location()
    )
    return document


def set_location(document: dict[str, Any], loc: list[int]) -> None:
    document["_meta"]["source"]["loc"] = loc


def set_before(document: dict[str, Any], previous: dict[str, Any]) -> None:
    """An update carries the previous document (without its own `_meta`) as `before`."""
    document["_meta"]["before"] = {k: v for k, v in previous.items() if k != "_meta"}


def source_of(document: dict[str, Any]) -> dict[str, Any]:
    return document.get("_meta", {}).get("source", {})


def op_of(document: dict[str, Any]) -> str | None:
    """The document's `_meta.op` (None when it has none, or `_meta` is not an object)."""
    meta = document.get("_meta")
    return meta.get("op") if isinstance(meta, dict) else None


def is_delete(document: dict[str, Any]) -> bool:
    return op_of(document) == DELETE
