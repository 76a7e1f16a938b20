"""One connected run of a capture (as source-postgres's replication.go): the slot, the
pgoutput stream decoded into changes, the backfill chunks interleaved with it, and the
exactly-once hand-off to the journal writer.

Exactly once: the documents of a batch of source transactions, the reduced view and the
checkpoint (the end LSN of the last transaction) commit in one journal transaction; only then
is that LSN confirmed to the slot. A restarted capture skips transactions at or before its
checkpoint, so one that committed but crashed before confirming is not journaled twice.

A transaction too large to hold (limits.py) is journaled in parts before its commit arrives:
each part's checkpoint keeps the LSN of the last whole transaction and names the open one
with the number of its changes already written, which a restart skips when it replays it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import select
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from sophia_assets.flow import backfill, journal, pgoutput
from sophia_assets.flow.bindings import Binding, CaptureSettings
from sophia_assets.flow.documents import (
    CREATE,
    DELETE,
    UPDATE,
    Change,
    key_text,
    location,
    streamed_meta,
)
from sophia_assets.flow.key_order import KeyOrder
from sophia_assets.flow.limits import BatchLimits
from sophia_assets.flow.pgoutput import UNCHANGED, lsn_int, lsn_text
from sophia_assets.flow.source import (
    SourceError,
    SourceTable,
    check_wal_level,
    create_slot,
    describe_table,
    ensure_publication,
    ensure_watermarks_table,
    relation,
    slot_status,
)
from sophia_assets.flow.tasks import capture_lock
from sophia_assets.flow.values import Converter, converter, problem_of
from sophia_assets.flow.watermarks import DRAIN, HEARTBEAT, watermark_of, write_watermark
from sophia_assets.flow.writer import Batch, JournalWriter

if TYPE_CHECKING:
    from sophia_assets.flow.capture import CaptureReport, CaptureRunner

log = logging.getLogger("sophia.flow")
IDLE_WAIT_S = 0.5
# An idle serve writes a watermark this often, so the slot's confirmed position follows the
# server's WAL (journal writes, other databases) instead of holding it all back.
HEARTBEAT_S = 30.0
# A serving capture looks for a rotated source login this often.
LOGIN_CHECK_S = 1.0
# The checkpoint state's entry for a transaction journaled in part: {"final_lsn", "written"}.
# Binding ids hold a dot, so it never names a binding.
IN_TRANSACTION = "in_transaction"


class CaptureBusy(RuntimeError):
    """Another process runs this capture."""


class LoginRotated(Exception):
    """The source login was rotated while serving: reconnect with the new one."""


@dataclass(frozen=True)
class RelationPlan:
    """How to turn a relation's tuples into documents; rebuilt on every Relation message, so
    a table altered while captured is read with its new columns."""

    relation: pgoutput.Relation
    binding: Binding | None
    names: tuple[str, ...]
    converters: tuple[Converter, ...]
    key_index: tuple[int, ...]


@dataclass
class Transaction:
    begin: pgoutput.Begin
    skip: bool
    changes: list[Change] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    size: int = 0  # bytes of the row messages behind `changes`
    routed: int = 0  # changes of bound tables seen so far, journaled in part or not
    written: int = 0  # of those, how many an earlier run journaled already (skipped)


def prepare_slot(cur, settings: CaptureSettings, checkpoint: tuple[str, Any] | None) -> None:
    """Creates the slot on a first run; refuses one that cannot replay from the checkpoint."""
    slot = settings.slot
    confirmed, problem = slot_status(cur, slot)
    if problem:
        raise SourceError(
            f"replication slot {slot!r} cannot be used: {problem}; changes since the "
            f"checkpoint may be lost. Re-backfill with `sophia flow drain --rebackfill`"
        )
    if confirmed is None and checkpoint is not None and checkpoint[0] != "0/0":
        raise SourceError(
            f"replication slot {slot!r} is gone (dropped?) but capture "
            f"{settings.task} has a checkpoint at {checkpoint[0]}; changes since then "
            "cannot be replayed. Re-backfill with `sophia flow drain --rebackfill`"
        )
    if confirmed is None:
        created = create_slot(cur, slot)
        log.info("created replication slot %s at %s", slot, created)


def replication_connection(source_url: str):
    return psycopg2.connect(
        source_url, connection_factory=psycopg2.extras.LogicalReplicationConnection
    )


def start_stream(connection, settings: CaptureSettings):
    """Streams the publication from the slot, pgoutput protocol version 1, raw bytes."""
    stream = connection.cursor()
    stream.start_replication(
        slot_name=settings.slot,
        decode=False,
        # pgoutput reads publication_names as a list of identifiers: quoted, so a name with
        # capitals, commas or quotes stays one name.
        options={
            "proto_version": "1",
            "publication_names": sql.Identifier(settings.publication).as_string(connection),
        },
        status_interval=10,
    )
    return stream


def _row_document(
    plan: RelationPlan, op: str, values: list, key_values: tuple
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The columns of a replicated tuple (only the key for a delete), and the TOASTed columns
    left out because they did not change. Raises ValueError for a value with no JSON form."""
    if op == DELETE:
        return {plan.names[i]: key_values[n] for n, i in enumerate(plan.key_index)}, ()
    document: dict[str, Any] = {}
    unchanged: tuple[str, ...] = ()
    for name, value, convert in zip(plan.names, values, plan.converters, strict=True):
        if value is None:
            document[name] = None
        elif value is UNCHANGED:
            unchanged += (name,)
        else:
            document[name] = convert(value)
    return document, unchanged


