"""The vector index: one interface, pgvector locally (default) and Pinecone in production.

Both keep `pinecone/sophia-ai-vectors` equal to `sophia/vector_updates`. An index remembers
the journal offset it has applied: pgvector commits it with the vectors in one transaction;
Pinecone's upserts are idempotent, so its offset is stored (in the platform's Postgres) only
after Pinecone acknowledged the batch, and a crash replays at most one batch.
"""

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from resources.postgres import PostgresResource


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


class VectorIndex(dg.ConfigurableResource, ABC):
    index_name: str = Field(default="sophia-ai-vectors", description="The index's name.")

    @abstractmethod
    def apply(self, upserts: list[VectorRecord], deletes: list[str], offset: int) -> None:
        """Applies one batch of vector_updates and records `offset` as applied."""

    def applied_offset(self) -> int:
        """The last vector_updates offset applied (-1 before the first batch); both backends
        keep it in the platform's Postgres."""
        from sophia_assets.flow import journal

        conn = self.postgres.connect()  # every backend declares `postgres`
        try:
            journal.ensure_schema(conn)
            with conn, conn.cursor() as cur:
                checkpoint = journal.load_checkpoint(cur, self._offset_task())
            return checkpoint[1]["offset"] if checkpoint else -1
        finally:
            conn.close()

    def _store_offset(self, offset: int) -> None:
        """Records `offset` as applied, in a transaction of its own (pgvector instead commits
        it with the vectors)."""
        from sophia_assets.flow import journal

        conn = self.postgres.connect()  # every backend declares `postgres`
        try:
            journal.ensure_schema(conn)
            with conn, conn.cursor() as cur:
                journal.save_checkpoint(cur, self._offset_task(), "0/0", {"offset": offset})
        finally:
            conn.close()

    @abstractmethod
    def query(
        self, vector: list[float], top_k: int, metadata_filter: dict[str, Any] | None = None
    ) -> list[Match]: ...

    @abstractmethod
    def fetch(self, ids: list[str]) -> dict[str, VectorRecord]: ...

    @abstractmethod
    def ids(self) -> set[str]:
        """Every vector id in the index (for consistency checks)."""

    @abstractmethod
    def stats(self) -> IndexStats: ...

    def _offset_task(self) -> str:
        return f"index:{self.index_name}"


class PgVectorIndex(VectorIndex):
    """A pgvector table with an HNSW cosine index, in the platform's Postgres."""

    postgres: dg.ResourceDependency[PostgresResource]
    dimension: int = 384

    def _table(self) -> str:
        return f'vectors."{self.index_name}"'

    def _connect(self):
        conn = self.postgres.connect()
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('vectors.ddl'))")
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
            cur.execute("CREATE SCHEMA IF NOT EXISTS vectors")
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table()} (id text PRIMARY KEY, "
                f"embedding vector({self.dimension}) NOT NULL, metadata jsonb NOT NULL)"
            )
            cur.execute(
                f'CREATE INDEX IF NOT EXISTS "{self.index_name}_hnsw" ON '
                f"{self._table()} USING hnsw (embedding vector_cosine_ops)"
            )
        from sophia_assets.flow import journal

        journal.ensure_schema(conn)
        return conn

    def apply(self, upserts: list[VectorRecord], deletes: list[str], offset: int) -> None:
        import orjson
        from psycopg2.extras import execute_values

        from sophia_assets.flow import journal

        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                if deletes:
                    cur.execute(f"DELETE FROM {self._table()} WHERE id = ANY(%s)", (deletes,))
                if upserts:
                    execute_values(
                        cur,
                        f"INSERT INTO {self._table()} (id, embedding, metadata) VALUES %s "
                        "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, "
                        "metadata = EXCLUDED.metadata",
                        [
                            (r.id, _vector_text(r.values), orjson.dumps(r.metadata).decode())
                            for r in upserts
                        ],
                        template="(%s, %s::vector, %s::jsonb)",
                        page_size=1000,
                    )
                journal.save_checkpoint(cur, self._offset_task(), "0/0", {"offset": offset})
        finally:
            conn.close()

    def query(
        self, vector: list[float], top_k: int, metadata_filter: dict[str, Any] | None = None
    ) -> list[Match]:
        conn = self._connect()
        try:
            return self.query_with(conn, vector, top_k, metadata_filter)
        finally:
            conn.close()

    def query_with(
        self, conn, vector: list[float], top_k: int, metadata_filter: dict[str, Any] | None = None
    ) -> list[Match]:
        """A query on an open connection (the search keeps one open)."""
        import orjson

        where, params = "", []
        if metadata_filter:
            where = "WHERE metadata @> %s::jsonb"
            params.append(orjson.dumps(_containment(metadata_filter)).decode())
        text = _vector_text(vector)
        with conn, conn.cursor() as cur:
            cur.execute(
                f"SELECT id, 1 - (embedding <=> %s::vector), metadata FROM {self._table()} "
                f"{where} ORDER BY embedding <=> %s::vector LIMIT %s",
                [text, *params, text, top_k],
            )
            return [Match(i, float(score), meta) for i, score, meta in cur.fetchall()]

    def fetch(self, ids: list[str]) -> dict[str, VectorRecord]:
        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    f"SELECT id, embedding::text, metadata FROM {self._table()} WHERE id = ANY(%s)",
                    (ids,),
                )
                return {
                    i: VectorRecord(i, [float(x) for x in v.strip("[]").split(",")], m)
                    for i, v, m in cur.fetchall()
                }
        finally:
            conn.close()

    def ids(self) -> set[str]:
        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(f"SELECT id FROM {self._table()}")
                return {row[0] for row in cur.fetchall()}
        finally:
            conn.close()

    def stats(self) -> IndexStats:
        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {self._table()}")
                return IndexStats(cur.fetchone()[0], self.dimension)
        finally:
            conn.close()


