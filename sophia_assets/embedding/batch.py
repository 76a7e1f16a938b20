"""The files an embedding entrypoint reads and writes: a batch of texts in, per document the
vectors of its chunks out (float32, as the index stores them)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import orjson


def write_batch(texts: list[str]) -> bytes:
    return b"".join(orjson.dumps({"text": text}) + b"\n" for text in texts)


def read_batch(path: Path) -> list[str]:
    return [orjson.loads(line)["text"] for line in path.read_bytes().splitlines() if line]


def write_vectors(documents: list[list[list[float]]], dimension: int) -> bytes:
    counts = np.array([len(chunks) for chunks in documents], dtype=np.int32)
    flat = [vector for chunks in documents for vector in chunks]
    vectors = np.array(flat, dtype=np.float32).reshape(len(flat), dimension)
    buffer = io.BytesIO()
    np.savez(buffer, counts=counts, vectors=vectors)
    return buffer.getvalue()


def read_vectors(data: bytes) -> list[list[list[float]]]:
    with np.load(io.BytesIO(data)) as arrays:
        counts, vectors = arrays["counts"], arrays["vectors"]
    documents, start = [], 0
    for count in counts.tolist():
        documents.append(vectors[start : start + count].tolist())
        start += count
    return documents
