"""The typed catalog: what `flow_specs/` says, after parsing and validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
