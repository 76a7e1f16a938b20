"""Semantic search over the index: the seed's "API". Embeds the query with the same model,
asks the index for the nearest chunks, and returns the best chunk per document."""

from __future__ import annotations

from dataclasses import dataclass

from resources.vector_index import PgVectorIndex, VectorIndex
from sophia_assets.embedding.embedder import Embedder


@dataclass(frozen=True)
class SearchResult:
    id: int | str
    title: str
    score: float


class Search:
    """Keeps the model and (for pgvector) a connection open: each query is one embedding and
    one index lookup."""

    def __init__(self, embedder: Embedder, index: VectorIndex):
        self.embedder = embedder
        self.index = index
        self._conn = index._connect() if isinstance(index, PgVectorIndex) else None

    def __call__(self, text: str, top_k: int = 5) -> list[SearchResult]:
        if not text.strip():
            raise ValueError("the search text is empty; pass the words to search for")
        (vector,) = self.embedder.embed([text])
        fetch = top_k * 4  # several chunks may belong to one document
        if self._conn is not None:
            matches = self.index.query_with(self._conn, vector, fetch)
        else:
            matches = self.index.query(vector, fetch)
        best: dict = {}
        for match in matches:
            key = match.metadata.get("source_key", match.id.split(":")[0])
            if key not in best or match.score > best[key].score:
                best[key] = SearchResult(
                    key, str(match.metadata.get("title", "")), round(match.score, 4)
                )
        return sorted(best.values(), key=lambda r: -r.score)[:top_k]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
