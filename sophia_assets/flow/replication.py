"""Reading the replication stream: how a relation's tuples become documents, the transaction
being received, and which errors mean the connection was lost (reconnect) rather than refused
(raise)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg2

from sophia_assets.flow import pgoutput
from sophia_assets.flow.bindings import Binding
from sophia_assets.flow.documents import Change
from sophia_assets.flow.values import Converter, converter


@dataclass(frozen=True)
class RelationPlan:
    """How to turn a relation's tuples into documents; rebuilt on every Relation message, so
    a table altered while captured is read with its new columns."""

    relation: pgoutput.Relation
    binding: Binding | None
    names: tuple[str, ...]
    converters: tuple[Converter, ...]
    key_index: tuple[int, ...]


@dataclass
class Transaction:
    begin: pgoutput.Begin
    skip: bool
    changes: list[Change] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)


def connection_lost(err: psycopg2.Error) -> bool:
    """A lost connection or stream (server restart, network), as opposed to an error the
    server raised about our statements, which reconnecting would only repeat."""
    if isinstance(err, psycopg2.OperationalError | psycopg2.InterfaceError):
        return True
    code = err.pgcode or ""
    # No code: the client lost the stream ("no COPY in progress"); 08: connection exception;
    # 57P: the server is shutting down or restarting.
    return code == "" or code.startswith(("08", "57P"))


def relation_plan(relation: pgoutput.Relation, binding: Binding | None) -> RelationPlan:
    names = tuple(c.name for c in relation.columns)
    key_index = tuple(names.index(k) for k in binding.key_columns) if binding else ()
    return RelationPlan(
        relation,
        binding,
        names,
        tuple(converter(c.type_oid) for c in relation.columns),
        key_index,
    )


def decode_row(
    plan: RelationPlan, message: pgoutput.Insert | pgoutput.Update | pgoutput.Delete
) -> tuple[str, tuple, dict[str, Any], tuple[str, ...]]:
    """(op, key values, document, unchanged columns) of a row change. A delete carries only
    the key; an unchanged TOASTed value is left out and named, to be carried over."""
    if isinstance(message, pgoutput.Delete):
        op, values = "d", message.old
    else:
        op, values = ("c" if isinstance(message, pgoutput.Insert) else "u"), message.new
    converters = plan.converters
    key_values = tuple(converters[i](values[i]) for i in plan.key_index)
    if op == "d":
        key_document = {plan.names[i]: key_values[n] for n, i in enumerate(plan.key_index)}
        return op, key_values, key_document, ()
    document: dict[str, Any] = {}
    unchanged: tuple[str, ...] = ()
    for name, value, convert in zip(plan.names, values, converters, strict=True):
        if value is None:
            document[name] = None
        elif value is pgoutput.UNCHANGED:
            unchanged += (name,)
        else:
            document[name] = convert(value)
    return op, key_values, document, unchanged
