"""Embedding lag: how far an embedding derivation is behind the collection it reads, in
source documents and in the age of the oldest it has yet to embed. Journal offsets are dense
from 0, so the collection's last offset minus the derivation's checkpoint is the count."""

from __future__ import annotations

from dataclasses import dataclass

from sophia_assets.flow import journal
from sophia_assets.flow.tasks import derivation_task


@dataclass(frozen=True)
class EmbeddingLag:
    documents: int
    oldest_age_s: float | None  # None when caught up

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "embedding_lag_documents": self.documents,
            "embedding_lag_seconds": round(self.oldest_age_s or 0.0, 3),
        }


def read_embedding_lag(cur, source: str, derived: str) -> EmbeddingLag:
    checkpoint = journal.load_checkpoint(cur, derivation_task(derived))
    embedded = checkpoint[1]["offset"] if checkpoint else -1
    cur.execute('SELECT max("offset") FROM flow.journal WHERE collection = %s', (source,))
    last = cur.fetchone()[0]
    behind = 0 if last is None else max(0, last - embedded)
    if not behind:
        return EmbeddingLag(0, None)
    cur.execute(
        "SELECT extract(epoch FROM now() - captured_at)::float8 FROM flow.journal "
        'WHERE collection = %s AND "offset" = %s',
        (source, embedded + 1),
    )
    row = cur.fetchone()
    return EmbeddingLag(behind, max(0.0, row[0]) if row else None)
