"""What Estuary's build checks (crates/validation) and our own conventions require of a
catalog, beyond its shape: names, references, keys, reductions, bindings and secrets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from sophia_assets.catalog.errors import CatalogIssue
from sophia_assets.catalog.loader import LoadedFiles

# Estuary: paths of Unicode letters, numbers, '-', '_' or '.', separated by single slashes.
NAME = re.compile(r"^[\w\-.]+(/[\w\-.]+)*$")
TOKEN = re.compile(r"^[\w\-.]+$")
KEY_TYPES = frozenset({"integer", "string", "boolean"})
REDUCE_STRATEGIES = frozenset(
    {
        "append",
        "firstWriteWins",
        "lastWriteWins",
        "merge",
        "minimize",
        "maximize",
        "set",
        "sum",
    }
)
SECRET_KEY = re.compile(r"password|secret|token|api_?key|credential|private_?key", re.I)
ENV_REFERENCE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*\}$")


def rule_issues(loaded: LoadedFiles) -> list[CatalogIssue]:
    issues: list[CatalogIssue] = []
    for check in (_names, _references, _keys, _reductions, _duplicate_bindings, _secrets):
        issues.extend(check(loaded))
    return issues


def _names(loaded: LoadedFiles) -> Iterator[CatalogIssue]:
    for section in ("captures", "collections", "materializations"):
        for name, spec in getattr(loaded, section).items():
            if not NAME.match(name):
                yield CatalogIssue(
                    spec.file,
                    (section, name),
                    f"invalid name {name!r}: use letters, numbers, '-', '_' or '.', in parts "
                    "separated by single '/', not starting or ending with '/'",
                )
    for name, collection in loaded.collections.items():
        for index, transform in enumerate(_transforms(collection)):
            if not TOKEN.match(transform.name):
                yield CatalogIssue(
                    collection.file,
                    ("collections", name, "derive", "transforms", index, "name"),
                    f"invalid transform name {transform.name!r}: use letters, numbers, '-', '_' "
                    "or '.' only",
                )


def _references(loaded: LoadedFiles) -> Iterator[CatalogIssue]:
    def problem(reference: str, role: str) -> str | None:
        if reference in loaded.collections or reference in loaded.broken:
            return None
        for section in ("captures", "materializations"):
            if reference in getattr(loaded, section):
                return (
                    f"{reference!r} is a {section[:-1]}, not a collection; a {role} must "
                    "name a collection"
                )
        return (
            f"no collection named {reference!r}; define it under `collections` or import "
            "the file that does"
        )

    for name, capture in loaded.captures.items():
        for index, binding in enumerate(capture.bindings):
            if message := problem(binding.target, "capture target"):
                yield CatalogIssue(
                    capture.file, ("captures", name, "bindings", index, "target"), message
                )
    for name, materialization in loaded.materializations.items():
        for index, binding in enumerate(materialization.bindings):
            if message := problem(binding.source, "materialization source"):
                yield CatalogIssue(
                    materialization.file,
                    ("materializations", name, "bindings", index, "source"),
                    message,
                )
    for name, collection in loaded.collections.items():
        for index, transform in enumerate(_transforms(collection)):
            if message := problem(transform.source, "derivation source"):
                yield CatalogIssue(
                    collection.file,
                    ("collections", name, "derive", "transforms", index, "source"),
                    message,
                )


def _keys(loaded: LoadedFiles) -> Iterator[CatalogIssue]:
    """Each key pointer must reach a required, scalar, unreduced property."""
    for name, collection in loaded.collections.items():
        for index, pointer in enumerate(collection.key):
            message = _key_problem(collection.schema, pointer)
            if message:
                yield CatalogIssue(collection.file, ("collections", name, "key", index), message)


def _key_problem(schema: dict[str, Any], pointer: str) -> str | None:
    if not pointer.startswith("/") or pointer == "/":
        return f"{pointer!r} is not a JSON pointer to a property; write it as '/field'"
    node = schema
    tokens = pointer[1:].split("/")
    for depth, token in enumerate(tokens):
        token = token.replace("~1", "/").replace("~0", "~")
        where = "/" + "/".join(tokens[:depth]) if depth else "the schema"
        prop = _property(node, token)
        if prop is None:
            return (
                f"{pointer} is not a property of {where}; add {token!r} to its "
                "`properties` or fix the key"
            )
        if token not in _required(node):
            return (
                f"{pointer} is not a required property of {where}; add {token!r} to its "
                "`required` list (a key must always be present)"
            )
        node = prop
    types = node.get("type")
    types = {types} if isinstance(types, str) else set(types or [])
    if not types or not types <= KEY_TYPES:
        found = ", ".join(sorted(types)) or "no type"
        return (
            f"{pointer} has type {found}; a key must be of type integer, string or "
            "boolean (and not null)"
        )
    if "reduce" in node:
        return f"{pointer} carries a `reduce` annotation; keys are never reduced: remove it"
    return None


def _subschemas(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The schema and the `allOf` members that apply to every document."""
    yield schema
    for member in schema.get("allOf") or []:
        if isinstance(member, dict):
            yield from _subschemas(member)


