"""The capture: backfill, then stream, a Postgres source into collection journals, exactly once.

One engine, two modes: `drain` captures until the WAL position seen at its start (and the
backfill is complete), then stops; `serve` runs until asked to stop, reconnecting when the
database goes away. The protocol lives beside this file, as in Estuary's source-postgres:
`replication` (the slot, the stream, the exactly-once hand-off), `backfill` (chunks between
watermarks), `watermarks`, `documents` (the change document and its `_meta`), and the commit
path in `writer` and `journal`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg2

from sophia_assets.backoff import Backoff
from sophia_assets.catalog.model import Capture, Catalog
from sophia_assets.flow import backfill, journal
from sophia_assets.flow.bindings import capture_bindings, capture_settings
from sophia_assets.flow.credentials import FixedLogin, SourceLogin
from sophia_assets.flow.documents import Change
from sophia_assets.flow.pgoutput import lsn_int, lsn_text
from sophia_assets.flow.replication import CaptureBusy, LoginRotated, Session
from sophia_assets.flow.source import drop_slot, ensure_watermarks_table
from sophia_assets.flow.tasks import capture_lock
from sophia_assets.flow.watermarks import DRAIN, write_watermark
from sophia_assets.flow.writer import CollectionFigures, Commit

# Change was defined here before documents.py; the embedding derivation still imports it here.
__all__ = ["CaptureBusy", "CaptureReport", "CaptureRunner", "Change", "LoginRotated"]

log = logging.getLogger("sophia.flow")


@dataclass
class CaptureReport:
    task: str
    checkpoint_lsn: str = "0/0"
    transactions: int = 0
    batches: int = 0
    backfilled_rows: int = 0
    collections: dict[str, CollectionFigures] = field(default_factory=dict)
    last_commit: Commit | None = None

    # list(): a metrics scrape reads these while the writer's thread adds a collection.
    @property
    def documents(self) -> int:
        return sum(c.documents for c in list(self.collections.values()))

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in list(self.collections.values()))

    @property
    def quarantined(self) -> int:
        return sum(c.quarantined for c in list(self.collections.values()))


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
        self.reconnects = 0  # after a lost connection, for the serve's metrics

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
                self.reconnects += 1
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
        session = Session(self, self.report)
        try:
            session.open()
            session.loop(stop)
        finally:
            session.close()
        return self.report

    def reset_for_rebackfill(self) -> None:
        """Forgets the checkpoint and the slot: the next run backfills every table again and
        then deletes from the collections the keys that are no longer in the source. The
        new checkpoint is written first: a crash before the slot is dropped leaves a
        checkpoint that re-backfills from the old slot, never an old one with no slot."""
        jconn = psycopg2.connect(self.journal_url)
        journal.ensure_schema(jconn)
        try:
            with jconn, jconn.cursor() as cur:
                state = {b.id: backfill.rebackfill_state() for b in self.bindings}
                journal.save_checkpoint(cur, self.settings.task, "0/0", state)
        finally:
            jconn.close()
        with psycopg2.connect(self.source_url) as source, source.cursor() as cur:
            drop_slot(cur, self.settings.slot)
        source.close()
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
                        write_watermark(cur, self.settings, DRAIN)
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


def connection_lost(err: psycopg2.Error) -> bool:
    """A lost connection or stream (server restart, network), as opposed to an error the
    server raised about our statements, which reconnecting would only repeat."""
    if isinstance(err, psycopg2.OperationalError | psycopg2.InterfaceError):
        return True
    code = err.pgcode or ""
    # No code: the client lost the stream ("no COPY in progress"); 08: connection exception;
    # 57P: the server is shutting down or restarting.
    return code == "" or code.startswith(("08", "57P"))
