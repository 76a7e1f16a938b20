"""Postgres column values, as text (pgoutput and `::text` casts give the same text), turned
into JSON values faithfully: integers stay integers, numeric keeps every digit (as a string,
as Estuary does), timestamps become RFC 3339, json/jsonb are parsed, arrays become lists.

A value that has no faithful JSON form raises `ValueError` saying why: json nested beyond
the parser's depth, numbers beyond 64-bit precision or float range, U+0000 (no PostgreSQL
text column downstream can hold it), BC dates and years past 9999. `problem_of` turns that
into a problem for the quarantine. `infinity`/`-infinity` dates and timestamps become the
ends of RFC 3339's range.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

# Type OIDs from pg_type.dat: they are fixed across PostgreSQL versions.
INTEGERS = {20, 21, 23, 26, 28}  # int8, int2, int4, oid, xid
FLOATS = {700, 701}  # float4, float8
BOOL = 16
JSON = {114, 3802}  # json, jsonb
TIMESTAMPTZ = 1184
TIMESTAMP = 1114
DATE = 1082
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


INFINITE_TIMESTAMPS = {"infinity": "9999-12-31T23:59:59Z", "-infinity": "0000-01-01T00:00:00Z"}
INFINITE_DATES = {"infinity": "9999-12-31", "-infinity": "0000-01-01"}
# 20 digits: more than any 64-bit integer holds, which is where orjson starts rounding.
_LONG_DIGITS = re.compile(r"[0-9]{20,}")


def _rfc3339_date(text: str) -> None:
    """RFC 3339 has four-digit years from 0000 on: BC and five-digit years do not fit."""
    if text.endswith(" BC") or not text[4:5] == "-":
        raise ValueError(f"{text!r} is outside RFC 3339's years 0000-9999")


def _timestamptz(text: str) -> str:
    """`2026-11-24 02:39:50.86+00` -> `2026-11-24T02:39:50.86+00:00`."""
    if text in INFINITE_TIMESTAMPS:
        return INFINITE_TIMESTAMPS[text]
    _rfc3339_date(text)
    date, _, rest = text.partition(" ")
    sign_at = max(rest.rfind("+"), rest.rfind("-"))
    zone = rest[sign_at:]
    if len(zone) == 3:
        zone += ":00"
    return f"{date}T{rest[:sign_at]}{zone}"


def _timestamp(text: str) -> str:
    if text in INFINITE_TIMESTAMPS:
        return INFINITE_TIMESTAMPS[text]
    _rfc3339_date(text)
    return text.replace(" ", "T", 1)


def _date(text: str) -> str:
    if text in INFINITE_DATES:
        return INFINITE_DATES[text]
    _rfc3339_date(text)
    return text


def _json(text: str) -> Any:
    """Parsed json/jsonb; orjson's errors (depth, lone surrogates, 1e400) are ValueErrors."""
    value = orjson.loads(text)
    if _LONG_DIGITS.search(text) and _exact(text) != value:
        raise ValueError("a number has more digits than 64 bits hold; JSON readers round it")
    if "\\u0000" in text and _holds_nul(value):
        raise ValueError("a string holds U+0000, which no PostgreSQL text value can hold")
    return value


def _exact(text: str) -> Any:
    """The value with exact integers (the standard library's parser), for comparison."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep to check its numbers") from None


def _holds_nul(value: Any) -> bool:
    """Whether any string (key or value) holds U+0000; iterative: values nest 1,024 deep."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


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
        return _json
    if type_oid == TIMESTAMPTZ:
        return _timestamptz
    if type_oid == TIMESTAMP:
        return _timestamp
    if type_oid == DATE:
        return _date
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


def problem_of(
    names: Sequence[str], values: Sequence[Any], converters: Sequence[Converter]
) -> tuple[dict[str, Any], str]:
    """After a conversion failed: the row with each value that has no faithful form kept as
    its Postgres text, and the reason naming each such column. Not on the hot path."""
    document: dict[str, Any] = {}
    problems: list[str] = []
    for name, value, convert in zip(names, values, converters, strict=True):
        if not isinstance(value, str):  # NULL; an unchanged TOASTed value is left out
            if value is None:
                document[name] = None
            continue
        try:
            document[name] = convert(value)
        except (ValueError, RecursionError) as err:
            document[name] = value
            problems.append(f"column {name!r}: {err}")
    return document, "; ".join(problems) or "no column failed on a second reading"
