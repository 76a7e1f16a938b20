"""One writer per task (flow/leases.py), on the embedded server: who may take a lease, when a
serving task yields to a run, and that a writer who lost its lease cannot commit."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from sophia_assets.flow import journal, leases
from tests.support.cdc import drop_database, new_database

TASK = "derive:test/collection"


@pytest.fixture
def url(postgres_url: str) -> Iterator[str]:
    url = new_database(postgres_url)
    conn = psycopg2.connect(url)
    journal.ensure_schema(conn)
    conn.close()
    yield url
    drop_database(url)


@pytest.fixture
def connect(url: str) -> Iterator:
    opened: list = []

    def _connect():
        opened.append(psycopg2.connect(url))
        return opened[-1]

    yield _connect
    for conn in opened:
        conn.close()


def test_a_second_run_is_told_the_task_is_already_running(connect) -> None:
    first = leases.acquire_for_run(connect(), TASK, "run:a", 30, timeout_s=1)
    with pytest.raises(leases.LeaseBusy, match="already running in another process"):
        leases.acquire_for_run(connect(), TASK, "run:b", 30, timeout_s=1)
    assert first.epoch == 1


def test_a_dead_holders_lease_is_taken_at_once_not_after_its_ttl(connect) -> None:
    dying = connect()
    leases.acquire_for_run(dying, TASK, "run:a", 3600, timeout_s=1)
    dying.close()  # the process died: Postgres drops its connection and its lock
    taken = leases.acquire_for_run(connect(), TASK, "run:b", 30, timeout_s=1)
    assert (taken.owner, taken.epoch) == ("run:b", 2)


def test_an_expired_lease_is_taken_and_the_old_holder_cannot_commit(connect) -> None:
    old_conn = connect()
    old = leases.try_acquire(old_conn, TASK, "serve:a", leases.SERVE, ttl_s=0.05)
    assert old is not None
    with old_conn, old_conn.cursor() as cur:  # the holder pauses past its TTL
        cur.execute("UPDATE flow.leases SET heartbeat = now() - interval '1 second'")
    new = leases.try_acquire(connect(), TASK, "serve:b", leases.SERVE, ttl_s=30)
    assert new is not None and new.epoch == old.epoch + 1
    with pytest.raises(leases.LeaseLost), old_conn, old_conn.cursor() as cur:
        leases.fence(cur, old)
    with old_conn, old_conn.cursor() as cur:
        cur.execute("SELECT owner FROM flow.leases WHERE task = %s", (TASK,))
        assert cur.fetchone() == ("serve:b",)


def test_a_live_holder_keeps_its_lease(connect) -> None:
    assert leases.try_acquire(connect(), TASK, "serve:a", leases.SERVE, 30) is not None
    assert leases.try_acquire(connect(), TASK, "serve:b", leases.SERVE, 30) is None


def test_serve_hands_over_to_a_run_and_takes_the_lease_back_after(connect) -> None:
    serve_conn, run_conn = connect(), connect()
    served = leases.try_acquire(serve_conn, TASK, "serve:a", leases.SERVE, 30)
    assert served is not None and not leases.handover_wanted(serve_conn, served)
    with pytest.raises(leases.LeaseBusy, match="did not hand it over"):
        leases.acquire_for_run(run_conn, TASK, "run:b", 30, timeout_s=0.1)
    assert leases.handover_wanted(serve_conn, served)
    leases.release(serve_conn, served)
    # While the run wants it, serve does not take it back, even though it is free.
    assert leases.try_acquire(serve_conn, TASK, "serve:a", leases.SERVE, 30) is None
    run = leases.acquire_for_run(run_conn, TASK, "run:b", 30, timeout_s=1)
    assert leases.try_acquire(serve_conn, TASK, "serve:a", leases.SERVE, 30) is None
    leases.release(run_conn, run)
    back = leases.try_acquire(serve_conn, TASK, "serve:a", leases.SERVE, 30)
    assert back is not None and back.epoch == run.epoch + 1


def test_a_release_by_a_writer_that_lost_the_lease_frees_nothing(connect) -> None:
    a_conn, b_conn = connect(), connect()
    a = leases.try_acquire(a_conn, TASK, "serve:a", leases.SERVE, ttl_s=0.05)
    with a_conn, a_conn.cursor() as cur:
        cur.execute("UPDATE flow.leases SET heartbeat = now() - interval '1 second'")
    b = leases.try_acquire(b_conn, TASK, "serve:b", leases.SERVE, ttl_s=30)
    assert a is not None and b is not None
    leases.release(a_conn, a)
    assert leases.holder_of(b_conn, TASK) == ("serve:b", leases.SERVE)


def test_a_holder_frozen_mid_transaction_loses_its_locks_to_the_server(url: str) -> None:
    """Under `sophia flow serve`'s options, a transaction left idle past the TTL (the floor,
    10 s) is ended by the server, so what waited on its locks (here `ensure_schema`'s
    CREATE INDEX IF NOT EXISTS behind a write to the journal) goes on."""
    holder = psycopg2.connect(url, options=leases.stalled_transaction_options(1.0))
    with holder.cursor() as cur:  # a write, then silence: the process froze
        cur.execute(
            'INSERT INTO flow.journal (collection, "offset", key, document, commit_lsn) '
            "VALUES ('x', 0, '[0]', '{}', '0/1')"
        )
    waiter = psycopg2.connect(url, options="-c statement_timeout=60000")  # never forever
    try:
        journal.ensure_schema(waiter)  # waits for the holder's lock, then goes through
    finally:
        waiter.close()
    ended = pytest.raises(psycopg2.OperationalError, match="server closed the connection")
    with ended, holder.cursor() as cur:
        cur.execute("SELECT 1")
    holder.close()
