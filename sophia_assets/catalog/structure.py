"""The shape of a catalog file, after Estuary's `flow.schema.json`: every object rejects keys
it does not know, as Estuary does. Names and references are checked later, by the rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from sophia_assets.catalog.errors import CatalogIssue


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_OBJECT = {"type": "object"}
_STRING = {"type": "string"}
_CONFIG = {"anyOf": [{"type": "string"}, {"type": "object"}]}
_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "boolean"}]}
_ENDPOINT = _closed(
    {
        "connector": _closed(
            {"image": {"type": "string", "minLength": 1}, "config": _CONFIG}, ("image", "config")
        )
    },
    ("connector",),
)
_SOURCE = {
    "anyOf": [
        _STRING,
        _closed(
            {"name": _STRING, "notBefore": _STRING, "notAfter": _STRING, "partitions": _OBJECT},
            ("name",),
        ),
    ]
}

CAPTURE = _closed(
    {
        "endpoint": _ENDPOINT,
        "bindings": {
            "type": "array",
            "items": _closed(
                {
                    "resource": _OBJECT,
                    "target": _STRING,
                    "disable": {"type": "boolean"},
                    "backfill": {"type": "integer"},
                },
                ("resource", "target"),
            ),
        },
        "interval": {"type": "string", "pattern": r"^\d+(s|m|h)$"},
        "shards": _OBJECT,
        "autoDiscover": {"type": ["object", "null"]},
        "expectPubId": _STRING,
        "delete": {"type": "boolean"},
    },
    ("endpoint", "bindings"),
)

DERIVE = _closed(
    {
        "using": _OBJECT,
        "transforms": {
            "type": "array",
            "items": _closed(
                {
                    "name": _STRING,
                    "source": _SOURCE,
                    "shuffle": {},
                    "lambda": {},
                    "priority": {"type": "integer"},
                    "readDelay": _STRING,
                    "backfill": {"type": "integer"},
                    "disable": {"type": "boolean"},
                },
                ("name", "source"),
            ),
        },
        "shards": _OBJECT,
        "shuffleKeyTypes": {"type": "array"},
    },
    ("using", "transforms"),
)

COLLECTION = _closed(
    {
        "schema": _SCHEMA,
        "writeSchema": _SCHEMA,
        "readSchema": _SCHEMA,
        "key": {"type": "array", "minItems": 1, "items": _STRING},
        "projections": _OBJECT,
        "journals": _OBJECT,
        "derive": DERIVE,
        "expectPubId": _STRING,
        "delete": {"type": "boolean"},
    },
    ("key",),
)

MATERIALIZATION = _closed(
    {
        "endpoint": _ENDPOINT,
        "bindings": {
            "type": "array",
            "items": _closed(
                {
                    "source": _SOURCE,
                    "resource": _OBJECT,
                    "fields": _closed(
                        {
                            "recommended": {"type": ["boolean", "integer"]},
                            "include": _OBJECT,
                            "exclude": {"type": "array", "items": _STRING},
                        }
                    ),
                    "disable": {"type": "boolean"},
                    "priority": {"type": "integer"},
                    "backfill": {"type": "integer"},
                    "onIncompatibleSchemaChange": _STRING,
                },
                ("source", "resource"),
            ),
        },
        "shards": _OBJECT,
        "sourceCapture": {},
        "onIncompatibleSchemaChange": _STRING,
        "expectPubId": _STRING,
        "delete": {"type": "boolean"},
    },
    ("endpoint", "bindings"),
)

CATALOG = _closed(
    {
        "$schema": _STRING,
        "import": {"type": "array", "items": _STRING},
        "captures": {"type": "object", "additionalProperties": CAPTURE},
        "collections": {"type": "object", "additionalProperties": COLLECTION},
        "materializations": {"type": "object", "additionalProperties": MATERIALIZATION},
        "storageMappings": _OBJECT,
        "tests": _OBJECT,
    }
)

_VALIDATOR = Draft202012Validator(CATALOG)


def structure_issues(document: Any, file: Path) -> list[CatalogIssue]:
    """Every place where the file's shape differs from a catalog's."""
    issues: list[CatalogIssue] = []
    for error in sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(e.absolute_path)):
        issues.extend(_explain(error, file))
    return issues


def _explain(error: ValidationError, file: Path) -> list[CatalogIssue]:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        known = set(allowed)
        return [
            CatalogIssue(
                file,
                (*path, key),
                f"unknown key {key!r}; Estuary rejects unknown keys (allowed here: "
                f"{', '.join(allowed)})",
            )
            for key in error.instance
            if key not in known
        ]
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return [CatalogIssue(file, path, f"missing required key {missing!r}; add it")]
    if error.validator == "type":
        expected = error.validator_value
        return [
            CatalogIssue(
                file, path, f"expected {_expected(expected)}, found {_json_type(error.instance)}"
            )
        ]
    if error.validator == "anyOf":
        return [
            CatalogIssue(
                file,
                path,
                f"expected {_expected(_any_types(error.validator_value))}"
                f", found {_json_type(error.instance)}",
            )
        ]
    if error.validator == "pattern":
        return [
            CatalogIssue(file, path, f"{error.instance!r} does not match {error.validator_value}")
        ]
    return [CatalogIssue(file, path, error.message)]


def _any_types(alternatives: list[dict[str, Any]]) -> list[str]:
    return [alt.get("type", "object") for alt in alternatives]


def _expected(types: str | list[str]) -> str:
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(f"a {name}" if name != "null" else "null" for name in names)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)
