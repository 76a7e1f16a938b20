"""Keeps a vector index equal to `sophia/vector_updates`: applies the journal, in order, from
the offset the index has applied, upserts and deletes alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg2

from sophia_assets.flow import journal
from sophia_assets.flow.documents import is_delete
from sophia_assets.vectors import VectorIndex, VectorRecord

BATCH_DOCUMENTS = 1000


@dataclass
class SyncReport:
    applied_offset: int = -1
    upserts: int = 0
    deletes: int = 0
    batches: int = 0
    lag_documents: int = 0
    lag_seconds: float | None = None


def sync_index(
    index: VectorIndex,
    journal_url: str,
    collection: str = "sophia/vector_updates",
    batch_documents: int = BATCH_DOCUMENTS,
    on_batch: Callable[[SyncReport], None] = lambda report: None,
) -> SyncReport:
    report = SyncReport(applied_offset=index.applied_offset())
    conn = psycopg2.connect(journal_url)
    try:
        journal.ensure_schema(conn)
        while True:
            with conn, conn.cursor() as cur:
                rows = list(
                    journal.read(cur, collection, report.applied_offset + 1, batch_documents)
                )
            if not rows:
                break
            latest: dict[str, dict] = {}
            for _, document in rows:  # later documents of an id replace earlier ones
                latest[document["embedding_id"]] = document
            upserts = [
                VectorRecord(i, d["vector"], d.get("metadata") or {})
                for i, d in latest.items()
                if not is_delete(d)
            ]
            deletes = [i for i, d in latest.items() if is_delete(d)]
            index.apply(upserts, deletes, rows[-1][0])
            report.applied_offset = rows[-1][0]
            report.upserts += len(upserts)
            report.deletes += len(deletes)
            report.batches += 1
            on_batch(report)
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), extract(epoch FROM now() - max(captured_at)) "
                'FROM flow.journal WHERE collection = %s AND "offset" > %s',
                (collection, report.applied_offset),
            )
            behind, _ = cur.fetchone()
            cur.execute(
                "SELECT extract(epoch FROM now() - captured_at) FROM flow.journal "
                'WHERE collection = %s AND "offset" = %s',
                (collection, report.applied_offset),
            )
            row = cur.fetchone()
        report.lag_documents = behind
        report.lag_seconds = float(row[0]) if row and behind else 0.0
    finally:
        conn.close()
    return report
