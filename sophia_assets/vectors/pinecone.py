"""Pinecone through the `pinecone` SDK. Upserts are idempotent (ids are deterministic), so the
applied offset is stored in the platform's Postgres only after Pinecone acknowledged every
batch; a crash replays at most one batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sophia_assets.backoff import Backoff, retry
from sophia_assets.vectors.index import (
    IndexStats,
    Match,
    RecordsRejected,
    VectorIndex,
    VectorRecord,
)
from sophia_assets.vectors.offsets import Connect

T = TypeVar("T")

# Pinecone's documented limits: 1,000 records and 2 MB per upsert; 1,000 ids per fetch/delete.
MAX_RECORDS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_IDS = 1000
MAX_METADATA_BYTES = 40 * 1024 - 512  # Pinecone's limit per record, less room for how it counts
CUT_MARKER = " [cut]"


class PineconeIndex(VectorIndex):
    backend = "pinecone"

    def __init__(
        self,
        connect: Connect,
        host: str,
        api_key: str,
        name: str = "sophia-ai-vectors",
        namespace: str = "sophia",
        batch_records: int = MAX_RECORDS,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        retries: int = 6,
        timeout_s: float = 20.0,
    ):
        super().__init__(connect, name)
        from pinecone import Pinecone, RetryConfig

        # One retry policy, ours (`_retry`): the SDK's own retries would multiply it.
        client = Pinecone(api_key=api_key, timeout=timeout_s, retry_config=RetryConfig(0))
        self._index = client.Index(host=host)
        self.namespace = namespace
        self.batch_records = min(batch_records, MAX_RECORDS)
        self.max_request_bytes = max_request_bytes
        self.retries = retries

    def apply(self, upserts: list[VectorRecord], deletes: list[str], offset: int) -> None:
        for batch in batches(upserts, self.batch_records, self.max_request_bytes):
            vectors = [
                {"id": r.id, "values": r.values, "metadata": _flat(r.metadata)} for r in batch
            ]
            try:
                self._retry(
                    lambda v=vectors: self._index.upsert(vectors=v, namespace=self.namespace)
                )
            except Exception as err:
                if _status(err) == 400:  # the request is malformed for good: a record's fault
                    raise RecordsRejected(f"pinecone: {_reason(err)}") from err
                raise
        for start in range(0, len(deletes), MAX_IDS):
            ids = deletes[start : start + MAX_IDS]
            self._retry(lambda i=ids: self._index.delete(ids=i, namespace=self.namespace))
        self.offsets.store(offset)  # only now that Pinecone acknowledged every batch

    def query(
        self, vector: list[float], top_k: int, metadata_filter: dict[str, Any] | None = None
    ) -> list[Match]:
        response = self._retry(
            lambda: self._index.query(
                vector=vector,
                top_k=top_k,
                filter=metadata_filter,
                include_metadata=True,
                namespace=self.namespace,
            )
        )
        return [Match(m.id, float(m.score), dict(m.metadata or {})) for m in response.matches]

    def fetch(self, ids: list[str]) -> dict[str, VectorRecord]:
        found: dict[str, VectorRecord] = {}
        for start in range(0, len(ids), MAX_IDS):
            chunk = ids[start : start + MAX_IDS]
            response = self._retry(
                lambda c=chunk: self._index.fetch(ids=c, namespace=self.namespace)
            )
            for vid, vector in response.vectors.items():
                found[vid] = VectorRecord(vid, list(vector.values), dict(vector.metadata or {}))
        return found

    def ids(self) -> set[str]:
        found: set[str] = set()
        for page in self._index.list(namespace=self.namespace):
            found.update(getattr(item, "id", item) for item in page)
        return found

    def stats(self) -> IndexStats:
        response = self._retry(lambda: self._index.describe_index_stats())
        namespace = (response.namespaces or {}).get(self.namespace)
        return IndexStats(int(namespace.vector_count) if namespace else 0, response.dimension)

    def _retry(self, call: Callable[[], T]) -> T:
        return retry(call, _throttled_or_failed, self.retries, Backoff(0.2, 5.0))


def _status(err: Exception) -> int | None:
    """The HTTP status of an SDK error; its exception classes vary by transport."""
    return getattr(err, "status", None) or getattr(err, "status_code", None)


def _throttled_or_failed(err: Exception) -> bool:
    """429 and 5xx are worth retrying."""
    status = _status(err)
    return status == 429 or (status or 0) >= 500


def _reason(err: Exception) -> str:
    """What Pinecone said: the response body only (never the request or its headers)."""
    body = getattr(err, "body", None)
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    return (text or f"HTTP {_status(err)}")[:500]


def batches(
    records: list[VectorRecord], limit: int, max_bytes: int
) -> Iterator[list[VectorRecord]]:
    """Batches within Pinecone's limits: at most `limit` records and `max_bytes` of JSON (with
    a tenth kept free for the envelope)."""
    import orjson

    batch: list[VectorRecord] = []
    size = 0
    for record in records:
        record_size = (
            len(
                orjson.dumps(
                    {"id": record.id, "values": record.values, "metadata": record.metadata}
                )
            )
            + 2
        )
        if batch and (len(batch) >= limit or size + record_size > max_bytes * 0.9):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += record_size
    if batch:
        yield batch


def _flat(metadata: dict[str, Any]) -> dict[str, Any]:
    """Pinecone metadata values are strings, numbers, booleans or lists of strings, at most
    40 KB per record. Over that, every string is cut to the longest length that fits (ending
    in CUT_MARKER, with `metadata_cut` set) rather than have Pinecone refuse the batch."""
    import orjson

    flat = {k: v for k, v in metadata.items() if v is not None}
    if len(orjson.dumps(flat)) <= MAX_METADATA_BYTES:
        return flat
    low, high = 0, max((len(v.encode()) for v in flat.values() if isinstance(v, str)), default=0)
    while low < high:  # the largest cap (in bytes) under which the whole record fits
        middle = (low + high + 1) // 2
        if len(orjson.dumps(_capped(flat, middle))) <= MAX_METADATA_BYTES:
            low = middle
        else:
            high = middle - 1
    capped = _capped(flat, low)
    while len(orjson.dumps(capped)) > MAX_METADATA_BYTES:  # the rest is not strings: drop
        capped.pop(
            max(
                (k for k in capped if k != "metadata_cut"),
                key=lambda k: len(orjson.dumps(capped[k])),
            )
        )
    return capped


def _capped(flat: dict[str, Any], cap: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if isinstance(value, str) and len(value.encode()) > cap:
            value = value.encode()[:cap].decode(errors="ignore") + CUT_MARKER
        out[key] = value
    out["metadata_cut"] = True
    return out
