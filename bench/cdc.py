"""`uv run python -m bench.cdc`: the capture against the protocol floor, in one run.

- floor: `pg_recvlogical` decoding the same changes (pgoutput, same publication) to /dev/null;
- ours: a drain of the same changes into durable journals (documents, reduced view and
  checkpoint committed together);
- latency: source commit -> journal commit at a steady rate of single-row transactions, with
  `serve` running;
- one large transaction (1,000,000 rows by default): the drain's time, the documents
  journaled (exactly once: one per row) and the process's peak RSS, which the batch limits
  bound (the floor's pg_recvlogical holds one message at a time).

Everything runs in a scratch database on the platform's Postgres, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import psycopg2

from bench.report import add_json_flag, say
from bench.scratch import scratch_capture, scratch_database
from sophia_assets.catalog import Catalog
from sophia_assets.flow.capture import CaptureRunner
from sophia_assets.flow.latency import latency_figures
from sophia_assets.postgres.urls import without_password

BENCH_TABLE_DDL = """
CREATE TABLE public.documents (
    id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now())
"""
RATE_WRITER = """
import os, sys, time, psycopg2
url = os.environ["SOPHIA_BENCH_URL"]  # not an argument: every user sees those through ps
rate, seconds, first = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
conn = psycopg2.connect(url); conn.autocommit = True; cur = conn.cursor()
start = time.monotonic()
for i in range(int(rate * seconds)):
    delay = start + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    cur.execute("INSERT INTO documents (id, title, body) VALUES (%s, 'steady', 'one row')",
                (first + i,))
