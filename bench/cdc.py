"""`uv run python -m bench.cdc`: the capture against the protocol floor, in one run.

- floor: `pg_recvlogical` decoding the same changes (pgoutput, same publication) to /dev/null;
- ours: a drain of the same changes into durable journals (documents, reduced view and
  checkpoint committed together);
- latency: source commit -> journal commit at a steady rate of single-row transactions, with
  `serve` running;
- one large transaction (1,000,000 rows by default): the drain's time, the documents
  journaled (exactly once: one per row) and the process's peak RSS, which the batch limits
  bound (the floor's pg_recvlogical holds one message at a time);
- metrics on against off (`--metrics both`, the default): the bulk drain and the latency
  phase again with `sophia flow serve`'s metrics observed and served, and scraped every
  second as Prometheus would, side by side with the runs without.

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
    metered_journal_seconds: float = 0.0  # the same bulk drain with metrics on
    metered_latency_p50_ms: float = 0.0
    metered_latency_p99_ms: float = 0.0
    scrapes: int = 0

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
            **self._metered(),
        }

    def _metered(self) -> dict:
        if not self.metered_journal_seconds:
            return {}
        rows_per_s = self.rows / self.metered_journal_seconds
        return {
            "metrics_on_journal_rows_per_s": round(rows_per_s),
            "metrics_on_ratio_to_off": round(rows_per_s / self.journal_rows_per_s, 3),
            "metrics_on_latency_p50_ms": round(self.metered_latency_p50_ms, 3),
            "metrics_on_latency_p99_ms": round(self.metered_latency_p99_ms, 3),
            "metrics_scrapes": self.scrapes,
        }


def run_cdc_bench(
    platform_url: str,
    catalog: Catalog,
    rows: int,
    rate: float,
    seconds: float,
    big_tx_rows: int = 0,
    say=print,
    metrics: bool = True,
) -> CdcFigures:
    # First, while this process's peak RSS is still the set-up's; in a database of its own,
    # so the phases below run on empty journals as they always have.
    big = _big_transaction(catalog, platform_url, big_tx_rows, say) if big_tx_rows else None
    capture, catalog = scratch_capture(catalog)
    publication = capture.connector.config["advanced"]["publicationName"]
    floor_slot = f"floor_{uuid.uuid4().hex[:8]}"
    with scratch_database(platform_url, "cdc") as url:
        _sql(url, BENCH_TABLE_DDL)

        def new_runner(meter: Meter | None = None) -> CaptureRunner:
            runner = CaptureRunner(capture, catalog, url, url)
            return meter.watch(runner) if meter else runner

        runner = new_runner()
        runner.drain()  # slot, publication, empty backfill: set-up is not measured
        _sql(url, f"SELECT pg_create_logical_replication_slot('{floor_slot}', 'pgoutput')")

        say(f"writing {rows} rows in transactions of 10,000...")
        _write_bulk(url, 1, rows)
        end_lsn = _sql(url, "SELECT pg_current_wal_lsn()::text")[0][0]

        floor = _time(lambda: _recvlogical(url, floor_slot, publication, end_lsn))
        say(f"floor: pg_recvlogical decoded {rows} rows in {floor:.2f} s")
        journal_s = _time(runner.drain)
        say(f"ours: {rows} rows into durable journals in {journal_s:.2f} s")

        # Steady state: the bulk phase's vacuum and checkpoint are not the latency phase's.
        _settle(url)
        latency = _steady_latency(new_runner, url, rate, seconds, first_id=rows + 1, say=say)
        metered = _metered_phases(new_runner, url, rows, rate, seconds, say) if metrics else None
    figures = CdcFigures(
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
    if metered:
        figures.metered_journal_seconds, metered_latency, figures.scrapes = metered
        figures.metered_latency_p50_ms = metered_latency.p50_ms or 0.0
        figures.metered_latency_p99_ms = metered_latency.p99_ms or 0.0
    return figures


class Meter:
    """`sophia flow serve`'s capture metrics, served on a free port and scraped each
    `interval_s` by a thread, as Prometheus would."""

    def __init__(self, journal_url: str, interval_s: float = 1.0):
        from prometheus_client import CollectorRegistry

        from sophia_assets.metrics.exposition import Address, serve_metrics
        from sophia_assets.metrics.serve import ServeMetrics

        registry = CollectorRegistry()
        self.metrics = ServeMetrics(registry, journal_url)
        self.address = serve_metrics(registry, Address("127.0.0.1", 0))
        self.interval_s = interval_s
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scrape, daemon=True)
        self._thread.start()

    def watch(self, runner: CaptureRunner) -> CaptureRunner:
        from sophia_assets.cli.serve_metrics import capture_observer, watch_capture

        runner.on_batch = capture_observer(self.metrics, runner.on_batch)
        watch_capture(self.metrics, runner)
        return runner

    def _scrape(self) -> None:
        import urllib.request

        while not self._stop.wait(self.interval_s):
            with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=10) as page:
                page.read()
            self.scrapes += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _metered_phases(new_runner, url: str, rows: int, rate: float, seconds: float, say):
    """The bulk drain and the latency phase again, with metrics on: (drain seconds,
    latency figures, scrapes). Fresh rows of the same shape, so the journal is twice as
    long as in the phases without: if anything that favours off."""
    meter = Meter(url)
    try:
        say(f"metrics on: writing {rows} more rows...")
        _write_bulk(url, 2 * rows + int(rate * seconds) + 1, rows)
        journal_s = _time(new_runner(meter).drain)
        say(f"metrics on: {rows} rows into durable journals in {journal_s:.2f} s")
        _settle(url)
        first_id = 3 * rows + 2 * int(rate * seconds) + 2
        latency = _steady_latency(
            lambda: new_runner(meter), url, rate, seconds, first_id=first_id, say=say
        )
    finally:
        meter.close()
    return journal_s, latency, meter.scrapes


def _write_bulk(url: str, first_id: int, rows: int) -> None:
    for first in range(first_id, first_id + rows, 10_000):
        _sql(
            url,
            "INSERT INTO documents (id, title, body) SELECT g, 'bulk ' || g, "
            "repeat('lorem ipsum ', 10) || g FROM generate_series(%s, %s) g",
            (first, min(first_id + rows - 1, first + 9_999)),
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
    if figures.metered_journal_seconds:
        print(
            f"metrics on (scraped every second, {data['metrics_scrapes']} scrapes): "
            f"{data['metrics_on_journal_rows_per_s']:,} rows/s against "
            f"{data['journal_rows_per_s']:,} off (ratio {data['metrics_on_ratio_to_off']}); "
            f"latency p50 {data['metrics_on_latency_p50_ms']} ms, "
            f"p99 {data['metrics_on_latency_p99_ms']} ms against {data['latency_p99_ms']} off"
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
    parser.add_argument(
        "--metrics",
        choices=["both", "off"],
        default="both",
        help="both: also run the bulk and latency phases with serve's metrics on (both)",
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
        metrics=args.metrics == "both",
    )
    print_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
