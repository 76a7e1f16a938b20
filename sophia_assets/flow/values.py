"""Postgres column values, as text (pgoutput and `::text` casts give the same text), turned
into JSON values faithfully: integers stay integers, numeric keeps every digit (as a string,
as Estuary does), timestamps become RFC 3339, json/jsonb are parsed, arrays become lists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

# Type OIDs from pg_type.dat: they are fixed across PostgreSQL versions.
INTEGERS = {20, 21, 23, 26, 28}  # int8, int2, int4, oid, xid
FLOATS = {700, 701}  # float4, float8
BOOL = 16
JSON = {114, 3802}  # json, jsonb
TIMESTAMPTZ = 1184
TIMESTAMP = 1114
# Array type OID -> element type OID.
ARRAYS = {
    1005: 21,
    1007: 23,
    1016: 20,
    1000: 16,
    1009: 25,
    1015: 1043,
    1014: 1042,
    1231: 1700,
    1021: 700,
    1022: 701,
    199: 114,
    3807: 3802,
    1185: 1184,
    2951: 2950,
}

Converter = Callable[[str], Any]


def _integer(text: str) -> int:
    return int(text)


def _float(text: str) -> float | str:
    value = float(text)
    # NaN and infinities are not JSON numbers; keep Postgres' spelling.
    return text if value != value or value in (float("inf"), float("-inf")) else value


def _bool(text: str) -> bool:
    return text == "t"


def _timestamptz(text: str) -> str:
    """`2026-11-24 02:39:50.86+00` -> `2026-11-24T02:39:50.86+00:00`."""
    date, _, rest = text.partition(" ")
    sign_at = max(rest.rfind("+"), rest.rfind("-"))
    zone = rest[sign_at:]
    if len(zone) == 3:
        zone += ":00"
    return f"{date}T{rest[:sign_at]}{zone}"


def _timestamp(text: str) -> str:
    return text.replace(" ", "T", 1)


def _text(text: str) -> str:
    return text


def converter(type_oid: int) -> Converter:
    if type_oid in INTEGERS:
        return _integer
    if type_oid == BOOL:
        return _bool
    if type_oid in FLOATS:
        return _float
    if type_oid in JSON:
        return orjson.loads
    if type_oid == TIMESTAMPTZ:
        return _timestamptz
    if type_oid == TIMESTAMP:
        return _timestamp
    if type_oid in ARRAYS:
        element = converter(ARRAYS[type_oid])
        return lambda text: _array(text, element)
    return _text  # numeric, text, varchar, uuid, date, ...: exact text


def _array(text: str, element: Converter) -> list:
    """Parses a Postgres array literal (`{1,2,NULL}`, `{"a b","c\\"d"}`, `{{1,2},{3,4}}`)."""
    if text.startswith("["):  # explicit bounds: [0:1]={...}
        text = text[text.index("=") + 1 :]
    value, end = _array_at(text, 0, element)
    return value


def _array_at(text: str, index: int, element: Converter) -> tuple[list, int]:
    assert text[index] == "{"
    index += 1
    items: list = []
    while text[index] != "}":
        char = text[index]
        if char == "{":
            item, index = _array_at(text, index, element)
            items.append(item)
        elif char == '"':
            index += 1
            chars = []
            while text[index] != '"':
                if text[index] == "\\":
                    index += 1
                chars.append(text[index])
                index += 1
            index += 1
            items.append(element("".join(chars)))
        else:
            end = index
            while text[end] not in ",}":
                end += 1
            raw = text[index:end]
            items.append(None if raw == "NULL" else element(raw))
            index = end
        if text[index] == ",":
            index += 1
    return items, index + 1
