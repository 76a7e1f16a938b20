"""Reduction of documents by key, as a collection schema's `reduce` annotations say.

The root annotation may be conditional (`if`/`then`/`else`, as Estuary's source-postgres
schemas make deletes: `_meta.op == "d"` -> `{strategy: merge, delete: true}`). Nested
properties reduce by their own annotations; without one, a property is last-write-wins.
"""

from __future__ import annotations

from typing import Any

import fastjsonschema

from sophia_assets.flow.documents import op_of

DEFAULT = {"strategy": "lastWriteWins"}


class Reducer:
    def __init__(self, schema: dict[str, Any]):
        self._schema = schema
        self._condition = None
        self._meta_op = None
        if "if" in schema and ("then" in schema or "else" in schema):
            self._meta_op = _meta_op_condition(schema["if"])
            if self._meta_op is None:
                self._condition = fastjsonschema.compile(schema["if"])
        self._then = (schema.get("then") or {}).get("reduce")
        self._else = (schema.get("else") or {}).get("reduce")
        self._root = schema.get("reduce") or DEFAULT

    def annotation(self, document: dict[str, Any]) -> dict[str, Any]:
        if self._meta_op is not None:
            chosen = self._then if op_of(document) == self._meta_op else self._else
            if chosen is not None:
                return chosen
        elif self._condition is not None:
            try:
                self._condition(document)
                chosen = self._then
            except fastjsonschema.JsonSchemaException:
                chosen = self._else
            if chosen is not None:
                return chosen
        return self._root

    def reduce(
        self, previous: dict[str, Any] | None, document: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The reduced document after `document`, or None when it deletes the key."""
        annotation = self.annotation(document)
        if annotation.get("delete"):
            return None
        if previous is None:
            return document
        return _combine(self._schema, previous, document, annotation.get("strategy"))


def _meta_op_condition(condition: dict[str, Any]) -> str | None:
    """The op of Estuary's usual delete condition, `{required: [_meta], properties: {_meta:
    {properties: {op: {const: X}}}}}`, checked directly instead of by a schema validator."""
    try:
        meta = condition["properties"]["_meta"]
        op = meta["properties"]["op"]["const"]
    except (KeyError, TypeError):
        return None
    extra = set(condition) - {"required", "properties"}
    if extra or set(condition["properties"]) != {"_meta"} or set(meta) != {"properties"}:
        return None
    if set(meta["properties"]) != {"op"} or set(meta["properties"]["op"]) != {"const"}:
        return None
    if condition.get("required", ["_meta"]) != ["_meta"]:
        return None
    return op if isinstance(op, str) else None


def _combine(schema: dict[str, Any], left: Any, right: Any, strategy: str | None) -> Any:
    if strategy == "merge" and isinstance(left, dict) and isinstance(right, dict):
        merged = dict(left)
        properties = schema.get("properties") or {}
        for name, value in right.items():
            if name not in merged:
                merged[name] = value
                continue
            child = properties.get(name) or {}
            child_strategy = (child.get("reduce") or DEFAULT).get("strategy")
            merged[name] = _combine(child, merged[name], value, child_strategy)
        return merged
    if strategy == "firstWriteWins":
        return left
    if strategy == "sum" and _numbers(left, right):
        return left + right
    if strategy == "minimize" and _numbers(left, right):
        return min(left, right)
    if strategy == "maximize" and _numbers(left, right):
        return max(left, right)
    if strategy == "append" and isinstance(left, list) and isinstance(right, list):
        return left + right
    return right  # lastWriteWins, and any strategy whose operands do not fit it


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
