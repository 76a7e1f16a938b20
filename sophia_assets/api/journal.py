"""What the API reads from the platform's Postgres besides vectors: a document's current
version in the collection's reduced view, its vector ids (from the derivation's state), and
how far the index is behind `sophia/vector_updates`. Blocking calls, on a connection pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sophia_assets.api.pool import Pool
from sophia_assets.flow import journal

SOURCE_COLLECTION = "sophia/postgresql_cdc"
DERIVED_COLLECTION = "sophia/vector_updates"


@dataclass(frozen=True)
class ReducedDocument:
    key: Any
    document: dict[str, Any]
    offset: int
    chunks: int  # vectors the derivation wrote for its current content (0: not embedded)


@dataclass(frozen=True)
class Lag:
    documents: int
    seconds: float


class JournalReader:
    def __init__(
        self,
        connect,
        pool_size: int = 4,
        source: str = SOURCE_COLLECTION,
        derived: str = DERIVED_COLLECTION,
    ):
        self.source = source
        self.derived = derived
        self.pool: Pool = Pool(lambda: _open(connect), pool_size)

    def document(self, source_key: str) -> ReducedDocument | None:
        """The reduced document whose (single-field) key is `source_key`, as a number or text."""
        candidates = [orjson.dumps([source_key]).decode()]
        if source_key.lstrip("-").isdigit() and len(source_key) < 19:
            candidates.insert(0, orjson.dumps([int(source_key)]).decode())
        with self.pool.get() as conn, conn, conn.cursor() as cur:
            cur.execute(
                'SELECT key::text, document::text, "offset" FROM flow.reduced '
                "WHERE collection = %s AND key = ANY(%s::jsonb[]) ORDER BY key LIMIT 1",
                (self.source, candidates),
            )
            row = cur.fetchone()
            if row is None:
                return None
            (key,) = orjson.loads(row[0])
            cur.execute(
                "SELECT chunks FROM flow.derivation_state WHERE derivation = %s AND "
                "source_key = %s",
                (f"derive:{self.derived}", str(key)),
            )
            chunks = cur.fetchone()
        return ReducedDocument(key, orjson.loads(row[1]), row[2], chunks[0] if chunks else 0)

    def documents(self, keys: list[Any]) -> dict[str, dict[str, Any]]:
        """Reduced documents by key (as text), for many keys in one query."""
        if not keys:
            return {}
        with self.pool.get() as conn, conn, conn.cursor() as cur:
            found = journal.reduced_documents(
                cur, self.source, [orjson.dumps([k]).decode() for k in keys]
            )
        return {str(orjson.loads(k)[0]): d for k, d in found.items()}

    def lag(self, applied_offset: int) -> Lag:
        """Entries of the derived collection the index has not applied, and the age of the
        oldest of them (0 when none)."""
        with self.pool.get() as conn, conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(captured_at)), 0) "
                'FROM flow.journal WHERE collection = %s AND "offset" > %s',
                (self.derived, applied_offset),
            )
            documents, seconds = cur.fetchone()
        return Lag(int(documents), float(seconds))

    def close(self) -> None:
        self.pool.close()


def _open(connect):
    conn = connect()
    journal.ensure_schema(conn)
    return conn, conn.close
