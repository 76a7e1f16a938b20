"""pgvector: a table with an HNSW cosine index in the platform's Postgres (schema `vectors`).
Vectors and the applied offset commit in one transaction, so the index is exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
from psycopg2 import sql

from sophia_assets.flow import journal
from sophia_assets.vectors.index import (
    IndexStats,
    Match,
    RecordsRejected,
    VectorIndex,
    VectorRecord,
)
from sophia_assets.vectors.offsets import Connect

SCHEMA = "vectors"


class PgVectorIndex(VectorIndex):
    backend = "pgvector"
    fenced_in_transaction = True

    def __init__(self, connect: Connect, name: str = "sophia-ai-vectors", dimension: int = 384):
        super().__init__(connect, name)
        self._connect_raw = connect
        self.dimension = dimension
        self.table = sql.Identifier(SCHEMA, name)
        self._writer = None  # the connection batches are applied on, kept between them

    @contextmanager
    def session(self) -> Iterator[PgVectorSession]:  # type: ignore[override]
        """One open connection for many queries (the search service keeps one)."""
        conn = self._connect()
        try:
            yield PgVectorSession(self, conn)
        finally:
            conn.close()

    def apply(self, upserts: list[VectorRecord], deletes: list[str], offset: int) -> None:
        """One transaction on a connection kept for the next batch (a continuous task
        applies many small ones: a connection and the DDL each time cost more than they do)."""
        import orjson
        from psycopg2.extras import execute_values

        if self._writer is None or self._writer.closed:
            self._writer = self._connect()
        conn = self._writer
        try:
            with conn, conn.cursor() as cur:
                self.offsets.guard(cur)  # first: a writer that lost the lease writes nothing
                if deletes:
                    cur.execute(
                        sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self.table),
                        (deletes,),
                    )
                if upserts:
                    execute_values(
                        cur,
                        sql.SQL(
                            "INSERT INTO {} (id, embedding, metadata) VALUES %s "
                            "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, "
                            "metadata = EXCLUDED.metadata"
                        ).format(self.table),
                        [
                            (r.id, vector_text(r.values), orjson.dumps(r.metadata).decode())
                            for r in upserts
                        ],
                        template="(%s, %s::vector, %s::jsonb)",
                        page_size=1000,
                    )
                self.offsets.store_in(cur, offset)
        except psycopg2.DataError as err:  # a value the column refuses: the same every time
            raise RecordsRejected(f"pgvector: {(err.pgerror or str(err)).strip()}") from err
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            conn.close()  # the next batch connects again
            raise

    def query(
        self, vector: list[float], top_k: int, metadata_filter: dict[str, Any] | None = None
    ) -> list[Match]:
        with self.session() as session:
            return session.query(vector, top_k, metadata_filter)

    def fetch(self, ids: list[str]) -> dict[str, VectorRecord]:
        rows = self._select(
            sql.SQL("SELECT id, embedding::text, metadata FROM {} WHERE id = ANY(%s)"), (ids,)
        )
        return {i: VectorRecord(i, parse_vector(v), m) for i, v, m in rows}

    def ids(self) -> set[str]:
        return {row[0] for row in self._select(sql.SQL("SELECT id FROM {}"))}

    def stats(self) -> IndexStats:
        [(count,)] = self._select(sql.SQL("SELECT count(*) FROM {}"))
        return IndexStats(count, self.dimension)

    def _select(self, statement: sql.SQL, params: tuple = ()) -> list[tuple]:
        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statement.format(self.table), params)
                return cur.fetchall()
        finally:
            conn.close()

    def _connect(self):
        """A connection to a database where the table and its HNSW index exist."""
        conn = self._connect_raw()
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('vectors.ddl'))")
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, "
                    "embedding vector({}) NOT NULL, metadata jsonb NOT NULL)"
                ).format(self.table, sql.Literal(self.dimension))
            )
            cur.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops)"
                ).format(sql.Identifier(f"{self.name}_hnsw"), self.table)
            )
        journal.ensure_schema(conn)
        return conn


class PgVectorSession:
    """Queries on one open connection."""

    def __init__(self, index: PgVectorIndex, conn):
        self.index = index
        self.conn = conn

    def query(
        self, vector: list[float], top_k: int, metadata_filter: dict[str, Any] | None = None
    ) -> list[Match]:
        import orjson

        where, params = sql.SQL(""), []
        if metadata_filter:
            where = sql.SQL("WHERE metadata @> %s::jsonb")
            params.append(orjson.dumps(containment(metadata_filter)).decode())
        text = vector_text(vector)
        statement = sql.SQL(
            "SELECT id, 1 - (embedding <=> %s::vector), metadata FROM {} {} "
            "ORDER BY embedding <=> %s::vector LIMIT %s"
        ).format(self.index.table, where)
        with self.conn, self.conn.cursor() as cur:
            cur.execute(statement, [text, *params, text, top_k])
            return [Match(i, float(score), meta) for i, score, meta in cur.fetchall()]


def containment(metadata_filter: dict[str, Any]) -> dict[str, Any]:
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


def vector_text(values: list[float]) -> str:
    """pgvector's text form of a vector."""
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


def parse_vector(text: str) -> list[float]:
    return [float(x) for x in text.strip("[]").split(",")]