print(time.monotonic() - start)
"""


@dataclass
class CdcFigures:
    rows: int
    floor_seconds: float
    journal_seconds: float
    rate: float
    latency_documents: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    big_tx_rows: int = 0
    big_tx_seconds: float = 0.0
    big_tx_documents: int = 0
    rss_before_mb: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def floor_rows_per_s(self) -> float:
        return self.rows / self.floor_seconds

    @property
    def journal_rows_per_s(self) -> float:
        return self.rows / self.journal_seconds

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "floor_rows_per_s": round(self.floor_rows_per_s),
            "journal_rows_per_s": round(self.journal_rows_per_s),
            "ratio": round(self.journal_rows_per_s / self.floor_rows_per_s, 3),
            "latency_rate_tx_per_s": self.rate,
            "latency_documents": self.latency_documents,
            "latency_p50_ms": round(self.latency_p50_ms, 3),
            "latency_p99_ms": round(self.latency_p99_ms, 3),
            "latency_max_ms": round(self.latency_max_ms, 3),
            "big_tx_rows": self.big_tx_rows,
            "big_tx_rows_per_s": round(self.big_tx_rows / self.big_tx_seconds)
            if self.big_tx_seconds
            else 0,
            "big_tx_documents": self.big_tx_documents,
            "rss_before_big_tx_mb": round(self.rss_before_mb),
            "peak_rss_mb": round(self.peak_rss_mb),
        }


def run_cdc_bench(
    platform_url: str,
    catalog: Catalog,
    rows: int,
    rate: float,
    seconds: float,
    big_tx_rows: int = 0,
    say=print,
) -> CdcFigures:
    # First, while this process's peak RSS is still the set-up's; in a database of its own,
    # so the phases below run on empty journals as they always have.
    big = _big_transaction(catalog, platform_url, big_tx_rows, say) if big_tx_rows else None
    capture, catalog = scratch_capture(catalog)
    publication = capture.connector.config["advanced"]["publicationName"]
    floor_slot = f"floor_{uuid.uuid4().hex[:8]}"
    with scratch_database(platform_url, "cdc") as url:
        _sql(url, BENCH_TABLE_DDL)

        def new_runner() -> CaptureRunner:
            return CaptureRunner(capture, catalog, url, url)

        runner = new_runner()
        runner.drain()  # slot, publication, empty backfill: set-up is not measured
        _sql(url, f"SELECT pg_create_logical_replication_slot('{floor_slot}', 'pgoutput')")

        say(f"writing {rows} rows in transactions of 10,000...")
        for first in range(0, rows, 10_000):
            _sql(
                url,
                "INSERT INTO documents (id, title, body) SELECT g, 'bulk ' || g, "
                "repeat('lorem ipsum ', 10) || g FROM generate_series(%s, %s) g",
                (first + 1, min(rows, first + 10_000)),
            )
        end_lsn = _sql(url, "SELECT pg_current_wal_lsn()::text")[0][0]

        floor = _time(lambda: _recvlogical(url, floor_slot, publication, end_lsn))
        say(f"floor: pg_recvlogical decoded {rows} rows in {floor:.2f} s")
        journal_s = _time(runner.drain)
        say(f"ours: {rows} rows into durable journals in {journal_s:.2f} s")

        # Steady state: the bulk phase's vacuum and checkpoint are not the latency phase's.
        _settle(url)
        latency = _steady_latency(new_runner, url, rate, seconds, first_id=rows + 1, say=say)
    return CdcFigures(
        rows,
        floor,
        journal_s,
        rate,
        latency.documents,
        latency.p50_ms or 0.0,
        latency.p99_ms or 0.0,
        latency.max_ms or 0.0,
        *(big or ()),
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _big_transaction(
    catalog: Catalog, platform_url: str, rows: int, say
) -> tuple[int, float, int, float, float]:
    """One source transaction of `rows` inserts, drained: (rows, seconds, documents
    journaled, peak RSS before, peak RSS after)."""
    capture, catalog = scratch_capture(catalog)
    with scratch_database(platform_url, "cdc_big") as url:
        _sql(url, BENCH_TABLE_DDL)
        runner = CaptureRunner(capture, catalog, url, url)
        runner.drain()
        say(f"writing one transaction of {rows:,} rows...")
        _sql(
            url,
            "INSERT INTO documents (id, title, body) SELECT g, 'big ' || g, "
            "repeat('lorem ipsum ', 10) || g FROM generate_series(1, %s) g",
            (rows,),
        )
        before = _peak_rss_mb()
        seconds = _time(runner.drain)
        (documents,) = _sql(url, "SELECT count(*) FROM flow.journal")[0]
    say(f"one transaction of {rows:,} rows: {documents:,} documents in {seconds:.2f} s")
    return rows, seconds, documents, before, _peak_rss_mb()


def _steady_latency(new_runner, url: str, rate: float, seconds: float, first_id: int, say):
    runner = new_runner()
    stop = threading.Event()
    serving = threading.Thread(target=runner.serve, args=(stop,), daemon=True)
    serving.start()
    if not runner.streaming.wait(timeout=60):  # start-up is not measured
        raise RuntimeError("the capture did not start streaming within 60 s")
    new_runner().drain()  # waits until serve has decoded past the set-up's WAL
    offsets_before = _sql(url, 'SELECT coalesce(max("offset"), -1) FROM flow.journal')[0][0]
    say(f"latency: {rate:.0f} single-row transactions/s for {seconds:.0f} s with serve running")
    subprocess.run(
        [sys.executable, "-c", RATE_WRITER, str(rate), str(seconds), str(first_id)],
        env={**os.environ, "SOPHIA_BENCH_URL": url},
        check=True,
        capture_output=True,
    )
    new_runner().drain()  # another runner of the capture: waits until serve has it all
    stop.set()
    serving.join(timeout=60)
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute('SELECT max("offset") FROM flow.journal')
            last = cur.fetchone()[0]
            collection = runner.bindings[0].collection.name
            return latency_figures(cur, collection, offsets=(offsets_before + 1, last))
    finally:
        conn.close()


def _settle(url: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM (ANALYZE) flow.journal, flow.reduced, public.documents")
        cur.execute("CHECKPOINT")
    conn.close()


def _recvlogical(url: str, slot: str, publication: str, end_lsn: str) -> None:
    from sophia_assets.postgres.embedded_server import _binary

    address, password_env = without_password(url)
    subprocess.run(
        [
            str(_binary("pg_recvlogical")),
            "-d",
            address,
            "--slot",
            slot,
            "--start",
            "--no-loop",
            "-o",
            "proto_version=1",
            "-o",
            f"publication_names={publication}",
            "--endpos",
            end_lsn,
            "-f",
            os.devnull,
        ],
        env={**os.environ, **password_env},
        check=True,
        capture_output=True,
    )


def _time(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _sql(url: str, statement: str, params: tuple | None = None) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def print_figures(figures: CdcFigures, as_json: bool) -> None:
    data = figures.as_dict()
    print(f"pg_recvlogical to /dev/null (floor): {data['floor_rows_per_s']:>9,} rows/s")
    print(f"capture into durable journals:       {data['journal_rows_per_s']:>9,} rows/s")
    print(f"ratio (ours / floor):                {data['ratio']:>9.3f}")
    print(
        f"latency at {figures.rate:.0f} tx/s over {figures.latency_documents} changes: "
        f"p50 {data['latency_p50_ms']} ms, p99 {data['latency_p99_ms']} ms, "
        f"max {data['latency_max_ms']} ms"
    )
    if figures.big_tx_rows:
        print(
            f"one transaction of {figures.big_tx_rows:,} rows: "
            f"{data['big_tx_documents']:,} documents, {data['big_tx_rows_per_s']:,} rows/s, "
            f"peak RSS {data['peak_rss_mb']} MB (before it: {data['rss_before_big_tx_mb']} MB)"
        )
    if as_json:
        print(json.dumps(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cdc", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="bulk rows (100000)")
    parser.add_argument("--rate", type=float, default=1000, help="steady tx/s (1000)")
    parser.add_argument("--seconds", type=float, default=10, help="steady phase length (10)")
    parser.add_argument(
        "--big-tx-rows",
        type=int,
        default=1_000_000,
        help="rows of the one large transaction (1000000; 0 skips it)",
    )
    add_json_flag(parser)
    args = parser.parse_args(argv)
    from sophia_assets.catalog import load_catalog
    from sophia_assets.home import flow_specs_dir
    from sophia_assets.postgres.embedded_server import postgres_url

    figures = run_cdc_bench(
        postgres_url(),
        load_catalog(flow_specs_dir()),
        args.rows,
        args.rate,
        args.seconds,
        args.big_tx_rows,
        say=say,
    )
    print_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
