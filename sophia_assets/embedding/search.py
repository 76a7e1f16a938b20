"""Semantic search over the index: the seed's "API". Embeds the query with the same model,
asks the index for the nearest chunks, and returns the best chunk per document."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

from sophia_assets.embedding.embedder import Embedder
from sophia_assets.vectors import VectorIndex


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
        # pgvector: one connection held open for every query (a new one costs milliseconds).
        self._stack = ExitStack()
        self._queries = self._stack.enter_context(index.session())

    def __call__(self, text: str, top_k: int = 5) -> list[SearchResult]:
        if not text.strip():
            raise ValueError("the search text is empty; pass the words to search for")
        (vector,) = self.embedder.embed([text])
        fetch = top_k * 4  # several chunks may belong to one document
        matches = self._queries.query(vector, fetch)
        best: dict = {}
        for match in matches:
            key = match.metadata.get("source_key", match.id.split(":")[0])
            if key not in best or match.score > best[key].score:
                best[key] = SearchResult(
                    key, str(match.metadata.get("title", "")), round(match.score, 4)
                )
        return sorted(best.values(), key=lambda r: -r.score)[:top_k]

    def close(self) -> None:
        self._stack.close()
