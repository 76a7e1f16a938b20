"""What the capture needs to know about each binding: source table, target collection, key
columns, schema validator and reducer, all derived from the catalog."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fastjsonschema

from sophia_assets.catalog.model import Capture, Catalog, Collection
from sophia_assets.flow.reduce import Reducer
from sophia_assets.flow.source import SourceError
from sophia_assets.flow.tasks import capture_task

SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
ESTUARY_DEFAULTS = {
    "publicationName": "flow_publication",
    "slotName": "flow_slot",
    "watermarksTable": "public.flow_watermarks",
    "backfill_chunk_size": 50_000,
}


@dataclass
class Binding:
    id: str  # `namespace.stream`
    namespace: str
    stream: str
    collection: Collection
    key_columns: tuple[str, ...]
    validate: Any  # compiled schema validator: raises JsonSchemaException
    reducer: Reducer


@dataclass(frozen=True)
class CaptureSettings:
    task: str
    publication: str
    slot: str
    watermarks_table: str
    chunk_size: int


def capture_settings(capture: Capture) -> CaptureSettings:
    advanced = {**ESTUARY_DEFAULTS, **(capture.connector.config.get("advanced") or {})}
    slot = str(advanced["slotName"])
    if not SLOT_NAME.fullmatch(slot):
        raise SourceError(
            f"{capture.name}: slotName {slot!r} is not a replication slot name; PostgreSQL "
            "allows lower-case letters, digits and underscores, at most 63"
        )
    return CaptureSettings(
        task=capture_task(capture.name),
        publication=str(advanced["publicationName"]),
        slot=slot,
        watermarks_table=str(advanced["watermarksTable"]),
        chunk_size=int(advanced["backfill_chunk_size"]),
    )


def capture_bindings(capture: Capture, catalog: Catalog) -> list[Binding]:
    bindings = []
    for binding in capture.bindings:
        collection = catalog.collections[binding.target]
        namespace = str(binding.resource.get("namespace") or "public")
        stream = str(binding.resource["stream"])
        bindings.append(
            Binding(
                id=f"{namespace}.{stream}",
                namespace=namespace,
                stream=stream,
                collection=collection,
                key_columns=_key_columns(collection),
                validate=fastjsonschema.compile(
                    validation_schema(collection.schema), formats=FORMATS
                ),
                reducer=Reducer(collection.schema),
            )
        )
    return bindings


def _is_date_time(text: str) -> bool:
    """RFC 3339 date-time, checked by the C parser rather than fastjsonschema's regex.
    Year 0000 is RFC 3339's (and `-infinity`'s, values.py) but not Python's."""
    if text.startswith("0000-"):
        text = "0001-" + text[5:]
    try:
        return "T" in text.upper() and datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


FORMATS = {"date-time": _is_date_time}

# Keywords that only annotate; `if`/`then`/`else` made only of them constrain nothing.
ANNOTATIONS = frozenset({"reduce", "title", "description", "$comment", "examples", "default"})


def validation_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without conditionals that only choose a `reduce` annotation: they cannot
    make a document invalid, and evaluating them for every document is most of the cost."""
    branches = [schema.get("then") or {}, schema.get("else") or {}]
    if "if" in schema and all(set(b) <= ANNOTATIONS for b in branches):
        return {k: v for k, v in schema.items() if k not in ("if", "then", "else")}
    return schema


def _key_columns(collection: Collection) -> tuple[str, ...]:
    columns = []
    for pointer in collection.key:
        column = pointer[1:]
        if "/" in column:
            raise SourceError(
                f"collection {collection.name}: key {pointer} is nested; a captured "
                "collection's key must name top-level columns"
            )
        columns.append(column.replace("~1", "/").replace("~0", "~"))
    return tuple(columns)