class Session:
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
        self.orders: dict[str, KeyOrder] = {}  # each binding's key order, for the backfill
        self.checkpoint = 0
        self.state: dict[str, Any] = {}
        self.relations: dict[int, RelationPlan] = {}
        self.watermark_relid: int | None = None
        self.tx: Transaction | None = None
        self.pending: list[Change] = []
        self.pending_size = 0
        self.pending_lsn = 0
        self.limits = BatchLimits.from_env()
        self.resumed_tx: dict[str, Any] | None = None  # a transaction journaled in part
        self.last_commit_end = 0
        self.chunk: backfill.Chunk | None = None
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
        checkpoint = self._claim_task()
        self._prepare_source(checkpoint)
        if checkpoint:
            self.checkpoint = lsn_int(checkpoint[0])
            self.state = checkpoint[1]
            self.resumed_tx = self.state.pop(IN_TRANSACTION, None)
        self.last_commit_end = self.checkpoint
        for binding in self.runner.bindings:
            self.state.setdefault(binding.id, backfill.initial_state())
        self.report.checkpoint_lsn = lsn_text(self.checkpoint)

        self.replication = replication_connection(self.runner.source_url)
        self.stream = start_stream(self.replication, self.settings)
        self.submitted = self.checkpoint
        self.runner.streaming.set()
        self.writer = JournalWriter(
            self.journal,
            self.settings.task,
            self.next_offsets,
            self.report,
            on_commit=self._committed,
        )
        self.pending_lsn = self.checkpoint
        for binding in self.runner.bindings:
            state = self.state[binding.id]
            if state["backfilled"] and state.get("reconcile"):  # a crash cut it short
                self._reconcile(binding, self.checkpoint)
                state.pop("reconcile")

    def _claim_task(self) -> tuple[str, dict[str, Any]] | None:
        """Takes the capture's lock on the journal (held for the session), then reads its
        checkpoint and the collections' next offsets."""
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
        return checkpoint

    def _prepare_source(self, checkpoint: tuple[str, Any] | None) -> None:
        """Preflight, the tables, the watermarks table, the publication and the slot."""
        self.source = psycopg2.connect(self.runner.source_url)
        self.source.autocommit = True
        with self.source.cursor() as cur:
            check_wal_level(cur)
            for binding in self.runner.bindings:
                table = describe_table(cur, binding.namespace, binding.stream, binding.key_columns)
                self.tables[binding.id] = table
                self.orders[binding.id] = backfill.key_order(table, binding)
            ensure_watermarks_table(cur, self.settings.watermarks_table)
            ensure_publication(
                cur,
                self.settings.publication,
                [(t.namespace, t.name) for t in self.tables.values()]
                + [relation(self.settings.watermarks_table)],
            )
            prepare_slot(cur, self.settings, checkpoint)

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
        """Without `stop` (a drain), runs until its watermark is back and the backfill done."""
        if stop is None:
            self.drain_mark = self._watermark(DRAIN)
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
                self._watermark(HEARTBEAT)
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

    def _watermark(self, purpose: str) -> str:
        with self.source.cursor() as cur:
            return write_watermark(cur, self.settings, purpose)

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

    # -- decoding the stream ----------------------------------------------------------------

    def _pump(self) -> int:
        """Handles the messages available now, without waiting."""
        handled = 0
        message = self.stream.read_message()
        while message is not None:
            self._handle(message.payload, message.data_start)
            handled += 1
            if self.tx is None and self.limits.full(len(self.pending), self.pending_size):
                break
            message = self.stream.read_message()
        return handled

    def _handle(self, payload: bytes, event_lsn: int) -> None:
        message = pgoutput.decode(payload)
        kind = type(message)
        if kind is pgoutput.Begin:
            self.tx = Transaction(message, skip=message.final_lsn < self.checkpoint)
            resumed = self.resumed_tx
            if resumed and lsn_int(resumed["final_lsn"]) == message.final_lsn:
                self.tx.written = resumed["written"]
        elif kind is pgoutput.Commit:
            self._commit(message)
        elif kind is pgoutput.Relation:
            self._relation(message)
        elif kind in (pgoutput.Insert, pgoutput.Update, pgoutput.Delete):
            tx = self.tx
            if tx is not None and not tx.skip:
                self._row_change(message, event_lsn)
                if tx.routed > tx.written:  # a replayed prefix is skipped, and not counted
                    tx.size += len(payload)
                    if self.limits.full(len(tx.changes), tx.size):
                        self._flush_part()
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
        names = tuple(c.name for c in relation.columns)
        key_index = tuple(names.index(k) for k in binding.key_columns) if binding else ()
        self.relations[relation.relid] = RelationPlan(
            relation,
            binding,
            names,
            tuple(converter(c.type_oid) for c in relation.columns),
            key_index,
        )

    def _row_change(self, message, event_lsn: int) -> None:
        relid = message.relid
        if relid == self.watermark_relid:
            values = message.new if not isinstance(message, pgoutput.Delete) else message.old
            mark = watermark_of(values)
            if mark is not None:
                self.tx.marks.append(mark)
            return
        plan = self.relations.get(relid)
        if plan is None or plan.binding is None:
            return
        if isinstance(message, pgoutput.Delete):
            self._emit(plan, DELETE, message.old, event_lsn)
        elif isinstance(message, pgoutput.Insert):
            self._emit(plan, CREATE, message.new, event_lsn)
        elif (old := self._changed_key(plan, message)) is None:
            self._emit(plan, UPDATE, message.new, event_lsn)
        else:
            # A new primary key: as source-postgres, a create of the new key (carrying the
            # unchanged TOASTed values of the old key's document), then a delete of the old.
            self._emit(plan, CREATE, message.new, event_lsn, carried_from=key_text(old))
            self._emit(plan, DELETE, message.old, event_lsn)

    def _changed_key(self, plan: RelationPlan, message) -> tuple | None:
        """The old key of an update that changed it ('K' or 'O' old tuple), else None."""
        if message.old is None:
            return None
        old = tuple(message.old[i] for i in plan.key_index)
        new = tuple(message.new[i] for i in plan.key_index)
        if old == new:
            return None
        try:
            return tuple(
                plan.converters[i](text) for i, text in zip(plan.key_index, old, strict=True)
            )
        except ValueError:
            return old  # the key's text: the delete of it is quarantined with the reason

    def _emit(
        self, plan: RelationPlan, op: str, values: list, event_lsn: int, carried_from=None
    ) -> None:
        problem = None
        try:
            key_values = tuple(plan.converters[i](values[i]) for i in plan.key_index)
            document, unchanged = _row_document(plan, op, values, key_values)
        except (ValueError, RecursionError):
            # Quarantined, not retried: the same value would fail on every replay.
            document, problem = problem_of(plan.names, values, plan.converters)
            key_values = tuple(document[plan.names[i]] for i in plan.key_index)
            unchanged = ()
        begin = self.tx.begin
        relation = plan.relation
        document["_meta"] = streamed_meta(
            op,
            begin.commit_ts_ms,
            relation.namespace,
            relation.name,
            location(last_commit_end=self.last_commit_end, event=event_lsn, commit=begin.final_lsn),
            begin.xid,
        )
        change = Change(
            plan.binding,
            op,
            key_text(key_values),
            document,
            unchanged,
            begin.commit_ts_ms,
            begin.final_lsn,
            carried_from,
            problem,
        )
        self._route(change, [values[i] for i in plan.key_index])

    def _route(self, change: Change, key_texts: list) -> None:
        """Emit, fold into the chunk in flight, or drop, by where the backfill stands."""
        tx = self.tx
        tx.routed += 1
        if tx.routed <= tx.written:  # journaled before a restart, with the state of then
            return
        state = self.state[change.binding.id]
        if state["backfilled"]:  # the common case: no key order to work out
            self.tx.changes.append(change)
            return
        order = self.orders[change.binding.id]
        position = order.position(key_texts)
        if backfill.passed(state, position, order):
            self.tx.changes.append(change)
        elif self.chunk is not None and self.chunk.covers(change.binding, position):
            self.chunk.fold(change, position)
        # else: beyond the chunk; a later chunk reads the row as it is then

    def _commit(self, commit: pgoutput.Commit) -> None:
        tx, self.tx = self.tx, None
        if tx is None or tx.skip:
            return
        self.pending.extend(tx.changes)
        self.pending_size += tx.size
        self.pending_lsn = commit.end_lsn
        if tx.written:
            self.resumed_tx = None
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
            self.chunk = backfill.read_chunk(
                cur,
                self.settings,
                binding,
                self.tables[binding.id],
                self.state[binding.id]["cursor"],
                self.limits,
            )

    def _finish_chunk(self, lsn: int) -> None:
        """The chunk's watermark came back at `lsn`: emit its rows, advance the cursor."""
        chunk, self.chunk = self.chunk, None
        self.pending.extend(chunk.changes(lsn))
        self.report.backfilled_rows += len(chunk.rows)
        state = self.state[chunk.binding.id]
        if chunk.high is None:
            state["backfilled"] = True
            if state.get("reconcile"):
                # Popped only now: the flush inside commits the last chunk with the state,
                # and a crash before the deletes are committed must find them still owed.
                self._reconcile(chunk.binding, lsn)
                state.pop("reconcile")
            log.info("backfill of %s complete", chunk.binding.id)
        else:
            state["cursor"] = chunk.cursor
            log.info(
                "backfill of %s: %d rows, up to key %s",
                chunk.binding.id,
                len(chunk.rows),
                chunk.cursor,
            )

    def _reconcile(self, binding: Binding, lsn: int) -> None:
        """After a re-backfill: keys still in the collection but gone from the source were
        deleted while no slot was watching; write their deletes."""
        table = self.tables[binding.id]
        with self.source.cursor() as cur:
            present = backfill.source_keys(cur, binding, table)
        self._flush(wait=True)  # the reduced view must hold everything emitted so far
        reader = psycopg2.connect(self.runner.journal_url)
        try:
            with reader, reader.cursor() as cur:
                stale = journal.reduced_keys(cur, binding.collection.name)
        finally:
            reader.close()
        deletes = backfill.reconciling_deletes(binding, table, stale, present, lsn)
        self.pending.extend(deletes)
        log.info(
            "re-backfill of %s: %d keys no longer in the source deleted",
            binding.id,
            len(deletes),
        )

    # -- the exactly-once commit ------------------------------------------------------------

    def _flush(self, wait: bool = False) -> None:
        """Hands the pending changes to the journal writer. Without `wait` it does not block
        on a busy writer (unless the batch is full): changes keep gathering meanwhile."""
        if self.pending or self.pending_lsn > self.submitted:
            block = wait or self.limits.full(len(self.pending), self.pending_size)
            batch = Batch(self.pending, self.pending_lsn, copy.deepcopy(self.state))
            if self.writer.offer(batch, block=block):
                self.pending = []
                self.pending_size = 0
                self.submitted = self.pending_lsn
        if wait:
            self.writer.finish()
        self._confirm()

    def _flush_part(self) -> None:
        """Journals what the open transaction has changed so far (with the whole
        transactions pending), waiting for room: memory stays bounded however large it is.
        The checkpoint stays at the last whole transaction; only its commit moves it."""
        tx = self.tx
        state = copy.deepcopy(self.state)
        written = max(tx.routed, tx.written)  # never less than an earlier run wrote
        state[IN_TRANSACTION] = {"final_lsn": lsn_text(tx.begin.final_lsn), "written": written}
        self.writer.offer(Batch(self.pending + tx.changes, self.pending_lsn, state), block=True)
        self.pending, self.pending_size, self.submitted = [], 0, self.pending_lsn
        tx.changes, tx.size = [], 0
        self._confirm()

    def _confirm(self) -> None:
        """Confirms to the slot what the writer has committed, and only that."""
        lsn = self.writer.committed()
        if lsn is not None:
            self.checkpoint = lsn
            self.stream.send_feedback(write_lsn=lsn, flush_lsn=lsn, force=True)
            self.report.checkpoint_lsn = lsn_text(lsn)
