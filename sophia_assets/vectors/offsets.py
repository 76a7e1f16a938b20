"""Where an index's applied journal offset is kept: a checkpoint in the platform's `flow`
schema, under the index's task name. pgvector writes it inside the vectors' transaction;
Pinecone, whose upserts are idempotent, stores it only after Pinecone acknowledged a batch, so
a crash replays at most one batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sophia_assets.flow import journal
from sophia_assets.flow.tasks import index_task

# A new psycopg2 connection to the platform's Postgres; the caller closes it.
Connect = Callable[[], Any]


class AppliedOffsets:
    def __init__(self, connect: Connect, index_name: str):
        self._connect = connect
        self.task = index_task(index_name)
        # Run in the transaction that stores the offset: the writer's lease check
        # (flow/leases.py), so a writer that lost the index's lease cannot move it.
        self.fence: Callable[[Any], None] | None = None

    def load(self) -> int:
        """The last offset applied, -1 before the first batch."""
        conn = self._connect()
        try:
            journal.ensure_schema(conn)
            with conn, conn.cursor() as cur:
                checkpoint = journal.load_checkpoint(cur, self.task)
            return checkpoint[1]["offset"] if checkpoint else -1
        finally:
            conn.close()

    def store(self, offset: int) -> None:
        """Records `offset` in a transaction of its own."""
        conn = self._connect()
        try:
            journal.ensure_schema(conn)
            with conn, conn.cursor() as cur:
                self.guard(cur)
                self.store_in(cur, offset)
        finally:
            conn.close()

    def guard(self, cur) -> None:
        """The writer's lease check, first in the transaction that will store an offset."""
        if self.fence is not None:
            self.fence(cur)

    def store_in(self, cur, offset: int) -> None:
        """Records `offset` in the caller's transaction (pgvector: with the vectors, after
        `guard` began it)."""
        journal.save_checkpoint(cur, self.task, "0/0", {"offset": offset})
