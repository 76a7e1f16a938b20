"""The change document: a source row as JSON plus Estuary's `_meta` (what source-postgres
writes), built here and nowhere else.

`_meta.op` is c, u or d; `_meta.source` names the table, the commit time (`ts_ms`), the
transaction (`txid`) and its position `loc`; backfilled rows carry `snapshot: true`; updates
carry `before`, the previous document (added when the journal knows it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sophia_assets.flow.bindings import Binding


@dataclass(frozen=True)
class Location:
    """`_meta.source.loc`: [the end LSN of the last commit before this event, the event's own
    LSN, the LSN of its transaction's commit]. A backfilled row has only the first: the commit
    of the watermark that completed its chunk (0 until then)."""

    last_commit_end: int = 0
    event: int = 0
    commit: int = 0

    def as_list(self) -> list[int]:
        return [self.last_commit_end, self.event, self.commit]


@dataclass(slots=True)
class Change:
    """One change on its way to a collection's journal."""

    binding: Binding
    op: str  # c, u, d
    key: str
    document: dict[str, Any]
    unchanged: tuple[str, ...]  # columns whose unchanged TOASTed value must be carried over
    source_ts_ms: int | None
    commit_lsn: int


def with_meta(
    document: dict[str, Any],
    op: str,
    schema: str,
    table: str,
    ts_ms: int,
    loc: Location,
    txid: int | None = None,
) -> dict[str, Any]:
    """`document` with its `_meta`: a streamed change when `txid` is given, else a backfilled
    (snapshot) row."""
    source: dict[str, Any] = {"ts_ms": ts_ms, "schema": schema, "table": table}
    if txid is None:
        source["snapshot"] = True
    source["loc"] = loc.as_list()
    if txid is not None:
        source["txid"] = txid
    document["_meta"] = {"op": op, "source": source}
    return document


def derived(document: dict[str, Any], op: str) -> dict[str, Any]:
    """A derived collection's document: `_meta` holds only the op (the derivation's own
    checkpoint keeps the source position)."""
    document["_meta"] = {"op": op}
    return document


def as_snapshot(document: dict[str, Any]) -> dict[str, Any]:
    """A streamed change folded into a backfill chunk: it is emitted as a created snapshot
    row of the same table and time."""
    source = document["_meta"]["source"]
    return with_meta(document, "c", source["schema"], source["table"], source["ts_ms"], Location())


def located(document: dict[str, Any], loc: Location) -> None:
    """Sets the document's position (a backfilled row, once its chunk's watermark commits)."""
    document["_meta"]["source"]["loc"] = loc.as_list()


def set_before(document: dict[str, Any], previous: dict[str, Any]) -> None:
    """An update's `before`: the previous document without its own `_meta`."""
    document["_meta"]["before"] = {k: v for k, v in previous.items() if k != "_meta"}


def source_of(document: dict[str, Any]) -> dict[str, Any]:
    return (document.get("_meta") or {}).get("source") or {}


def op_of(document: dict[str, Any]) -> str | None:
    return (document.get("_meta") or {}).get("op")


def is_delete(document: dict[str, Any]) -> bool:
    return op_of(document) == "d"


def key_text(values: tuple) -> str:
    """A key's canonical text: the JSON array of its values (the journal's `key`)."""
    return orjson.dumps(list(values)).decode()
