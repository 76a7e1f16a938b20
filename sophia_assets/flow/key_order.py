"""The order of a table's keys, the same in SQL and in Python. The backfill reads a table in
this order, and the capture compares every streamed change's key with how far the backfill
has read. Were the two orders to disagree (numeric "9" after "50000" as text, citext, inet,
enums, domains), a change made during a backfill could be dropped for good.

Each key column compares by one of these kinds:
- `int` (int2/4/8, oid): the column's own order; Python ints.
- `numeric`: the column's own order; Decimals, NaN above everything as Postgres sorts it.
- `text` (text, varchar, char, whatever their collation): `COLLATE "C"`, byte order, which
  is the code point order Python compares strings by.
- `uuid`: the column's own order (its bytes), which is the order of its lowercase hex text.
- `text-form` (everything else: citext, inet, enums, domains, dates, ...): the value's text
  under `COLLATE "C"`, on both sides. Right for any type, at the price of a sort the key's
  index cannot serve.

Positions are built from the values' text as the type's output function writes it (what
pgoutput sends, and what `output_text` reads; a cast to text differs for some types: inet
adds its netmask, bool spells out true), so the cursor in the checkpoint is that text too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg2 import sql

INT_TYPES = frozenset({20, 21, 23, 26})  # int8, int2, int4, oid
NUMERIC = 1700
TEXT_TYPES = frozenset({25, 1043, 1042})  # text, varchar, bpchar
UUID = 2950


@dataclass(frozen=True)
class KeyOrder:
    columns: tuple[str, ...]
    kinds: tuple[str, ...]

    @classmethod
    def of(cls, columns: Sequence[str], type_oids: Sequence[int]) -> KeyOrder:
        return cls(tuple(columns), tuple(_kind(oid) for oid in type_oids))

    def expressions(self) -> sql.Composable:
        """The ORDER BY (and row comparison) list the backfill reads by."""
        return sql.SQL(", ").join(
            _expression(column, kind) for column, kind in zip(self.columns, self.kinds, strict=True)
        )

    def position(self, texts: Sequence[Any]) -> tuple:
        """Where a key stands in that order, from its columns' text (or, in a checkpoint
        written before the cursor was text, their converted values)."""
        return tuple(_element(kind, value) for kind, value in zip(self.kinds, texts, strict=True))


def _kind(type_oid: int) -> str:
    if type_oid in INT_TYPES:
        return "int"
    if type_oid == NUMERIC:
        return "numeric"
    if type_oid in TEXT_TYPES:
        return "text"
    if type_oid == UUID:
        return "uuid"
    return "text-form"


def output_text(column: str) -> sql.Composable:
    """The column's value as its type's output function writes it; NULL stays NULL.
    (`concat` converts with the output function, where `::text` may use a cast.)"""
    name = sql.Identifier(column)
    return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE concat({}) END").format(name, name)


def _expression(column: str, kind: str) -> sql.Composable:
    name = sql.Identifier(column)
    if kind == "text":
        return sql.SQL('{} COLLATE "C"').format(name)
    if kind == "text-form":
        return sql.SQL('({}) COLLATE "C"').format(output_text(column))
    return name


def _element(kind: str, value: Any) -> tuple:
    """(0, comparable value); NaN (1,) and NULL (2,) sort last, as in Postgres."""
    if value is None:
        return (2,)
    if kind == "int":
        return (0, int(value))
    if kind == "numeric":
        return (1,) if str(value) == "NaN" else (0, Decimal(str(value)))
    return (0, str(value))
