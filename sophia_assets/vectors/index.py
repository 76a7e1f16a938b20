"""The interface every vector index engine implements, and the records it exchanges."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sophia_assets.vectors.offsets import AppliedOffsets, Connect


class RecordsRejected(Exception):
    """The index refused a batch for good: a record it cannot hold (wrong dimension, say),
    not a fault a retry mends. The sync finds which records and quarantines them."""


@dataclass(frozen=True)
class VectorRecord:
    id: str
    values: list[float]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Match:
    id: str
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class IndexStats:
    vectors: int
    dimension: int | None


class VectorIndex(ABC):
    """An index named `name` whose applied journal offset lives in the platform's Postgres
    (reached through `connect`), whatever holds the vectors."""

    backend: str
    # Whether `apply` writes the vectors in the transaction that runs the offsets' fence
    # first (pgvector), so a writer that lost its lease writes nothing.
    fenced_in_transaction = False

    def __init__(self, connect: Connect, name: str):
        self.name = name
        self.offsets = AppliedOffsets(connect, name)

    @abstractmethod
    def apply(self, upserts: list[VectorRecord], deletes: list[str], offset: int) -> None:
        """Applies one batch of vector_updates and records `offset` as applied."""

    def applied_offset(self) -> int:
        """The last vector_updates offset applied (-1 before the first batch)."""
        return self.offsets.load()

    @abstractmethod
    def query(
        self, vector: list[float], top_k: int, metadata_filter: dict[str, Any] | None = None
    ) -> list[Match]: ...

    @contextmanager
    def session(self) -> Iterator[VectorIndex]:
        """Something to run many queries on; pgvector holds one connection open for them."""
        yield self

    @abstractmethod
    def fetch(self, ids: list[str]) -> dict[str, VectorRecord]: ...

    @abstractmethod
    def ids(self) -> set[str]:
        """Every vector id in the index (for consistency checks)."""

    @abstractmethod
    def stats(self) -> IndexStats: ...
