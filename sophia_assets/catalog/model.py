"""The typed catalog: what `flow_specs/` says, after parsing and validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What a connector is, by its name (the image without registry, path and tag): the embedding
# derivation's connector, and the materializations whose targets are vector indexes.
EMBEDDING_CONNECTOR = "derive-embeddings"
VECTOR_INDEX_CONNECTORS = frozenset({"materialize-pinecone"})


@dataclass(frozen=True)
class Connector:
    image: str
    config: dict[str, Any]

    @property
    def name(self) -> str:
        """`estuary/source-postgres:v3` -> `source-postgres`."""
        return self.image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]


@dataclass(frozen=True)
class CaptureBinding:
    resource: dict[str, Any]
    target: str


@dataclass(frozen=True)
class Capture:
    name: str
    file: Path
    connector: Connector
    bindings: tuple[CaptureBinding, ...]


@dataclass(frozen=True)
class Transform:
    name: str
    source: str


@dataclass(frozen=True)
class Derivation:
    using: dict[str, Any]
    transforms: tuple[Transform, ...]

    @property
    def connector(self) -> Connector | None:
        spec = self.using.get("connector")
        if not isinstance(spec, dict) or "image" not in spec:
            return None
        return Connector(str(spec["image"]), dict(spec.get("config") or {}))

    @property
    def embeds(self) -> bool:
        """Whether this derivation computes embeddings (its connector is ours)."""
        return self.connector is not None and self.connector.name == EMBEDDING_CONNECTOR


@dataclass(frozen=True)
class Collection:
    name: str
    file: Path
    key: tuple[str, ...]
    schema: dict[str, Any]
    read_schema: dict[str, Any] | None = None
    derivation: Derivation | None = None

    @property
    def description(self) -> str | None:
        return self.schema.get("description") or self.schema.get("title")

    @property
    def is_embedding_derivation(self) -> bool:
        return self.derivation is not None and self.derivation.embeds


@dataclass(frozen=True)
class MaterializationBinding:
    source: str
    resource: dict[str, Any]


@dataclass(frozen=True)
class Materialization:
    name: str
    file: Path
    connector: Connector
    bindings: tuple[MaterializationBinding, ...]

    @property
    def is_vector_index(self) -> bool:
        return self.connector.name in VECTOR_INDEX_CONNECTORS

    def index_name(self, binding: MaterializationBinding) -> str:
        """The index (or table) a binding writes: the endpoint's `index`, else the binding's
        `table`/`index`, else the materialization's last name segment."""
        return str(
            self.connector.config.get("index")
            or binding.resource.get("table")
            or binding.resource.get("index")
            or self.name.rsplit("/", 1)[-1]
        )


@dataclass(frozen=True)
class Catalog:
    root: Path
    files: tuple[Path, ...]
    captures: dict[str, Capture] = field(default_factory=dict)
    collections: dict[str, Collection] = field(default_factory=dict)
    materializations: dict[str, Materialization] = field(default_factory=dict)

    def capture_bindings_into(self, collection: str) -> list[tuple[Capture, CaptureBinding]]:
        return [
            (capture, binding)
            for capture in self.captures.values()
            for binding in capture.bindings
            if binding.target == collection
        ]

    def embedding_derivations(self) -> list[Collection]:
        """Collections derived by the embedding connector, in catalog order."""
        return [c for c in self.collections.values() if c.is_embedding_derivation]

    def vector_index_bindings(self) -> list[tuple[Materialization, MaterializationBinding]]:
        """Bindings of materializations into vector indexes, in catalog order."""
        return [
            (materialization, binding)
            for materialization in self.materializations.values()
            if materialization.is_vector_index
            for binding in materialization.bindings
        ]
