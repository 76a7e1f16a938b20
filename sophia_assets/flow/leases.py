"""One writer per task: a lease in the platform's Postgres (`flow.leases`) names who may commit
a derivation's or an index's progress, and every such commit is fenced by it.

A lease has an owner, a kind (`serve`: the continuous task in `sophia flow serve`; `run`: a
Dagster run), an epoch bumped at every take-over and a heartbeat. It is free when it has no
owner, when the backend that took it is gone (its process died: free at once), or when its
heartbeat is older than its TTL (its process hangs). A run has priority: it marks
the lease wanted, the serving task sees that between two batches, lets go and waits until the
run releases the lease (or the run's heartbeat expires), then takes it back. Every commit of
the task's progress runs `fence()` first in the same transaction: a writer that lost the lease (a
paused process that woke up after its heartbeat expired) fails its commit instead of writing
over the new owner's. Times are the database's, so no two clocks are compared.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass

import psycopg2

from sophia_assets.flow.journal import CHANNEL

SERVE = "serve"
RUN = "run"
DEFAULT_TTL_S = 15.0


class LeaseLost(RuntimeError):
    """The lease was taken over (or expired and was taken) since this writer took it."""


class LeaseBusy(RuntimeError):
    """Another writer holds the task and did not hand it over."""


def ttl_from_environment() -> float:
    """SOPHIA_LEASE_TTL_S (15): how long a silent owner keeps its lease."""
    return float(os.environ.get("SOPHIA_LEASE_TTL_S", DEFAULT_TTL_S))


def stalled_transaction_options(ttl_s: float) -> str:
    """libpq options (PGOPTIONS) under which the server ends a session whose transaction sits
    idle longer than the TTL: a holder that freezes mid-transaction (stopped, swapped out)
    then loses its locks about when it loses its lease, instead of blocking every writer and
    `ensure_schema` behind it until it wakes. At least 10 s, so the Python work between a
    batch's statements always has room."""
    return f"-c idle_in_transaction_session_timeout={int(max(ttl_s, 10.0) * 1000)}"


def new_owner(kind: str) -> str:
    """A name for this process and attempt, readable in `flow.leases`."""
    return f"{kind}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Lease:
    task: str
    owner: str
    kind: str
    epoch: int
    ttl_s: float


# The holder's connection is alive: the backend that took the lease still runs (its pid and
# start time, so a reused pid does not count). A process that died lost its connection, so its
# lease is free at once instead of after its TTL.
HOLDER_ALIVE = (
    "EXISTS (SELECT 1 FROM pg_stat_activity a "
    "WHERE a.pid = l.pid AND a.backend_start = l.backend_start)"
)
# Wall-clock time, not now() (the transaction's start): a commit at the end of a long
# transaction must not write a heartbeat from its beginning.
FRESH = "l.heartbeat >= clock_timestamp() - make_interval(secs => l.ttl_s)"


