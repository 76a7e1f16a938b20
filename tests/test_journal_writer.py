"""The journal writer's thread: a failure reaches the capture's thread, and never leaves a
caller waiting on a queue nobody takes from any more."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import psycopg2

from sophia_assets.flow.writer import Batch, JournalWriter


class FailingConnection:
    """psycopg2's connection as far as the writer uses it; its first transaction fails once
    `gate` opens (the server went away mid-batch)."""

    def __init__(self, gate: threading.Event):
        self.gate = gate

    def cursor(self):
        self.gate.wait(30)
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    def rollback(self) -> None:
        pass


def _batch(lsn: int) -> Batch:
    return Batch(changes=[], lsn=lsn, state={})


def _in_thread(call) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_writer_failure_never_leaves_a_waiting_caller_hanging() -> None:
    gate = threading.Event()
    figures = SimpleNamespace(batches=0, collections={})
    writer = JournalWriter(FailingConnection(gate), "t", {}, figures, on_commit=lambda lsn: None)
    writer.offer(_batch(1), block=True)  # the writer takes it, and waits at the gate
    writer.offer(_batch(2), block=True)  # queued: the queue holds one
    offering, offered = _in_thread(lambda: writer.offer(_batch(3), block=True))
    deadline = time.monotonic() + 30
    while not writer._batches.not_full._waiters:  # the third offer waits for room
        assert time.monotonic() < deadline
        time.sleep(0.01)  # polling for the offer to block
    gate.set()  # batch 1 fails now
    offering.join(30)
    finishing, finished = _in_thread(writer.finish)
    finishing.join(30)
    assert not offering.is_alive() and not finishing.is_alive(), "a caller hangs"
    assert isinstance(finished.get("error"), psycopg2.OperationalError)
    assert "error" in offered or offered.get("value") is True
    writer.close()
    assert figures.batches == 0  # nothing was committed, so nothing is confirmed