class PineconeIndex(VectorIndex):
    """Pinecone through the `pinecone` SDK. The key comes from the environment variable named
    by `api_key_env`; the index host and namespace from config."""

    postgres: dg.ResourceDependency[PostgresResource]
    host: str = Field(description="The index's data-plane host, e.g. https://x.svc.pinecone.io")
    namespace: str = "sophia"
    api_key_env: str = "SOPHIA_PINECONE_API_KEY"
    batch_records: int = Field(default=1000, le=1000)
    max_request_bytes: int = Field(default=2 * 1024 * 1024)
    retries: int = 6

    def _index(self):
        from pinecone import Pinecone

        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(
                f"{self.api_key_env} is not set; export the Pinecone API key "
                "there (it is read from the environment only)"
            )
        return Pinecone(api_key=key).Index(host=self.host)

    def apply(self, upserts: list[VectorRecord], deletes: list[str], offset: int) -> None:

        index = self._index()
        for batch in _batches(upserts, self.batch_records, self.max_request_bytes):
            self._retry(
                lambda b=batch: index.upsert(
                    vectors=[
                        {"id": r.id, "values": r.values, "metadata": _flat(r.metadata)} for r in b
                    ],
                    namespace=self.namespace,
                )
            )
        for start in range(0, len(deletes), 1000):
            ids = deletes[start : start + 1000]
            self._retry(lambda i=ids: index.delete(ids=i, namespace=self.namespace))
        self._store_offset(offset)  # only now that Pinecone acknowledged every batch

    def query(
        self, vector: list[float], top_k: int, metadata_filter: dict[str, Any] | None = None
    ) -> list[Match]:
        response = self._retry(
            lambda: self._index().query(
                vector=vector,
                top_k=top_k,
                filter=metadata_filter,
                include_metadata=True,
                namespace=self.namespace,
            )
        )
        return [Match(m.id, float(m.score), dict(m.metadata or {})) for m in response.matches]

    def fetch(self, ids: list[str]) -> dict[str, VectorRecord]:
        index = self._index()
        found: dict[str, VectorRecord] = {}
        for start in range(0, len(ids), 1000):
            response = self._retry(
                lambda s=start: index.fetch(ids=ids[s : s + 1000], namespace=self.namespace)
            )
            for vid, vector in response.vectors.items():
                found[vid] = VectorRecord(vid, list(vector.values), dict(vector.metadata or {}))
        return found

    def ids(self) -> set[str]:
        index = self._index()
        found: set[str] = set()
        for page in index.list(namespace=self.namespace):
            found.update(getattr(item, "id", item) for item in page)
        return found

    def stats(self) -> IndexStats:
        response = self._retry(lambda: self._index().describe_index_stats())
        namespace = (response.namespaces or {}).get(self.namespace)
        return IndexStats(int(namespace.vector_count) if namespace else 0, response.dimension)

    def _retry(self, call):
        """Retries 429 and 5xx with exponential backoff; anything else is raised at once."""
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                return call()
            except Exception as err:  # the SDK's exception classes vary by transport
                status = getattr(err, "status", None) or getattr(err, "status_code", None)
                if attempt == self.retries or not (status == 429 or (status or 0) >= 500):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")


def _batches(records: list[VectorRecord], limit: int, max_bytes: int):
    """Batches within Pinecone's limits: at most `limit` records and `max_bytes` of JSON."""
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
    """Pinecone metadata values are strings, numbers, booleans or lists of strings."""
    return {k: v for k, v in metadata.items() if v is not None}


def _containment(metadata_filter: dict[str, Any]) -> dict[str, Any]:
    """A Pinecone-style equality filter ({"f": v} or {"f": {"$eq": v}}) as jsonb containment."""
    plain = {}
    for key, condition in metadata_filter.items():
        if isinstance(condition, dict):
            if set(condition) != {"$eq"}:
                raise ValueError(
                    f"filter on {key!r}: only equality is supported by pgvector "
                    "here; use {'$eq': value}"
                )
            condition = condition["$eq"]
        plain[key] = condition
    return plain


def _vector_text(values: list[float]) -> str:
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


PINECONE_HOST_ENV = "SOPHIA_PINECONE_HOST"


def configured_index(postgres: PostgresResource) -> VectorIndex:
    """Pinecone when `SOPHIA_PINECONE_HOST` names an index host (the key then comes from
    `SOPHIA_PINECONE_API_KEY`), pgvector in the platform's Postgres otherwise."""
    if os.environ.get(PINECONE_HOST_ENV):
        return PineconeIndex(postgres=postgres, host=dg.EnvVar(PINECONE_HOST_ENV))
    return PgVectorIndex(postgres=postgres)
