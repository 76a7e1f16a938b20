"""A continuous task of `sophia flow serve` (the embedding derivation, a vector index's
materialization): it follows a collection's journal and processes each batch as it commits,
under the task's lease.

It wakes on the journal's NOTIFY (sent when an append commits) instead of polling, so a batch
starts within a round trip of the commit; a batch is whatever has committed since, up to the
step's size, so batches grow when changes arrive faster than they are processed and the
memory held stays one batch. Between batches it checks whether a Dagster run wants the lease
and hands it over; while it has no lease it waits and tries again. Exactly-once is the step's:
each batch commits its output and its checkpoint together, fenced by the lease.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol

import psycopg2

from sophia_assets.backoff import Backoff
from sophia_assets.flow import journal, leases
from sophia_assets.flow.capture import connection_lost

log = logging.getLogger("sophia.flow")


class Step(Protocol):
    """One batch after the task's checkpoint, committed fenced by the lease; how many source
    documents it read (0: caught up)."""

    def __call__(self, conn, lease: leases.Lease) -> int: ...


class ContinuousTask:
    def __init__(
        self,
        task: str,
        source: str,
        step: Step,
        journal_url: str,
        ttl_s: float | None = None,
        on_batch: Callable[[str, int], None] = lambda task, documents: None,
    ):
        self.task = task
        self.source = source  # the collection whose commits wake it
        self.step = step
        self.journal_url = journal_url
        self.ttl_s = ttl_s if ttl_s is not None else leases.ttl_from_environment()
        self.on_batch = on_batch
        self.owner = leases.new_owner(leases.SERVE)
        self.handovers = 0
        self.reconnects = 0
        self._lease: leases.Lease | None = None
        self._heartbeat: leases.Heartbeat | None = None
        self._lease_news = False  # a lease:<task> notification not yet looked into

    @property
    def serving(self) -> bool:
        """Whether it holds its task's lease now."""
        return self._lease is not None

    def serve(self, stop: threading.Event) -> None:
        """Runs until `stop` is set, reconnecting when the database goes away; lets go of the
        lease on the way out."""
        backoff = Backoff(0.5, 5.0)
        while not stop.is_set():
            try:
                self._serve_connected(stop)
                return
            except psycopg2.Error as err:
                if not connection_lost(err) or stop.is_set():
                    raise
                self.reconnects += 1
                delay = backoff.next_delay()
                log.warning(
                    "%s lost its connection (%s); reconnecting in %.1f s",
                    self.task,
                    str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__,
                    delay,
                )
                stop.wait(delay)

    def _serve_connected(self, stop: threading.Event) -> None:
        listener = psycopg2.connect(self.journal_url)
        conn = psycopg2.connect(self.journal_url)
        try:
            journal.ensure_schema(conn)
            listener.autocommit = True
            with listener.cursor() as cur:
                cur.execute(f"LISTEN {journal.CHANNEL}")
            while not stop.is_set():
                self._turn(conn, listener, stop)
                if not stop.is_set():
                    self._wait(listener, self.ttl_s / 3, stop)
        finally:
            if self._lease is not None:
                _quietly(lambda: leases.release(conn, self._lease))
            self._drop_lease()
            listener.close()
            conn.close()

    def _turn(self, conn, listener, stop: threading.Event) -> None:
        """Takes (or keeps) the lease and processes every committed batch. Between batches
        it asks the database whether a run wants the lease only after a `lease:<task>`
        notification (a run sends one when it asks), not a round trip per batch."""
        if self._lease is None:
            lease = leases.try_acquire(conn, self.task, self.owner, leases.SERVE, self.ttl_s)
            if lease is None:
                return
            log.info("%s: serving (lease epoch %d)", self.task, lease.epoch)
            self._lease = lease
            # Renews the lease from a thread while a batch takes long (256 documents on a
            # CPU can take longer than the TTL); commits are fenced regardless.
            self._heartbeat = leases.Heartbeat(self.journal_url, lease).__enter__()
        lease = self._lease
        try:
            while not stop.is_set():
                self._drain(listener)
                if self._lease_news and leases.handover_wanted(conn, lease):
                    leases.release(conn, lease)
                    self._drop_lease()
                    self.handovers += 1
                    log.info("%s: handed over to a run; resuming when it is done", self.task)
                    return
                self._lease_news = False
                documents = self.step(conn, lease)
                if not documents:
                    break
                self.on_batch(self.task, documents)
        except leases.LeaseLost as lost:
            leases.release(conn, lease)  # rolls back; the lease is someone else's
            self._drop_lease()
            log.warning("%s: %s; waiting to take it again", self.task, lost)

    def _drop_lease(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.__exit__(None, None, None)
        self._heartbeat = None
        self._lease = None

    def _wait(self, listener, timeout_s: float, stop: threading.Event) -> None:
        """Until a commit to the source journal, news of the lease (a run asking for it or
        letting it go), the timeout, or `stop` (looked at twice a second)."""
        deadline = time.monotonic() + timeout_s
        while not self._drain(listener) and not stop.is_set():
            left = min(deadline - time.monotonic(), 0.5)
            if left <= 0:
                return
            select.select([listener], [], [], left)

    def _drain(self, listener) -> bool:
        """Reads the notifications that have arrived (no round trip); whether one is for
        this task. News of the lease is kept until `_turn` has looked at it."""
        listener.poll()
        payloads = {n.payload for n in listener.notifies}
        listener.notifies.clear()
        if f"lease:{self.task}" in payloads:
            self._lease_news = True
        return self.source in payloads or f"lease:{self.task}" in payloads


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except psycopg2.Error as err:  # shutting down after the database went away
        log.warning("could not release a lease: %s", err)
