"""Broken catalogs, one per validation rule, each rejected with its own message; and all
problems of a catalog reported together."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sophia_assets.catalog import CatalogError, load_catalog
from sophia_assets.home import FLOW_SPECS_DIR

CAPTURE = "source-postgres.flow.yaml"
COLLECTIONS = "collections.flow.yaml"
MATERIALIZATION = "materialize-pinecone.flow.yaml"
CDC_SCHEMA = "schemas/postgresql_cdc.schema.yaml"


def _copy_specs(tmp_path: Path) -> Path:
    root = tmp_path / "flow_specs"
    shutil.copytree(FLOW_SPECS_DIR, root)
    return root


def _edit(root: Path, name: str, change: Callable[[Any], Any]) -> None:
    path = root / name
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _capture(doc):
    return doc["captures"]["sophia/source-postgres"]


def _cdc(doc):
    return doc["collections"]["sophia/postgresql_cdc"]


def _pinecone(doc):
    return doc["materializations"]["pinecone/vectors"]


BROKEN = {
    "unknown top-level key": (
        COLLECTIONS,
        lambda d: d.update(colections={}),
        "collections.flow.yaml: colections: unknown key 'colections'; Estuary rejects unknown "
        "keys (allowed here: $schema, captures, collections, import, materializations, "
        "storageMappings, tests)",
    ),
    "unknown key in a binding": (
        CAPTURE,
        lambda d: _capture(d)["bindings"][0].update(targett="x"),
        "source-postgres.flow.yaml: captures.sophia/source-postgres.bindings[0].targett: "
        "unknown key 'targett'",
    ),
    "missing required key": (
        COLLECTIONS,
        lambda d: _cdc(d).pop("key"),
        "collections.flow.yaml: collections.sophia/postgresql_cdc: missing required key 'key'",
    ),
    "invalid name": (
        COLLECTIONS,
        lambda d: d["collections"].update({"sophia//bad name": _cdc(d)}),
        "collections.flow.yaml: collections.sophia//bad name: invalid name 'sophia//bad name': "
        "use letters, numbers",
    ),
    "unresolved import": (
        CAPTURE,
        lambda d: d.update({"import": ["missing.flow.yaml"]}),
        "source-postgres.flow.yaml: import[0]: imported file 'missing.flow.yaml' does not exist",
    ),
    "capture target not defined": (
        CAPTURE,
        lambda d: _capture(d)["bindings"][0].update(target="sophia/nowhere"),
        "captures.sophia/source-postgres.bindings[0].target: no collection named "
        "'sophia/nowhere'; define it under `collections` or import the file that does",
    ),
    "materialization source is not a collection": (
        MATERIALIZATION,
        lambda d: _pinecone(d)["bindings"][0].update(source="sophia/source-postgres"),
        "materializations.pinecone/vectors.bindings[0].source: 'sophia/source-postgres' is a "
        "capture, not a collection; a materialization source must name a collection",
    ),
    "derivation source not defined": (
        COLLECTIONS,
        lambda d: d["collections"]["sophia/vector_updates"]["derive"]["transforms"][0].update(
            source="sophia/gone"
        ),
        "collections.sophia/vector_updates.derive.transforms[0].source: no collection named "
        "'sophia/gone'",
    ),
    "key not in the schema": (
        COLLECTIONS,
        lambda d: _cdc(d).update(key=["/uuid"]),
        "collections.sophia/postgresql_cdc.key[0]: /uuid is not a property of the schema; add "
        "'uuid' to its `properties` or fix the key",
    ),
    "key not required": (
        COLLECTIONS,
        lambda d: _cdc(d).update(key=["/title"]),
        "collections.sophia/postgresql_cdc.key[0]: /title is not a required property of the "
        "schema; add 'title' to its `required` list",
    ),
    "key of a non-scalar type": (
        COLLECTIONS,
        lambda d: _cdc(d).update(
            key=["/_meta"],
            schema={
                "type": "object",
                "required": ["_meta"],
                "properties": {"_meta": {"type": "object"}},
            },
        ),
        "collections.sophia/postgresql_cdc.key[0]: /_meta has type object; a key must be of "
        "type integer, string or boolean",
    ),
    "key that is not a JSON pointer": (
        COLLECTIONS,
        lambda d: _cdc(d).update(key=["id"]),
        "collections.sophia/postgresql_cdc.key[0]: 'id' is not a JSON pointer to a property; "
        "write it as '/field'",
    ),
    "reduce on a key": (
        COLLECTIONS,
        lambda d: _cdc(d).update(
            schema={
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "integer", "reduce": {"strategy": "sum"}}},
            }
        ),
        "collections.sophia/postgresql_cdc.key[0]: /id carries a `reduce` annotation; keys are "
        "never reduced: remove it",
    ),
    "unknown reduce strategy": (
        COLLECTIONS,
        lambda d: _cdc(d).update(
            schema={
                "type": "object",
                "required": ["id"],
                "reduce": {"strategy": "average"},
                "properties": {"id": {"type": "integer"}},
            }
        ),
        "collections.sophia/postgresql_cdc.schema: unknown reduce strategy 'average' at /; use "
        "one of append",
    ),
    "invalid JSON Schema": (
        COLLECTIONS,
        lambda d: _cdc(d).update(
            schema={"type": "object", "required": "id", "properties": {"id": {"type": "integer"}}}
        ),
        "collections.sophia/postgresql_cdc.schema: invalid JSON Schema (inline, at required): "
        "'id' is not of type 'array'",
    ),
    "schema file missing": (
        COLLECTIONS,
        lambda d: _cdc(d).update(schema="schemas/nope.yaml"),
        "collections.sophia/postgresql_cdc.schema: schema 'schemas/nope.yaml': file ",
    ),
    "duplicate capture bindings": (
        CAPTURE,
        lambda d: _capture(d)["bindings"].append(_capture(d)["bindings"][0]),
        "captures.sophia/source-postgres.bindings[1].resource: binding [1] repeats the resource "
        "of binding [0]; each resource may be bound once",
    ),
    "duplicate materialization bindings": (
        MATERIALIZATION,
        lambda d: _pinecone(d)["bindings"].append(_pinecone(d)["bindings"][0]),
        "materializations.pinecone/vectors.bindings[1].resource: binding [1] repeats the "
        "resource of binding [0]",
    ),
    "secret written inline": (
        CAPTURE,
        lambda d: _capture(d)["endpoint"]["connector"]["config"]["credentials"].update(
            password="correct horse battery staple"
        ),
        "captures.sophia/source-postgres.endpoint.connector.config.credentials.password: a "
        "secret is written inline; reference an environment variable instead",
    ),
    "name defined twice": (
        MATERIALIZATION,
        lambda d: d.update(
            collections={
                "sophia/postgresql_cdc": {
                    "key": ["/id"],
                    "schema": {
                        "type": "object",
                        "required": ["id"],
                        "properties": {"id": {"type": "integer"}},
                    },
                }
            }
        ),
        "'sophia/postgresql_cdc' is already defined as a collection in",
    ),
    "wrong type": (
        CAPTURE,
        lambda d: _capture(d).update(bindings={"target": "x"}),
        "captures.sophia/source-postgres.bindings: expected a array, found an object",
    ),
    "not YAML": (COLLECTIONS, lambda d: None, "collections.flow.yaml: (top level): not valid YAML"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_catalog_is_rejected_with_its_message(case: str, tmp_path: Path) -> None:
    file, change, expected = BROKEN[case]
    root = _copy_specs(tmp_path)
    if case == "not YAML":
        (root / file).write_text("collections: [unclosed\n")
    else:
        _edit(root, file, change)

    with pytest.raises(CatalogError) as failure:
        load_catalog(root)

    assert expected in str(failure.value), str(failure.value)


def test_secret_value_never_appears_in_the_error(tmp_path: Path) -> None:
    root = _copy_specs(tmp_path)
    _edit(
        root,
        CAPTURE,
        lambda d: _capture(d)["endpoint"]["connector"]["config"]["credentials"].update(
            password="correct horse battery staple"
        ),
    )
    with pytest.raises(CatalogError) as failure:
        load_catalog(root)
    assert "correct horse" not in str(failure.value)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    root = _copy_specs(tmp_path)
    _edit(root, COLLECTIONS, lambda d: _cdc(d).update(key=["/title"]))
    _edit(root, CAPTURE, lambda d: _capture(d)["bindings"][0].update(target="sophia/nowhere"))
    _edit(root, MATERIALIZATION, lambda d: _pinecone(d).update(bindingz=[]))

    with pytest.raises(CatalogError) as failure:
        load_catalog(root)

    rendered = [issue.render(root.parent) for issue in failure.value.issues]
    assert len(rendered) == 3, rendered
    assert str(failure.value).startswith("flow catalog has 3 problems:")
    assert {line.split(":")[0] for line in rendered} == {
        "flow_specs/collections.flow.yaml",
        "flow_specs/source-postgres.flow.yaml",
        "flow_specs/materialize-pinecone.flow.yaml",
    }


def test_empty_folder_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"no catalog files .* found; add one"):
        load_catalog(tmp_path)


def test_the_shipped_catalog_is_valid_and_typed() -> None:
    catalog = load_catalog(FLOW_SPECS_DIR)
    capture = catalog.captures["sophia/source-postgres"]
    assert capture.connector.name == "source-postgres"
    assert capture.bindings[0].resource == {
        "namespace": "public",
        "stream": "documents",
        "mode": "Normal",
    }
    assert catalog.collections["sophia/postgresql_cdc"].key == ("/id",)
    assert catalog.collections["sophia/postgresql_cdc"].schema["required"] == ["id"]
    updates = catalog.collections["sophia/vector_updates"]
    assert [t.source for t in updates.derivation.transforms] == ["sophia/postgresql_cdc"]
    pinecone = catalog.materializations["pinecone/vectors"]
    assert pinecone.connector.config["index"] == "sophia-ai-vectors"
    assert pinecone.connector.config["pineconeApiKey"] == "${SOPHIA_PINECONE_API_KEY}"
