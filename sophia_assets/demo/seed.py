"""`public.documents`, the demo application table, filled from the corpus."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
from psycopg2.extras import execute_values

from sophia_assets.demo.corpus import CorpusDocument

DOCUMENTS_DDL = """
CREATE TABLE IF NOT EXISTS public.documents (
    id         bigint PRIMARY KEY,
    title      text NOT NULL,
    body       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""

# A row already equal to the corpus is left alone (no write, no WAL, no CDC event), so seeding
# twice changes nothing; a row that drifted (e.g. under `sophia demo load`) is restored.
UPSERT = """
INSERT INTO public.documents (id, title, body) VALUES %s
ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, body = EXCLUDED.body, updated_at = now()
WHERE (documents.title, documents.body) IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.body)
RETURNING (xmax = 0)
"""

BATCH_ROWS = 1000


@dataclass(frozen=True)
class SeedReport:
    rows: int
    inserted: int
    restored: int

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.restored


def seed_documents(
    url: str,
    corpus: list[CorpusDocument],
    rows: int,
    on_batch: Callable[[int], None] = lambda done: None,
) -> SeedReport:
    """Makes ids 1..rows of `public.documents` hold the first `rows` corpus documents."""
    if not 1 <= rows <= len(corpus):
        raise ValueError(
            f"--rows {rows}: the demo corpus has {len(corpus)} documents; "
            f"ask for between 1 and {len(corpus)}"
        )
    inserted = restored = 0
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(DOCUMENTS_DDL)
        for start in range(0, rows, BATCH_ROWS):
            batch = [
                (start + offset + 1, doc.title, doc.body)
                for offset, doc in enumerate(corpus[start : min(rows, start + BATCH_ROWS)])
            ]
            with conn, conn.cursor() as cur:
                outcomes = execute_values(cur, UPSERT, batch, page_size=len(batch), fetch=True)
            inserted += sum(1 for (was_insert,) in outcomes if was_insert)
            restored += sum(1 for (was_insert,) in outcomes if not was_insert)
            on_batch(len(batch))
    finally:
        conn.close()
    return SeedReport(rows=rows, inserted=inserted, restored=restored)
