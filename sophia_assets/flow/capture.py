"""The capture: backfill, then stream, a Postgres source into collection journals, exactly once.

One engine, two modes: `drain` captures until the WAL position seen at its start (and the
backfill is complete), then stops; `serve` runs until asked to stop, reconnecting when the
database goes away.

Exactly once: the documents of a batch of source transactions, the reduced view and the
checkpoint (the end LSN of the last transaction) commit in one journal transaction; only then
is that LSN confirmed to the slot. A restarted capture skips transactions at or before its
checkpoint, so one that committed but crashed before confirming is not journaled twice.

Backfill with watermarks (as source-postgres): a chunk of rows after the cursor is read, then
a watermark row is written. Until the watermark comes back through the replication stream,
changes to keys inside the chunk are folded into the chunk's rows (each change carries the
full row, so folding in commit order ends at the latest state), changes to keys the backfill
has passed are emitted, and changes beyond the chunk are dropped (a later chunk reads them).
At the watermark, the chunk's rows are emitted and the cursor advances.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg2
import psycopg2.extras

from sophia_assets.backoff import Backoff
from sophia_assets.catalog.model import Capture, Catalog
from sophia_assets.flow import journal, pgoutput
from sophia_assets.flow.backfill import Chunk, present_keys, read_chunk, write_watermark
from sophia_assets.flow.bindings import Binding, capture_bindings, capture_settings
from sophia_assets.flow.credentials import FixedLogin, SourceLogin
from sophia_assets.flow.documents import (
    Change,
    Location,
    as_snapshot,
    key_text,
    located,
    with_meta,
)
from sophia_assets.flow.pgoutput import lsn_int, lsn_text
from sophia_assets.flow.replication import (
    RelationPlan,
    Transaction,
    connection_lost,
    decode_row,
    relation_plan,
)
from sophia_assets.flow.source import (
    SourceError,
    SourceTable,
    check_wal_level,
    create_slot,
    describe_table,
    drop_slot,
    ensure_publication,
    ensure_watermarks_table,
    slot_status,
)
from sophia_assets.flow.tasks import capture_lock
from sophia_assets.flow.writer import Batch, CollectionFigures, JournalWriter

log = logging.getLogger("sophia.flow")
MAX_BATCH_DOCUMENTS = 20_000
IDLE_WAIT_S = 0.5
# An idle serve writes a watermark this often, so the slot's confirmed position follows the
# server's WAL (journal writes, other databases) instead of holding it all back.
HEARTBEAT_S = 30.0
# A serving capture looks for a rotated source login this often.
LOGIN_CHECK_S = 1.0


class CaptureBusy(RuntimeError):
    """Another process runs this capture."""


class LoginRotated(Exception):
    """The source login was rotated while serving: reconnect with the new one."""


@dataclass
class CaptureReport:
    task: str
    checkpoint_lsn: str = "0/0"
    transactions: int = 0
    batches: int = 0
    backfilled_rows: int = 0
    collections: dict[str, CollectionFigures] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        return sum(c.documents for c in self.collections.values())


class CaptureRunner:
    def __init__(
        self,
        capture: Capture,
        catalog: Catalog,
        source_url: str | SourceLogin,
        journal_url: str,
        on_batch: Callable[[CaptureReport], None] = lambda report: None,
    ):
        self.settings = capture_settings(capture)
        self.bindings = capture_bindings(capture, catalog)
        self.login = FixedLogin(source_url) if isinstance(source_url, str) else source_url
        self.journal_url = journal_url
        self.on_batch = on_batch
        self.report = CaptureReport(task=capture.name)
        # Set while a session of this runner is streaming from its slot.
        self.streaming = threading.Event()

    @property
    def source_url(self) -> str:
        """Read at every connect: a rotated login takes effect on the next connection."""
        return self.login.url()

    # -- modes ------------------------------------------------------------------------------

    def drain(self) -> CaptureReport:
        """Captures until the WAL position at the start is journaled and the backfill is done.
        If a `serve` holds the capture, waits for it to get there instead."""
        self.report = CaptureReport(task=self.settings.task)
        try:
            return self._run(stop=None)
        except CaptureBusy:
            return self._wait_for_serve()

    def serve(self, stop: threading.Event, reconnect_backoff_s: float = 0.5) -> CaptureReport:
        """Captures until `stop` is set; reconnects and resumes when a connection drops."""
        self.report = CaptureReport(task=self.settings.task)
        backoff = Backoff(reconnect_backoff_s, 5.0)
        while not stop.is_set():
            try:
                return self._run(stop=stop)
            except LoginRotated as rotated:
                log.info("capture %s: %s; reconnecting", self.settings.task, rotated)
                backoff.reset()
                continue
            except CaptureBusy:
                # A drain (or another serve) holds the capture; take over when it lets go.
                log.info("capture %s is busy in another process; retrying", self.settings.task)
                stop.wait(reconnect_backoff_s)
                continue
            except psycopg2.Error as err:
                if not connection_lost(err):
                    raise
                if stop.is_set():
                    break
                delay = backoff.next_delay()
                log.warning(
                    "capture %s lost its connection (%s); reconnecting in %.1f s",
                    self.settings.task,
                    str(err).strip().splitlines()[0],
                    delay,
                )
                stop.wait(delay)
        return self.report

    # -- one connected run ------------------------------------------------------------------

    def _run(self, stop: threading.Event | None) -> CaptureReport:
        session = _Session(self, self.report)
        try:
            session.open()
            session.loop(stop)
        finally:
            session.close()
        return self.report

    def reset_for_rebackfill(self) -> None:
        """Forgets the checkpoint and the slot: the next run backfills every table again and
        then deletes from the collections the keys that are no longer in the source."""
        with psycopg2.connect(self.source_url) as source, source.cursor() as cur:
            drop_slot(cur, self.settings.slot)
        source.close()
        jconn = psycopg2.connect(self.journal_url)
        journal.ensure_schema(jconn)
        try:
            with jconn, jconn.cursor() as cur:
                state = {
                    b.id: {"backfilled": False, "cursor": None, "reconcile": True}
                    for b in self.bindings
                }
                journal.save_checkpoint(cur, self.settings.task, "0/0", state)
        finally:
            jconn.close()
        log.info("capture %s will re-backfill from a new slot", self.settings.task)

    def _wait_for_serve(self, timeout_s: float = 300.0) -> CaptureReport:
        """Another process serves the capture: wait until its checkpoint passes the WAL
        position of now. A watermark is written (again each second, in case the serving
        process was still creating its slot) so that it sees a transaction past that point."""
        source = psycopg2.connect(self.source_url)
        source.autocommit = True
        jconn = psycopg2.connect(self.journal_url)
        try:
            with source.cursor() as cur:
                ensure_watermarks_table(cur, self.settings.watermarks_table)
                cur.execute("SELECT pg_current_wal_lsn()::text")
                target = lsn_int(cur.fetchone()[0])
            log.info(
                "capture %s is served by another process; waiting for it to pass %s",
                self.settings.task,
                lsn_text(target),
            )
            deadline = time.monotonic() + timeout_s
            next_mark = 0.0
            while time.monotonic() < deadline:
                if time.monotonic() >= next_mark:
                    with source.cursor() as cur:
                        write_watermark(cur, self.settings, "drain")
                    next_mark = time.monotonic() + 1.0
                with jconn, jconn.cursor() as cur:
                    checkpoint = journal.load_checkpoint(cur, self.settings.task)
                    cur.execute(
                        "SELECT pg_try_advisory_xact_lock(hashtext(%s))",
                        (capture_lock(self.settings.task),),
                    )
                    serve_gone = cur.fetchone()[0]
                if serve_gone:  # the serving process stopped: drain ourselves
                    return self._run(stop=None)
                if checkpoint and lsn_int(checkpoint[0]) >= target:
                    self.report.checkpoint_lsn = checkpoint[0]
                    return self.report
                time.sleep(0.02)
            raise RuntimeError(
                f"capture {self.settings.task} is run by another process that did not reach "
                f"{lsn_text(target)} within {timeout_s:.0f} s; check that `sophia flow serve` "
                "is healthy"
            )
        finally:
            source.close()
            jconn.close()


class _Session:
    """One connected run of a capture: connections, checkpoint, and the streaming loop."""

    def __init__(self, runner: CaptureRunner, report: CaptureReport):
        self.runner = runner
        self.settings = runner.settings
        self.report = report
        self.source = None
        self.journal = None
        self.replication = None
        self.stream = None
        self.tables: dict[str, SourceTable] = {}
        self.checkpoint = 0
        self.state: dict[str, Any] = {}
        self.relations: dict[int, RelationPlan] = {}
        self.watermark_relid: int | None = None
        self.tx: Transaction | None = None
        self.pending: list[Change] = []
        self.pending_lsn = 0
        self.last_commit_end = 0
        self.chunk: Chunk | None = None
        self.drain_mark: str | None = None
        self.drain_reached = False
        self.next_offsets: dict[str, int] = {}
        self.writer: JournalWriter | None = None
        self.submitted = 0  # end LSN of the last batch handed to the writer
        self.last_activity = time.monotonic()
        self.login_version = runner.login.version()
        self.login_checked = time.monotonic()

    # -- set-up -----------------------------------------------------------------------------

    def open(self) -> None:
        self.journal = psycopg2.connect(self.runner.journal_url)
        journal.ensure_schema(self.journal)
        with self.journal.cursor() as cur:
            cur.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s))", (capture_lock(self.settings.task),)
            )
            if not cur.fetchone()[0]:
                self.journal.rollback()
                raise CaptureBusy(self.settings.task)
            checkpoint = journal.load_checkpoint(cur, self.settings.task)
            for binding in self.runner.bindings:
                name = binding.collection.name
                self.next_offsets[name] = journal.next_offset(cur, name)
        self.journal.commit()

        self.source = psycopg2.connect(self.runner.source_url)
        self.source.autocommit = True
        with self.source.cursor() as cur:
            check_wal_level(cur)
            for binding in self.runner.bindings:
                self.tables[binding.id] = describe_table(
                    cur, binding.namespace, binding.stream, binding.key_columns
                )
            ensure_watermarks_table(cur, self.settings.watermarks_table)
            ensure_publication(
                cur,
                self.settings.publication,
                [t.quoted for t in self.tables.values()] + [self.settings.watermarks_table],
            )
            self._prepare_slot(cur, checkpoint)
        if checkpoint:
            self.checkpoint = lsn_int(checkpoint[0])
            self.state = checkpoint[1]
        self.last_commit_end = self.checkpoint
        for binding in self.runner.bindings:
            self.state.setdefault(binding.id, {"backfilled": False, "cursor": None})
        self.report.checkpoint_lsn = lsn_text(self.checkpoint)

        self.replication = psycopg2.connect(
            self.runner.source_url,
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
        )
        self.stream = self.replication.cursor()
        self.stream.start_replication(
            slot_name=self.settings.slot,
            decode=False,
            options={"proto_version": "1", "publication_names": self.settings.publication},
            status_interval=10,
        )
        self.submitted = self.checkpoint
        self.runner.streaming.set()
        report = self.report
        self.writer = JournalWriter(
            self.journal,
            self.settings.task,
            self.next_offsets,
            report,
            on_commit=self._committed,
        )

    def _prepare_slot(self, cur, checkpoint) -> None:
        confirmed, problem = slot_status(cur, self.settings.slot)
        slot = self.settings.slot
        if problem:
            raise SourceError(
                f"replication slot {slot!r} cannot be used: {problem}; changes since the "
                f"checkpoint may be lost. Re-backfill with `sophia flow drain --rebackfill`"
            )
        if confirmed is None and checkpoint is not None and checkpoint[0] != "0/0":
            raise SourceError(
                f"replication slot {slot!r} is gone (dropped?) but capture "
                f"{self.settings.task} has a checkpoint at {checkpoint[0]}; changes since then "
                "cannot be replayed. Re-backfill with `sophia flow drain --rebackfill`"
            )
        if confirmed is None:
            created = create_slot(cur, slot)
            log.info("created replication slot %s at %s", slot, created)

    def close(self) -> None:
        self.runner.streaming.clear()
        if self.writer is not None:
            self.writer.close()
        for conn in (self.replication, self.source, self.journal):
            if conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()

    # -- the loop ---------------------------------------------------------------------------

    def loop(self, stop: threading.Event | None) -> None:
        if stop is None:
            with self.source.cursor() as cur:
                self.drain_mark = write_watermark(cur, self.settings, "drain")
        while True:
            if stop is not None and stop.is_set():
                break
            if stop is None and self.drain_reached and self._backfill_done():
                break
            if self.chunk is None and not self._backfill_done():
                self._start_chunk()
            if stop is not None and time.monotonic() - self.login_checked > LOGIN_CHECK_S:
                self._check_login()
            if stop is not None and time.monotonic() - self.last_activity > HEARTBEAT_S:
                with self.source.cursor() as cur:
                    write_watermark(cur, self.settings, "heartbeat")
                self.last_activity = time.monotonic()
            received = self._pump()
            if received:
                self.last_activity = time.monotonic()
            # Group commit: what arrives while the writer commits one batch becomes the next
            # batch, so batches grow with the load and latency stays flat.
            self._flush()
            if not received:
                select.select([self.stream], [], [], IDLE_WAIT_S if self._idle() else 0.002)
        self._flush(wait=True)

    def _check_login(self) -> None:
        """A rotated login: commit what is in hand, then leave; serve() reconnects with the
        new login and resumes from the checkpoint (the previous login stays valid meanwhile)."""
        self.login_checked = time.monotonic()
        version = self.runner.login.version()
        if version != self.login_version:
            self._flush(wait=True)
            raise LoginRotated(f"the source login was rotated to {self.runner.login.user()}")

    def _committed(self, lsn: int) -> None:
        """Called by the writer's thread after each commit."""
        self.report.checkpoint_lsn = lsn_text(lsn)
        self.runner.on_batch(self.report)

    def _idle(self) -> bool:
        return not self.pending and self.submitted == self.checkpoint

    def _pump(self) -> int:
        """Handles the messages available now, without waiting."""
        handled = 0
        message = self.stream.read_message()
        while message is not None:
            self._handle(message.payload, message.data_start)
            handled += 1
            if self.tx is None and len(self.pending) >= MAX_BATCH_DOCUMENTS:
                break
            message = self.stream.read_message()
        return handled

    def _handle(self, payload: bytes, event_lsn: int) -> None:
        message = pgoutput.decode(payload)
        kind = type(message)
        if kind is pgoutput.Begin:
            self.tx = Transaction(message, skip=message.final_lsn < self.checkpoint)
        elif kind is pgoutput.Commit:
            self._commit(message)
        elif kind is pgoutput.Relation:
            self._relation(message)
        elif kind in (pgoutput.Insert, pgoutput.Update, pgoutput.Delete):
            if self.tx is not None and not self.tx.skip:
                self._row_change(message, event_lsn)
        elif kind is pgoutput.Truncate and any(
            r in self.relations and self.relations[r].binding for r in message.relids
        ):
            log.warning(
                "TRUNCATE of a captured table is not propagated (as in Estuary); "
                "re-backfill to reflect it"
            )

    def _relation(self, relation: pgoutput.Relation) -> None:
        qualified = f"{relation.namespace}.{relation.name}"
        if qualified == self.settings.watermarks_table:
            self.watermark_relid = relation.relid
        binding = next((b for b in self.runner.bindings if b.id == qualified), None)
        self.relations[relation.relid] = relation_plan(relation, binding)

    def _row_change(self, message, event_lsn: int) -> None:
        relid = message.relid
        if relid == self.watermark_relid:
            values = message.new if not isinstance(message, pgoutput.Delete) else message.old
            if values and len(values) > 1:
                self.tx.marks.append(values[1])
            return
        plan = self.relations.get(relid)
        if plan is None or plan.binding is None:
            return
        op, key_values, document, unchanged = decode_row(plan, message)
        begin = self.tx.begin
        relation = plan.relation
        with_meta(
            document,
            op,
            relation.namespace,
            relation.name,
            begin.commit_ts_ms,
            Location(self.last_commit_end, event_lsn, begin.final_lsn),
            txid=begin.xid,
        )
        change = Change(
            plan.binding,
            op,
            key_text(key_values),
            document,
            unchanged,
            begin.commit_ts_ms,
            begin.final_lsn,
        )
        self._route(change, key_values)

    def _route(self, change: Change, key_values: tuple) -> None:
        """Emit, fold into the chunk in flight, or drop, by where the backfill stands."""
        state = self.state[change.binding.id]
        if state["backfilled"] or (
            state["cursor"] is not None and key_values <= tuple(state["cursor"])
        ):
            self.tx.changes.append(change)
            return
        chunk = self.chunk
        if (
            chunk is not None
            and chunk.binding is change.binding
            and (chunk.high is None or key_values <= chunk.high)
        ):
            if change.op == "d":
                chunk.rows.pop(change.key, None)
            else:
                previous = chunk.rows.get(change.key)
                document = change.document
                for column in change.unchanged:
                    if previous is not None and column in previous[1]:
                        document[column] = previous[1][column]
                chunk.rows[change.key] = (key_values, as_snapshot(document))
        # else: beyond the chunk; a later chunk reads the row as it is then

    def _commit(self, commit: pgoutput.Commit) -> None:
        tx, self.tx = self.tx, None
        if tx is None or tx.skip:
            return
        self.pending.extend(tx.changes)
        self.pending_lsn = commit.end_lsn
        self.last_commit_end = commit.end_lsn
        self.report.transactions += 1
        if self.chunk is not None and self.chunk.watermark in tx.marks:
            self._finish_chunk(commit.end_lsn)
        if self.drain_mark is not None and self.drain_mark in tx.marks:
            self.drain_reached = True

    # -- backfill ---------------------------------------------------------------------------

    def _backfill_done(self) -> bool:
        return all(self.state[b.id]["backfilled"] for b in self.runner.bindings)

    def _start_chunk(self) -> None:
        binding = next(b for b in self.runner.bindings if not self.state[b.id]["backfilled"])
        with self.source.cursor() as cur:
            self.chunk = read_chunk(
                cur,
                self.tables[binding.id],
                binding,
                self.state[binding.id]["cursor"],
                self.settings,
            )

    def _finish_chunk(self, lsn: int) -> None:
        chunk, self.chunk = self.chunk, None
        for key, (_values, document) in sorted(chunk.rows.items(), key=lambda kv: kv[1][0]):
            located(document, Location(lsn))
            self.pending.append(Change(chunk.binding, "c", key, document, (), None, lsn))
        self.report.backfilled_rows += len(chunk.rows)
        state = self.state[chunk.binding.id]
        if chunk.high is None:
            state["backfilled"] = True
            if state.pop("reconcile", False):
                self._reconcile(chunk.binding, lsn)
            log.info("backfill of %s complete", chunk.binding.id)
        else:
            state["cursor"] = list(chunk.high)
            log.info(
                "backfill of %s: %d rows, up to key %s",
                chunk.binding.id,
                len(chunk.rows),
                chunk.high,
            )

    def _reconcile(self, binding: Binding, lsn: int) -> None:
        """After a re-backfill: keys still in the collection but gone from the source were
        deleted while no slot was watching; write their deletes."""
        table = self.tables[binding.id]
        with self.source.cursor() as cur:
            present = present_keys(cur, table, binding)
        self._flush(wait=True)  # the reduced view must hold everything emitted so far
        reader = psycopg2.connect(self.runner.journal_url)
        try:
            with reader, reader.cursor() as cur:
                cur.execute(
                    "SELECT key::text FROM flow.reduced WHERE collection = %s",
                    (binding.collection.name,),
                )
                stale = [orjson.loads(key) for (key,) in cur.fetchall()]
        finally:
            reader.close()
        for values in stale:
            key = key_text(tuple(values))
            if key in present:
                continue
            document = dict(zip(binding.key_columns, values, strict=True))
            now_ms = int(time.time() * 1000)
            with_meta(document, "d", table.namespace, table.name, now_ms, Location(lsn))
            self.pending.append(Change(binding, "d", key, document, (), None, lsn))
        log.info(
            "re-backfill of %s: %d keys no longer in the source deleted",
            binding.id,
            sum(1 for v in stale if key_text(tuple(v)) not in present),
        )

    # -- the exactly-once commit ------------------------------------------------------------

    def _flush(self, wait: bool = False) -> None:
        """Hands the pending changes to the journal writer. Without `wait` it does not block
        on a busy writer (unless the batch is full): changes keep gathering meanwhile."""
        if self.pending or self.pending_lsn > self.submitted:
            block = wait or len(self.pending) >= MAX_BATCH_DOCUMENTS
            batch = Batch(self.pending, self.pending_lsn, copy.deepcopy(self.state))
            if self.writer.offer(batch, block=block):
                self.pending = []
                self.submitted = self.pending_lsn
        if wait:
            self.writer.finish()
        self._confirm()

    def _confirm(self) -> None:
        """Confirms to the slot what the writer has committed, and only that."""
        lsn = self.writer.committed()
        if lsn is not None:
            self.checkpoint = lsn
            self.stream.send_feedback(write_lsn=lsn, flush_lsn=lsn, force=True)
            self.report.checkpoint_lsn = lsn_text(lsn)
