"""`sophia demo seed` throughput against the protocol floor: COPY of the same rows into an
identical table on the same server.

    uv run python bench/seed.py [--rows 10000]
"""

from __future__ import annotations

import argparse
import io
import time

import psycopg2

from sophia_assets.demo.corpus import load_corpus
from sophia_assets.demo.seed import seed_documents
from sophia_assets.home import sophia_home
from sophia_assets.postgres.embedded_server import postgres_url


def _copy_baseline(url: str, rows: list[tuple[int, str, str]]) -> float:
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(_escape(str(v)) for v in row) + "\n")
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_copy_documents")
            cur.execute(
                "CREATE TABLE bench_copy_documents (id bigint PRIMARY KEY, title text "
                "NOT NULL, body text NOT NULL, updated_at timestamptz NOT NULL "
                "DEFAULT now())"
            )
        started = time.perf_counter()
        with conn, conn.cursor() as cur:
            buffer.seek(0)
            cur.copy_from(buffer, "bench_copy_documents", columns=("id", "title", "body"))
        elapsed = time.perf_counter() - started
        with conn, conn.cursor() as cur:
            cur.execute("DROP TABLE bench_copy_documents")
        return elapsed
    finally:
        conn.close()


def _escape(value: str) -> str:
    for raw, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        value = value.replace(raw, escaped)
    return value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    url = postgres_url()
    corpus = load_corpus(sophia_home() / "cache")
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS public.documents")
    conn.close()

    started = time.perf_counter()
    seed_documents(url, corpus, args.rows)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    seed_documents(url, corpus, args.rows)
    warm = time.perf_counter() - started
    rows = [(i + 1, d.title, d.body) for i, d in enumerate(corpus[: args.rows])]
    floor = _copy_baseline(url, rows)

    print(f"seed into empty table   {args.rows / cold:9.0f} rows/s  ({cold:.2f} s)")
    print(f"seed again (no changes) {args.rows / warm:9.0f} rows/s  ({warm:.2f} s)")
    print(f"COPY baseline           {args.rows / floor:9.0f} rows/s  ({floor:.2f} s)")
    print(f"seed / COPY time: {cold / floor:.2f}x")


if __name__ == "__main__":
    main()
