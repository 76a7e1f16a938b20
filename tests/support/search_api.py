"""Stand-ins for the search API's model, index and journal, so its routes, auth and errors
are tested in milliseconds; the real ones are tested through `sophia api serve`."""

from __future__ import annotations

import hashlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sophia_assets.api.journal import Lag, ReducedDocument
from sophia_assets.vectors import IndexStats, Match, VectorIndex, VectorRecord

DIMENSIONS = 256


@dataclass(frozen=True)
class Card:
    name: str = "fake-bag-of-words"
    dimensions: int = DIMENSIONS


class WordEmbedder:
    """A bag of hashed words, normalised: texts sharing words are near each other."""

    card = Card()

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [_vector(t) for t in texts]

    def chunks(self, text: str) -> list[str]:
        return [text]


def _vector(text: str) -> list[float]:
    values = [0.0] * DIMENSIONS
    for word in re.findall(r"\w+", text.lower()):
        values[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMENSIONS] += 1.0
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class MemoryIndex(VectorIndex):
    backend = "memory"

    def __init__(self, records: list[VectorRecord], applied: int = 0) -> None:
        self.name = "test-vectors"
        self.records = {r.id: r for r in records}
        self.applied = applied
        self.reachable = True

    def apply(self, upserts, deletes, offset) -> None:
        raise NotImplementedError

    def applied_offset(self) -> int:
        return self.applied

    def query(self, vector, top_k, metadata_filter=None) -> list[Match]:
        if not self.reachable:
            raise ConnectionError("index down")
        wanted = {
            k: (v["$eq"] if isinstance(v, dict) else v) for k, v in (metadata_filter or {}).items()
        }
        found = [
            Match(r.id, sum(a * b for a, b in zip(vector, r.values, strict=True)), r.metadata)
            for r in self.records.values()
            if all(r.metadata.get(k) == v for k, v in wanted.items())
        ]
        return sorted(found, key=lambda m: -m.score)[:top_k]

    def fetch(self, ids: list[str]) -> dict[str, VectorRecord]:
        return {i: self.records[i] for i in ids if i in self.records}

    def ids(self) -> set[str]:
        return set(self.records)

    def stats(self) -> IndexStats:
        return IndexStats(len(self.records), DIMENSIONS)


class MemoryJournal:
    source = "sophia/postgresql_cdc"

    def __init__(self, documents: dict[int, dict[str, Any]], chunks: int = 1) -> None:
        self.reduced = documents
        self.chunks = chunks
        self.lag_seconds = 0.0

    def document(self, source_key: str) -> ReducedDocument | None:
        key = int(source_key) if source_key.isdigit() else source_key
        if key not in self.reduced:
            return None
        return ReducedDocument(key, self.reduced[key], 7, self.chunks)

    def documents(self, keys: list[Any]) -> dict[str, dict[str, Any]]:
        return {str(k): self.reduced[k] for k in keys if k in self.reduced}

    def lag(self, applied_offset: int) -> Lag:
        return Lag(3 if self.lag_seconds else 0, self.lag_seconds)

    def close(self) -> None:
        pass


DOCUMENTS = {
    1: {"id": 1, "title": "Cats", "body": "Cats are small domesticated felines that purr."},
    2: {"id": 2, "title": "Rivers", "body": "Rivers carry fresh water down to the sea."},
    3: {"id": 3, "title": "Bread", "body": "Bake the bread in a hot oven until golden."},
}


def memory_parts() -> tuple[WordEmbedder, MemoryIndex, MemoryJournal]:
    records = [
        VectorRecord(
            f"{key}:0",
            _vector(f"{doc['title']}\n\n{doc['body']}"),
            {"source_key": key, "chunk": 0, "title": doc["title"]},
        )
        for key, doc in DOCUMENTS.items()
    ]
    return WordEmbedder(), MemoryIndex(records), MemoryJournal(DOCUMENTS)


@contextmanager
def served_api(env: dict[str, str], *flags: str, deadline_s: float = 180.0) -> Iterator[ServedApi]:
    """`sophia api serve` on a free port, in its own process, once /readyz says ready (polled
    up to `deadline_s`: the model loads first); stopped with SIGINT afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "sophia"), "api", "serve", "--port", str(port), *flags],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = ServedApi(f"http://127.0.0.1:{port}", process)
    try:
        served.wait_ready(deadline_s)
        yield served
    finally:
        process.send_signal(signal.SIGINT)
        try:
            served.output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            served.output = process.communicate()[0]


@dataclass
class ServedApi:
    url: str
    process: subprocess.Popen
    output: str = ""

    def wait_ready(self, deadline_s: float) -> None:
        import httpx

        give_up = time.monotonic() + deadline_s
        last = "no answer"
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise RuntimeError(f"sophia api serve exited: {self.process.communicate()[0]}")
            try:
                answer = httpx.get(f"{self.url}/readyz", timeout=5)
                if answer.status_code == 200:
                    return
                last = answer.text
            except httpx.TransportError as err:
                last = repr(err)
            time.sleep(0.25)  # polling interval, not a wait for a result
        raise TimeoutError(f"not ready within {deadline_s} s: {last}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