def _property(schema: dict[str, Any], token: str) -> dict[str, Any] | None:
    for sub in _subschemas(schema):
        prop = (sub.get("properties") or {}).get(token)
        if isinstance(prop, dict):
            return prop
    return None


def _required(schema: dict[str, Any]) -> set[str]:
    return {name for sub in _subschemas(schema) for name in sub.get("required") or []}


def _reductions(loaded: LoadedFiles) -> Iterator[CatalogIssue]:
    for name, collection in loaded.collections.items():
        for where, strategy in _reduce_annotations(collection.schema, ""):
            if strategy not in REDUCE_STRATEGIES:
                yield CatalogIssue(
                    collection.file,
                    ("collections", name, "schema"),
                    f"unknown reduce strategy {strategy!r} at {where or '/'}; use one of "
                    f"{', '.join(sorted(REDUCE_STRATEGIES))}",
                )


def _reduce_annotations(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        reduce = node.get("reduce")
        if isinstance(reduce, dict) and "strategy" in reduce:
            yield where, reduce["strategy"]
        for key, child in node.items():
            if key != "reduce":
                yield from _reduce_annotations(child, f"{where}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _reduce_annotations(child, f"{where}/{index}")


def _duplicate_bindings(loaded: LoadedFiles) -> Iterator[CatalogIssue]:
    for section in ("captures", "materializations"):
        for name, task in getattr(loaded, section).items():
            seen: dict[str, int] = {}
            for index, binding in enumerate(task.bindings):
                resource = repr(sorted(binding.resource.items()))
                if resource in seen:
                    yield CatalogIssue(
                        task.file,
                        (section, name, "bindings", index, "resource"),
                        f"binding [{index}] repeats the resource of binding [{seen[resource]}]; "
                        "each resource may be bound once: remove one",
                    )
                else:
                    seen[resource] = index


def _secrets(loaded: LoadedFiles) -> Iterator[CatalogIssue]:
    """A secret in the catalog must be a `${ENV_VAR}` reference; the value is never echoed."""
    for section in ("captures", "materializations"):
        for name, task in getattr(loaded, section).items():
            base = (section, name, "endpoint", "connector", "config")
            for path in _inline_secrets(task.connector.config, base):
                yield CatalogIssue(
                    task.file,
                    path,
                    "a secret is written inline; reference an environment variable instead, "
                    'e.g. "${SOPHIA_' + str(path[-1]).upper() + '}"',
                )


def _inline_secrets(node: Any, path: tuple) -> Iterator[tuple]:
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and SECRET_KEY.search(str(key)):
                if not ENV_REFERENCE.match(value):
                    yield (*path, key)
            else:
                yield from _inline_secrets(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _inline_secrets(value, (*path, index))


def _transforms(collection) -> tuple:
    return collection.derivation.transforms if collection.derivation else ()
