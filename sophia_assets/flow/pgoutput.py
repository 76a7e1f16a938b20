"""Decoder of PostgreSQL's pgoutput logical replication protocol, version 1.

Message layouts are those of the PostgreSQL manual, "Logical Replication Message Formats".
Only what a capture needs is kept: transaction bounds, relation descriptions and row changes.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

# A tuple column is NULL, an unchanged TOASTed value the server did not send, or text.
NULL = None


class Unchanged:
    """An unchanged TOASTed value ('u'): the previous value must be kept."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()

_INT8 = struct.Struct("!q")
_BEGIN = struct.Struct("!qqi")
_COMMIT = struct.Struct("!bqqq")
_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_COLUMN_TAIL = struct.Struct("!ii")
# pgoutput timestamps are microseconds since 2000-01-01 UTC.
POSTGRES_EPOCH_MS = 946_684_800_000


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_ts_ms: int
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_ts_ms: int


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Insert:
    relid: int
    new: list


@dataclass(frozen=True, slots=True)
class Update:
    relid: int
    old: list | None  # only with REPLICA IDENTITY FULL ('O') or a changed key ('K')
    new: list


@dataclass(frozen=True, slots=True)
class Delete:
    relid: int
    old: list  # the key columns (or the whole row with REPLICA IDENTITY FULL)


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ignored:
    kind: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Ignored


class ProtocolError(ValueError):
    """The stream holds something that is not pgoutput version 1."""


def decode(payload: bytes) -> Message:
    kind = payload[0:1]
    if kind == b"I":
        (relid,) = _INT32.unpack_from(payload, 1)
        return Insert(relid, _tuple(payload, 6)[0])
    if kind == b"U":
        (relid,) = _INT32.unpack_from(payload, 1)
        marker = payload[5:6]
        old = None
        offset = 6
        if marker in (b"K", b"O"):
            old, offset = _tuple(payload, 6)
            marker = payload[offset : offset + 1]
            offset += 1
        if marker != b"N":
            raise ProtocolError(f"update message without new tuple (got {marker!r})")
        return Update(relid, old, _tuple(payload, offset)[0])
    if kind == b"D":
        (relid,) = _INT32.unpack_from(payload, 1)
        return Delete(relid, _tuple(payload, 6)[0])
    if kind == b"B":
        final_lsn, ts, xid = _BEGIN.unpack_from(payload, 1)
        return Begin(final_lsn, POSTGRES_EPOCH_MS + ts // 1000, xid)
    if kind == b"C":
        _flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(payload, 1)
        return Commit(commit_lsn, end_lsn, POSTGRES_EPOCH_MS + ts // 1000)
    if kind == b"R":
        return _relation(payload)
    if kind == b"T":
        (count,) = _INT32.unpack_from(payload, 1)
        relids = struct.unpack_from(f"!{count}i", payload, 6)
        return Truncate(tuple(relids))
    if kind in (b"O", b"Y", b"M"):
        return Ignored(kind.decode())
    raise ProtocolError(f"unknown pgoutput message {kind!r}")


def _string(payload: bytes, offset: int) -> tuple[str, int]:
    end = payload.index(b"\0", offset)
    return payload[offset:end].decode(), end + 1


def _relation(payload: bytes) -> Relation:
    (relid,) = _INT32.unpack_from(payload, 1)
    namespace, offset = _string(payload, 5)
    name, offset = _string(payload, offset)
    identity = chr(payload[offset])
    (count,) = _INT16.unpack_from(payload, offset + 1)
    offset += 3
    columns = []
    for _ in range(count):
        flags = payload[offset]
        column, offset = _string(payload, offset + 1)
        type_oid, _typmod = _COLUMN_TAIL.unpack_from(payload, offset)
        offset += 8
        columns.append(Column(column, type_oid, bool(flags & 1)))
    return Relation(relid, namespace or "pg_catalog", name, identity, tuple(columns))


def _tuple(payload: bytes, offset: int) -> tuple[list, int]:
    """TupleData at `offset` -> (values, offset after it); values are str, None or UNCHANGED."""
    (count,) = _INT16.unpack_from(payload, offset)
    offset += 2
    values: list = []
    append = values.append
    for _ in range(count):
        kind = payload[offset]
        offset += 1
        if kind == 116:  # 't'
            (length,) = _INT32.unpack_from(payload, offset)
            offset += 4
            append(payload[offset : offset + length].decode())
            offset += length
        elif kind == 110:  # 'n'
            append(NULL)
        elif kind == 117:  # 'u'
            append(UNCHANGED)
        else:
            raise ProtocolError(f"unsupported tuple column kind {chr(kind)!r}")
    return values, offset


@functools.lru_cache(maxsize=4096)  # every change of a transaction shares its commit LSN
def lsn_text(lsn: int) -> str:
    """64-bit LSN -> Postgres' `X/Y` text form."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_int(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)
