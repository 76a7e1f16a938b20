"""Keeps a vector index equal to `sophia/vector_updates`: applies the journal, in order, from
the offset the index has applied, upserts and deletes alike. A record the index refuses for
good (RecordsRejected) goes to `flow.quarantine` with the index's reason, and the sync goes on
with the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg2

from sophia_assets.flow import journal, leases
from sophia_assets.flow.documents import is_delete
from sophia_assets.flow.tasks import index_task
from sophia_assets.vectors import RecordsRejected, VectorIndex, VectorRecord
from sophia_assets.vectors.searchable import record_searchable

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
    documents: int = 0  # vector update documents read
    searchable_s: list[float] = field(default_factory=list)  # the last batch's, per document


def sync_index(
    index: VectorIndex,
    journal_url: str,
    collection: str = "sophia/vector_updates",
    batch_documents: int = BATCH_DOCUMENTS,
    on_batch: Callable[[SyncReport], None] = lambda report: None,
) -> SyncReport:
    """A Dagster run: takes the index's lease (a serving task hands it over between two
    batches), applies everything after the applied offset, reports the lag, lets go."""
    sync = IndexSync(index, collection, batch_documents)
    report = SyncReport(applied_offset=index.applied_offset())
    conn = psycopg2.connect(journal_url)
    try:
        journal.ensure_schema(conn)
        ttl = leases.ttl_from_environment()
        lease = leases.acquire_for_run(
            conn, sync.task, leases.new_owner(leases.RUN), ttl, max(60.0, 4 * ttl)
        )
        try:
            with leases.Heartbeat(journal_url, lease):
                while sync.step(conn, lease, report):
                    on_batch(report)
        finally:
            leases.release(conn, lease)
        report.lag_documents, report.lag_seconds = _lag(conn, collection, report.applied_offset)
    finally:
        conn.close()
    return report


class IndexSync:
    """Applies `collection` to `index` one batch at a time, each commit fenced by the lease
    of the index's task: by a run (`sync_index`) or continuously by `sophia flow serve`."""

    def __init__(self, index: VectorIndex, collection: str, batch_documents: int = BATCH_DOCUMENTS):
        self.index = index
        self.collection = collection
        self.batch_documents = batch_documents
        self.task = index_task(index.name)

    def step(self, conn, lease: leases.Lease, report: SyncReport) -> int:
        """Applies the next batch after the index's applied offset (read afresh: another
        writer may have moved it); the number of documents read, 0 when caught up."""
        with conn, conn.cursor() as cur:
            checkpoint = journal.load_checkpoint(cur, self.task)  # AppliedOffsets' row
            applied = checkpoint[1]["offset"] if checkpoint else -1
            rows = list(journal.read(cur, self.collection, applied + 1, self.batch_documents))
        if not rows:
            report.applied_offset = applied
            return 0
        latest: dict[str, tuple[int, dict]] = {}
        for offset, document in rows:  # later documents of an id replace earlier ones
            latest[document["embedding_id"]] = (offset, document)
        upserts = [
            VectorRecord(i, d["vector"], d.get("metadata") or {})
            for i, (_, d) in latest.items()
            if not is_delete(d)
        ]
        deletes = [i for i, (_, d) in latest.items() if is_delete(d)]
        if not self.index.fenced_in_transaction:
            # Pinecone: the vectors are sent before the fenced offset commit, so a writer
            # that lost the lease must find out before it sends them.
            leases.heartbeat(conn, lease)
        report.applied_offset = applied
        self.index.offsets.fence = lambda cur: leases.fence(cur, lease)
        try:
            try:
                self.index.apply(upserts, deletes, rows[-1][0])
            except RecordsRejected:
                upserts = _accepted(self.index, upserts, latest, conn, self.collection, report)
                self.index.apply(upserts, deletes, rows[-1][0])
        finally:
            self.index.offsets.fence = None
        report.searchable_s = record_searchable(
            conn, self.index.name, self.collection, (rows[0][0], rows[-1][0])
        )
        report.applied_offset = rows[-1][0]
        report.documents += len(rows)
        report.upserts += len(upserts)
        report.deletes += len(deletes)
        report.batches += 1
        return len(rows)


def _lag(conn, collection: str, applied: int) -> tuple[int, float]:
    """Documents of `collection` after `applied`, and the age of the applied one when any."""
    with conn, conn.cursor() as cur:
        cur.execute(
            'SELECT count(*) FROM flow.journal WHERE collection = %s AND "offset" > %s',
            (collection, applied),
        )
        behind = cur.fetchone()[0]
        cur.execute(
            "SELECT extract(epoch FROM now() - captured_at) FROM flow.journal "
            'WHERE collection = %s AND "offset" = %s',
            (collection, applied),
        )
        row = cur.fetchone()
    return behind, float(row[0]) if row and behind else 0.0


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
