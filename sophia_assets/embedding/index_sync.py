"""Keeps a vector index equal to `sophia/vector_updates`: applies the journal, in order, from
the offset the index has applied, upserts and deletes alike. A record the index refuses for
good (RecordsRejected) goes to `flow.quarantine` with the index's reason, and the sync goes on
with the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg2

from sophia_assets.flow import journal
from sophia_assets.flow.documents import is_delete
from sophia_assets.vectors import RecordsRejected, VectorIndex, VectorRecord

BATCH_DOCUMENTS = 1000


@dataclass
class SyncReport:
    applied_offset: int = -1
    upserts: int = 0
    deletes: int = 0
    batches: int = 0
    quarantined: int = 0
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
            latest: dict[str, tuple[int, dict]] = {}
            for offset, document in rows:  # later documents of an id replace earlier ones
                latest[document["embedding_id"]] = (offset, document)
            upserts = [
                VectorRecord(i, d["vector"], d.get("metadata") or {})
                for i, (_, d) in latest.items()
                if not is_delete(d)
            ]
            deletes = [i for i, (_, d) in latest.items() if is_delete(d)]
            try:
                index.apply(upserts, deletes, rows[-1][0])
            except RecordsRejected:
                upserts = _accepted(index, upserts, latest, conn, collection, report)
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


def _accepted(
    index: VectorIndex,
    upserts: list[VectorRecord],
    latest: dict[str, tuple[int, dict]],
    conn,
    collection: str,
    report: SyncReport,
) -> list[VectorRecord]:
    """The batch's records the index takes, tried one at a time; each one it refuses is
    quarantined with the reason (before the offset moves past it: never lost). When it
    refuses every record of a batch of several, the index itself is wrong (its dimension,
    say): that fails the sync, with nothing quarantined, instead of emptying the stream."""
    refused: list[tuple[VectorRecord, RecordsRejected]] = []
    accepted = []
    for record in upserts:
        try:
            index.apply([record], [], report.applied_offset)
        except RecordsRejected as err:
            refused.append((record, err))
            continue
        accepted.append(record)
    if len(refused) > 1 and not accepted:
        raise RecordsRejected(
            f"index {index.name} refused all {len(refused)} records of a batch, e.g. "
            f"{refused[0][0].id}: {refused[0][1]}; check the index against the model "
            "(dimension, metric) before syncing again"
        )
    for record, err in refused:
        offset, document = latest[record.id]
        with conn, conn.cursor() as cur:
            journal.quarantine(
                cur,
                collection,
                document,
                f"index {index.name}: {err}",
                {"collection": collection, "offset": offset},
            )
        report.quarantined += 1
    return accepted
