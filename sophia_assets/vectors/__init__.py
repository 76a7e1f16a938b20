"""Vector index engines: one interface, pgvector in the platform's Postgres (the local default)
and Pinecone (production). Each keeps an index equal to `sophia/vector_updates` and remembers
the journal offset it has applied."""

from sophia_assets.vectors.index import (
    IndexStats,
    Match,
    RecordsRejected,
    VectorIndex,
    VectorRecord,
)

__all__ = ["IndexStats", "Match", "RecordsRejected", "VectorIndex", "VectorRecord"]
