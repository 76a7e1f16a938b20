"""Turns the catalog into Dagster `AssetSpec`s, as dagster-sling and dagster-fivetran do for
their tools: one method per kind of catalog node, so a subclass can restyle any of them.

Lineage follows the catalog: source table -> captured collection (capture bindings),
collection -> derived collection (derivation transforms), collection -> materialized target
(materialization bindings). A new collection or binding in `flow_specs/` appears here with no
code change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from sophia_assets.catalog.model import (
    Capture,
    CaptureBinding,
    Catalog,
    Collection,
    Materialization,
    MaterializationBinding,
)

OWNER = "team:data-platform"
_JSON_TO_COLUMN_TYPE = {
    "integer": "bigint",
    "number": "double",
    "string": "text",
    "boolean": "boolean",
    "array": "array",
    "object": "json",
}


@dataclass
class FlowTranslator:
    catalog: Catalog
    owners: list[str] = field(default_factory=lambda: [OWNER])

    # -- keys -------------------------------------------------------------------------------

    def source_key(self, capture: Capture, binding: CaptureBinding) -> dg.AssetKey:
        """`source-postgres` binding {namespace: public, stream: documents} ->
        `postgres/public/documents`."""
        system = capture.connector.name.removeprefix("source-")
        parts = [binding.resource.get("namespace"), binding.resource.get("stream")]
        parts = [str(p) for p in parts if p] or [str(v) for v in binding.resource.values()]
        return dg.AssetKey([system, *parts])

    def collection_key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey(name.split("/"))

    def target_key(
        self, materialization: Materialization, binding: MaterializationBinding
    ) -> dg.AssetKey:
        """`materialize-pinecone` into index `sophia-ai-vectors` -> `pinecone/sophia-ai-vectors`.
        Bindings into one index (e.g. several namespaces) share the asset."""
        system = materialization.connector.name.removeprefix("materialize-")
        return dg.AssetKey([system, materialization.index_name(binding)])

    # -- specs ------------------------------------------------------------------------------

    def source_spec(self, capture: Capture, binding: CaptureBinding) -> dg.AssetSpec:
        key = self.source_key(capture, binding)
        table = ".".join(key.path[1:])
        system = key.path[0]
        return dg.AssetSpec(
            key=key,
            description=(
                f"Application table {table}, captured by {capture.name} into {binding.target}."
            ),
            group_name="cdc",
            kinds={system},
            owners=self.owners,
            metadata={
                **self._file_metadata(capture.file),
                "flow/capture": capture.name,
                "dagster/table_name": table,
            },
        )

    def collection_spec(self, collection: Collection) -> dg.AssetSpec:
        captured_from = [
            self.source_key(capture, binding)
            for capture, binding in self.catalog.capture_bindings_into(collection.name)
        ]
        derived_from = [
            self.collection_key(t.source)
            for t in (collection.derivation.transforms if collection.derivation else ())
        ]
        if collection.is_embedding_derivation:
            group, kinds = (
                "embeddings",
                {"estuary", "pytorch"},
            )  # the kind Dagster draws an icon for
        elif collection.derivation:
            group, kinds = "derivations", {"estuary"}
        else:
            group, kinds = "cdc", {"estuary"}
        return dg.AssetSpec(
            key=self.collection_key(collection.name),
            description=collection.description or f"Collection {collection.name}.",
            deps=_unique(captured_from + derived_from),
            group_name=group,
            kinds=kinds,
            owners=self.owners,
            metadata={
                **self._file_metadata(collection.file),
                "flow/collection": collection.name,
                "flow/key": json.dumps(list(collection.key)),
                "dagster/column_schema": _column_schema(collection.schema),
            },
        )

    def target_spec(
        self, materialization: Materialization, bindings: list[MaterializationBinding]
    ) -> dg.AssetSpec:
        connector = materialization.connector
        key = self.target_key(materialization, bindings[0])
        vector_store = materialization.is_vector_index
        sources = ", ".join(sorted({b.source for b in bindings}))
        return dg.AssetSpec(
            key=key,
            description=(
                f"{'Vector index' if vector_store else 'Destination'} "
                f"{key.path[-1]}, kept equal to {sources} by {materialization.name}."
                + (" pgvector stands in for it locally." if vector_store else "")
            ),
            deps=_unique([self.collection_key(b.source) for b in bindings]),
            group_name="vector_index" if vector_store else "destinations",
            kinds={key.path[0], "pgvector"} if vector_store else {key.path[0]},
            owners=self.owners,
            metadata={
                **self._file_metadata(materialization.file),
                "flow/materialization": materialization.name,
                "flow/connector": connector.image,
                "flow/resources": json.dumps([b.resource for b in bindings]),
            },
        )

    def build_specs(self) -> list[dg.AssetSpec]:
        specs: dict[dg.AssetKey, dg.AssetSpec] = {}
        for capture in self.catalog.captures.values():
            for binding in capture.bindings:
                key = self.source_key(capture, binding)
                specs.setdefault(key, self.source_spec(capture, binding))
        for collection in self.catalog.collections.values():
            specs[self.collection_key(collection.name)] = self.collection_spec(collection)
        for materialization in self.catalog.materializations.values():
            grouped: dict[dg.AssetKey, list[MaterializationBinding]] = {}
            for binding in materialization.bindings:
                grouped.setdefault(self.target_key(materialization, binding), []).append(binding)
            for key, bindings in grouped.items():
                specs[key] = self.target_spec(materialization, bindings)
        return list(specs.values())

    def _file_metadata(self, file) -> dict[str, Any]:
        root = self.catalog.root.parent
        shown = file.relative_to(root) if file.is_relative_to(root) else file
        return {"flow/spec_file": str(shown)}


def _unique(keys: list[dg.AssetKey]) -> list[dg.AssetKey]:
    return list(dict.fromkeys(keys))


def _column_schema(schema: dict[str, Any]) -> dg.TableSchema:
    required = set(schema.get("required") or [])
    columns = []
    for name, prop in (schema.get("properties") or {}).items():
        types = prop.get("type", "json") if isinstance(prop, dict) else "json"
        first = types if isinstance(types, str) else next(iter(types), "json")
        columns.append(
            dg.TableColumn(
                name=name,
                type=_JSON_TO_COLUMN_TYPE.get(first, first),
                description=prop.get("description") if isinstance(prop, dict) else None,
                constraints=dg.TableColumnConstraints(nullable=name not in required),
            )
        )
    return dg.TableSchema(columns=columns)
