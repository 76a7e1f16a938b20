"""Retrieval quality on held-out probes: does a sentence taken from a document find it again?

Each probe is one sentence of a document's body, searched against an index of the full
documents (a document scores its best chunk). Recall@k is the share of probes whose own
document ranks among the k best. The int8 guard and the embedding benchmark both measure it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

MIN_PROBE_WORDS = 6


def held_out_probes(documents: Sequence[str]) -> list[tuple[int, str]]:
    """Per document, its longest sentence of at least six words (body only, not the title)."""
    probes = []
    for i, document in enumerate(documents):
        body = document.split("\n\n", 1)[-1]
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", body)]
        sentences = [s for s in sentences if len(s.split()) >= MIN_PROBE_WORDS]
        if sentences:
            probes.append((i, max(sentences, key=len)))
    return probes


def recall_at(
    queries: Any, truth: Sequence[int], vectors: Any, owners: Any, documents: int, ks: Sequence[int]
) -> dict[int, float]:
    """The share of queries whose own document is among the k best, for each k (vectors are
    normalised, so the dot product is the cosine)."""
    import numpy as np

    scores = queries @ vectors.T
    best = np.full((len(queries), documents), -np.inf, dtype=np.float32)
    for chunk, owner in enumerate(owners):
        np.maximum(best[:, owner], scores[:, chunk], out=best[:, owner])
    rank = (best > best[np.arange(len(truth)), truth][:, None]).sum(axis=1)
    return {k: float((rank < k).mean()) for k in ks}


def probe_recall(embedder: Any, documents: Sequence[str], ks: Sequence[int] = (5, 10)) -> dict:
    """Recall@k of `embedder` (anything with `embed_documents` and `embed`) on the documents'
    held-out probes."""
    import numpy as np

    probes = held_out_probes(documents)
    per_document = embedder.embed_documents(list(documents))
    vectors = np.array([v for chunks in per_document for v in chunks], dtype=np.float32)
    owners = np.array([i for i, chunks in enumerate(per_document) for _ in chunks])
    queries = np.array(embedder.embed([text for _, text in probes]), dtype=np.float32)
    return recall_at(queries, [i for i, _ in probes], vectors, owners, len(documents), ks)
