"""The journal writer: commits batches of captured changes on its own thread, so decoding the
next batch overlaps the database's work on this one (psycopg2 releases the GIL while it
waits). Batches are written one at a time, in order, each in one transaction with the
capture's checkpoint; the LSNs it reports as committed are the only ones the capture
confirms to the slot.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from sophia_assets.flow import journal
from sophia_assets.flow.documents import UPDATE, Change, set_before, source_of
from sophia_assets.flow.pgoutput import lsn_text

log = logging.getLogger("sophia.flow")


@dataclass
class CollectionFigures:
    documents: int = 0
    quarantined: int = 0
    bytes: int = 0  # of the journaled documents' JSON
    first_offset: int | None = None
    last_offset: int | None = None


@dataclass(frozen=True)
class Commit:
    """A committed batch, for the capture-latency histogram: when it committed (Unix time)
    and the source commit times (ms) of its changes; backfilled rows have none."""

    at: float
    source_ts_ms: list[int]


@dataclass
class Batch:
    changes: list[Change]  # in source order
    lsn: int  # end LSN of the last source transaction in the batch
    state: dict[str, Any]  # the capture's backfill state after the batch


class JournalWriter:
    def __init__(
        self,
        conn,
        task: str,
        next_offsets: dict[str, int],
        figures: Any,
        on_commit: Callable[[int], None],
    ):
        """`figures` (the capture's report) gets `batches`, per-collection figures and
        `last_commit`, set before `on_commit` is called."""
        self._conn = conn
        self._task = task
        self._offsets = next_offsets
        self.figures = figures
        self._on_commit = on_commit
        self._batches: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._committed: queue.Queue[int] = queue.Queue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"journal:{task}", daemon=True)
        self._thread.start()

    # -- called by the capture's thread -----------------------------------------------------

    def offer(self, batch: Batch, block: bool) -> bool:
        """Queues the batch; without `block`, returns False when the writer is still busy
        (the capture then keeps gathering, and the next batch is larger)."""
        self.raise_if_failed()
        try:
            self._batches.put(batch, block=block)
        except queue.Full:
            return False
        return True

    def committed(self) -> int | None:
        """The highest LSN committed since the last call, if any."""
        self.raise_if_failed()
        lsn = None
        while True:
            try:
                lsn = self._committed.get_nowait()
            except queue.Empty:
                return lsn

    def finish(self) -> None:
        """Waits until every queued batch is committed (or the writer failed)."""
        self._batches.join()
        self.raise_if_failed()

    def close(self) -> None:
        if self._thread.is_alive():
            self._batches.put(None)
            self._thread.join(timeout=60)

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    # -- the writer's thread ----------------------------------------------------------------

    def _run(self) -> None:
        """Writes until `close()`. After a failure it keeps taking (and dropping) what is
        queued, so no `offer` or `finish` waits on a thread that is gone; the capture's
        thread raises the error at its next call."""
        while True:
            batch = self._batches.get()
            try:
                if batch is None:
                    return
                if self.error is not None:
                    continue  # dropped: never confirmed, so captured again after a restart
                self._write(batch)
                self.figures.last_commit = Commit(
                    time.time(), [c.source_ts_ms for c in batch.changes if c.source_ts_ms]
                )
                self._committed.put(batch.lsn)
                self._on_commit(batch.lsn)
            except BaseException as err:  # handed to the capture's thread
                self.error = err
            finally:
                self._batches.task_done()

    def _write(self, batch: Batch) -> None:
        by_collection: dict[str, list] = {}
        for change in batch.changes:
            by_collection.setdefault(change.binding.collection.name, []).append(change)
        offsets = dict(self._offsets)
        try:
            with self._conn.cursor() as cur:
                for name, items in by_collection.items():
                    offsets[name] = write_changes(cur, name, items, offsets[name], self.figures)
                journal.save_checkpoint(cur, self._task, lsn_text(batch.lsn), batch.state)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        self._offsets.update(offsets)
        self.figures.batches += 1


def _carry_unchanged(
    document: dict, columns: tuple[str, ...], previous: dict | None, collection: str, key: str
) -> None:
    """pgoutput leaves out unchanged TOASTed values; the previous document has them."""
    for column in columns:
        if previous is not None and column in previous:
            document[column] = previous[column]
        else:
            log.warning(
                "%s %s: unchanged value of %r is not in the collection; left out",
                collection,
                key,
                column,
            )


def checked_text(validate: Any, document: dict[str, Any]) -> tuple[str, str | None]:
    """(the document's journal text, None) when it passes the schema and JSON can write it;
    else ("", the reason it is quarantined)."""
    try:
        validate(document)
        return journal.document_text(document), None
    except fastjsonschema.JsonSchemaException as err:
        return "", f"schema: {err.message}"
    except (TypeError, RecursionError) as err:
        return "", f"not writable as JSON: {err}"


def write_changes(cur, name: str, items: list[Change], first_offset: int, figures: Any) -> int:
    """Appends changes to a collection: previous documents, TOAST carry-over, `before`,
    schema validation (failures to the quarantine), reduction, journal and reduced view.
    Each item's `binding` needs `validate` and `reducer`. Returns the next offset."""
    binding = items[0].binding
    keys = list(dict.fromkeys(change.key for change in items))
    keys += [c.carried_from for c in items if c.carried_from and c.carried_from not in keys]
    current: dict[str, dict | None] = dict(journal.reduced_documents(cur, name, keys))
    existing = set(current)
    entries: list[journal.Entry] = []
    reduced: dict[str, tuple[dict | None, int]] = {}
    collection_figures = figures.collections.setdefault(name, CollectionFigures())
    offset = first_offset
    texts: dict[int, str] = {}  # each document's journal text, by id()
    for change in items:
        previous = current.get(change.key)
        document = change.document
        if change.unchanged:
            source = current.get(change.carried_from) if change.carried_from else previous
            _carry_unchanged(document, change.unchanged, source, name, change.key)
        if change.op == UPDATE and previous is not None:
            set_before(document, previous)
        reason = change.problem and f"value: {change.problem}"
        if reason is None:
            text, reason = checked_text(binding.validate, document)
        if reason is not None:
            # Confirmed past like any change: a permanent error is kept, never retried.
            journal.quarantine(cur, name, document, reason, source_of(document))
            collection_figures.quarantined += 1
            continue
        texts[id(document)] = text
        after = binding.reducer.reduce(previous, document)
        current[change.key] = after
        entries.append(
            journal.Entry(change.key, document, lsn_text(change.commit_lsn), change.source_ts_ms)
        )
        reduced[change.key] = (after, offset)
        offset += 1
    if entries:
        journal.append(cur, name, first_offset, entries, texts)
        journal.write_reduced(cur, name, reduced, existing, texts)
        collection_figures.documents += len(entries)
        collection_figures.bytes += sum(len(text.encode()) for text in texts.values())
        if collection_figures.first_offset is None:
            collection_figures.first_offset = first_offset
        collection_figures.last_offset = offset - 1
    return offset