def try_acquire(conn, task: str, owner: str, kind: str, ttl_s: float) -> Lease | None:
    """Takes the lease if it is free (or already ours); a serving task also yields to a run
    that wants it. None when someone else holds it."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO flow.leases (task) VALUES (%s) ON CONFLICT (task) DO NOTHING", (task,)
        )
        cur.execute(
            f"SELECT l.owner, l.owner IS NOT NULL AND {FRESH} AND {HOLDER_ALIVE}, "
            "l.wanted_by IS NOT NULL AND l.wanted_by <> %s "
            "AND l.wanted_at >= clock_timestamp() - make_interval(secs => %s) "
            "FROM flow.leases l WHERE l.task = %s FOR UPDATE",
            (owner, ttl_s, task),
        )
        holder, held, wanted = cur.fetchone()
        if kind == SERVE and wanted:
            return None
        if held and holder != owner:
            return None
        cur.execute(
            "UPDATE flow.leases SET owner = %s, kind = %s, epoch = epoch + 1, "
            "heartbeat = clock_timestamp(), ttl_s = %s, pid = pg_backend_pid(), "
            "backend_start = (SELECT backend_start FROM pg_stat_activity "
            "WHERE pid = pg_backend_pid()), "
            "wanted_by = CASE WHEN wanted_by = %s THEN NULL ELSE wanted_by END "
            "WHERE task = %s RETURNING epoch",
            (owner, kind, ttl_s, owner, task),
        )
        return Lease(task, owner, kind, cur.fetchone()[0], ttl_s)


def acquire_for_run(conn, task: str, owner: str, ttl_s: float, timeout_s: float) -> Lease:
    """The lease for a run: at once when free; from a serving task, which hands it over
    between two batches; never from another run, which is reported."""
    deadline = time.monotonic() + timeout_s
    while True:
        lease = try_acquire(conn, task, owner, RUN, ttl_s)
        if lease is not None:
            return lease
        holder = holder_of(conn, task)
        if holder is not None and holder[1] == RUN:
            raise LeaseBusy(
                f"{task} is already running in another process ({holder[0]}); wait for it to finish"
            )
        if time.monotonic() >= deadline:
            raise LeaseBusy(
                f"{task} is held by `sophia flow serve` ({holder[0] if holder else '?'}), which "
                f"did not hand it over within {timeout_s:.0f} s; check that serve is healthy"
            )
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE flow.leases SET wanted_by = %s, wanted_at = now() WHERE task = %s",
                (owner, task),
            )
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"lease:{task}"))  # wakes serve
        time.sleep(0.02)


def holder_of(conn, task: str) -> tuple[str, str] | None:
    """(owner, kind) of a live lease on `task`, None when it is free."""
    with conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT l.owner, l.kind FROM flow.leases l WHERE l.task = %s "
            f"AND l.owner IS NOT NULL AND {FRESH} AND {HOLDER_ALIVE}",
            (task,),
        )
        row = cur.fetchone()
    return (row[0], row[1]) if row else None


def fence(cur, lease: Lease) -> None:
    """In the transaction that commits the task's progress: renews the heartbeat, or raises
    LeaseLost (and the caller's transaction must roll back) when the lease is not ours."""
    cur.execute(
        "UPDATE flow.leases SET heartbeat = clock_timestamp() "
        "WHERE task = %s AND owner = %s AND epoch = %s",
        (lease.task, lease.owner, lease.epoch),
    )
    if cur.rowcount != 1:
        raise LeaseLost(f"{lease.task}: the lease of {lease.owner} (epoch {lease.epoch}) was taken")


def heartbeat(conn, lease: Lease) -> None:
    """Renews the lease in a transaction of its own (LeaseLost when it is gone)."""
    with conn, conn.cursor() as cur:
        fence(cur, lease)


def handover_wanted(conn, lease: Lease) -> bool:
    """A run waits for this serving task's lease."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT wanted_by IS NOT NULL AND wanted_by <> owner "
            "AND wanted_at >= clock_timestamp() - make_interval(secs => %s) "
            "FROM flow.leases WHERE task = %s",
            (lease.ttl_s, lease.task),
        )
        row = cur.fetchone()
    return bool(row and row[0])


def release(conn, lease: Lease) -> None:
    """Lets go of the lease if it is still ours (a lost one is not someone else's to free),
    and wakes a serving task waiting to take it back. Whatever the connection's transaction
    held uncommitted is rolled back first: a writer gives up its lease, never its half batch."""
    conn.rollback()
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE flow.leases SET owner = NULL, heartbeat = NULL, pid = NULL "
            "WHERE task = %s AND owner = %s AND epoch = %s",
            (lease.task, lease.owner, lease.epoch),
        )
        if cur.rowcount:
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"lease:{lease.task}"))


class Heartbeat:
    """Keeps a lease alive from a thread of its own while its holder works (a GPU batch, or
    256 documents on a CPU, can take longer than the TTL); the commits are fenced regardless."""

    def __init__(self, url: str, lease: Lease):
        self.lease = lease
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease:{lease.task}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        conn = None
        try:
            while not self._stop.wait(self.lease.ttl_s / 3):
                try:
                    conn = (
                        conn
                        if conn is not None and not conn.closed
                        else psycopg2.connect(self._url)
                    )
                    heartbeat(conn, self.lease)
                except LeaseLost:
                    return  # the next fenced commit reports it
                except psycopg2.Error:
                    if conn is not None:
                        conn.close()  # a blip: connect again at the next beat
        finally:
            if conn is not None:
                conn.close()
