"""`uv run python -m bench.live`: commit-to-searchable on the live path, measured from outside.

On a scratch database of the platform's Postgres, `sophia flow serve` runs as its own process
(capture, embedding derivation and pgvector materialization, continuously). For each rate R,
single-row transactions of demo documents are committed on an open-loop schedule (a late
commit does not delay the next) for S seconds, and a poller asks the index (and the capture's
journal) every 5 milliseconds for the new ids: the time from a commit's return to the
first poll that sees the row's vector is its commit-to-searchable latency.

Then updates and deletes of the first rate's rows at that rate, timed the same way until the
index holds the new title, or no longer holds the row.

Baseline, measured in the same run: the capture's latency alone (commit to journal, polled
the same way) plus the time to embed one document alone (median, the same embedder in this
process, model loaded). Then a burst: N documents committed at once, and the time until all
are searchable against raw `SentenceTransformer.encode` of the same texts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import yaml

from bench.report import add_json_flag, say
from bench.scratch import scratch_database

INDEX_TABLE = 'vectors."sophia-ai-vectors"'
POLL_S = 0.005  # resolution of every figure; lighter than 2 ms on two cores
FIRST_ID = 1_000_000  # above any seeded id
SHORT_CHARS = 400


@dataclass
class RateFigures:
    rate_per_s: float
    documents: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    capture_p50_ms: float
    missing: int  # committed but never seen within the drain timeout


@dataclass
class LiveFigures:
    embed_one_ms: float
    rates: list[RateFigures] = field(default_factory=list)
    updates: RateFigures | None = None
    deletes: RateFigures | None = None
    burst_documents: int = 0
    burst_seconds: float = 0.0
    burst_raw_encode_seconds: float = 0.0

    @property
    def floor_p50_ms(self) -> float:
        return self.rates[0].capture_p50_ms + self.embed_one_ms if self.rates else 0.0

    def as_dict(self) -> dict:
        first = self.rates[0] if self.rates else None
        under = [r.rate_per_s for r in self.rates if r.p99_ms <= 100 and not r.missing]
        return {
            "rate_per_s": first.rate_per_s if first else None,
            "p50_ms": first.p50_ms if first else None,
            "p99_ms": first.p99_ms if first else None,
            "max_ms": first.max_ms if first else None,
            "floor_p50_ms": round(self.floor_p50_ms, 2),
            "max_rate_p99_under_100ms": max(under, default=0.0),
            "embed_one_ms": round(self.embed_one_ms, 2),
            "rates": [r.__dict__ for r in self.rates],
            **{
                f"{kind}_{name}": getattr(figures, name)
                for kind, figures in (("update", self.updates), ("delete", self.deletes))
                if figures
                for name in ("p50_ms", "p99_ms", "max_ms")
            },
            "burst_documents": self.burst_documents,
            "burst_seconds": round(self.burst_seconds, 3),
            "burst_raw_encode_seconds": round(self.burst_raw_encode_seconds, 3),
            "burst_ratio_to_raw": (
                round(self.burst_seconds / self.burst_raw_encode_seconds, 3)
                if self.burst_raw_encode_seconds
                else None
            ),
        }


class Watcher:
    """Polls the index and the journal for the ids committed so far; records when each
    first appears."""

    def __init__(self, url: str):
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        self.committed: dict[int, float] = {}
        self.journaled: dict[int, float] = {}
        self.searchable: dict[int, float] = {}
        self.lock = threading.Lock()

    def commit(self, doc_id: int, at: float) -> None:
        with self.lock:
            self.committed[doc_id] = at

    def poll_once(self) -> None:
        with self.lock:
            waiting = [i for i in self.committed if i not in self.searchable]
            unjournaled = [i for i in self.committed if i not in self.journaled]
        if not waiting:
            return
        try:
            seen, journaled = self._seen(waiting, unjournaled)
        except psycopg2.errors.UndefinedTable:  # serve has not created the index yet
            return
        now = time.perf_counter()
        with self.lock:
            for i in seen:
                self.searchable.setdefault(i, now)
            for i in journaled:
                self.journaled.setdefault(i, now)

    def _seen(self, waiting: list[int], unjournaled: list[int]) -> tuple[list[int], list[int]]:
        with self.conn.cursor() as cur:
            cur.execute(
                f"SELECT split_part(id, ':', 1)::bigint FROM {INDEX_TABLE} WHERE id = ANY(%s)",
                ([f"{i}:0" for i in waiting],),
            )
            seen = [row[0] for row in cur.fetchall()]
            if unjournaled:
                cur.execute(
                    # the reduced view commits with the journal and is keyed: no scan
                    "SELECT (key->>0)::bigint FROM flow.reduced WHERE collection = %s "
                    "AND key = ANY(%s::jsonb[])",
                    ("sophia/postgresql_cdc", [f"[{i}]" for i in unjournaled]),
                )
                journaled = [row[0] for row in cur.fetchall()]
            else:
                journaled = []
        return seen, journaled

    def wait_all(self, timeout_s: float) -> None:
        """Until every committed id is seen or `timeout_s` passes."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            self.poll_once()
            with self.lock:
                if len(self.searchable) >= len(self.committed):
                    return
            time.sleep(POLL_S)


class UpdateWatcher(Watcher):
    """Sees a row once its vector carries the title `_updated_title` gave it."""

    def _seen(self, waiting: list[int], unjournaled: list[int]) -> tuple[list[int], list[int]]:
        with self.conn.cursor() as cur:
            cur.execute(
                f"SELECT split_part(id, ':', 1)::bigint FROM {INDEX_TABLE} WHERE id = ANY(%s) "
                "AND metadata->>'title' = 'Updated ' || split_part(id, ':', 1)",
                ([f"{i}:0" for i in waiting],),
            )
            return [row[0] for row in cur.fetchall()], []


class DeleteWatcher(Watcher):
    """Sees a row once the index no longer holds its vector."""

    def _seen(self, waiting: list[int], unjournaled: list[int]) -> tuple[list[int], list[int]]:
        with self.conn.cursor() as cur:
            cur.execute(
                f"SELECT split_part(id, ':', 1)::bigint FROM {INDEX_TABLE} WHERE id = ANY(%s)",
                ([f"{i}:0" for i in waiting],),
            )
            present = {row[0] for row in cur.fetchall()}
        return [i for i in waiting if i not in present], []


def _catalog_copy(directory: Path) -> Path:
    """The shipped catalog with a slot and publication of the benchmark's own."""
    from sophia_assets.home import flow_specs_dir

    root = directory / "flow_specs"
    shutil.copytree(flow_specs_dir(), root)
    path = root / "source-postgres.flow.yaml"
    doc = yaml.safe_load(path.read_text())
    tag = uuid.uuid4().hex[:8]
    for capture in doc["captures"].values():
        advanced = capture["endpoint"]["connector"]["config"]["advanced"]
        advanced["slotName"] = f"bench_live_{tag}"
        advanced["publicationName"] = f"bench_live_{tag}"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def _serve(url: str, specs: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SOPHIA_POSTGRES_URL": url,
        "SOPHIA_FLOW_SPECS": str(specs),
        "SOPHIA_PINECONE_HOST": "",  # the live path on pgvector, whatever the shell says
    }
    sophia = Path(sys.executable).parent / "sophia"
    handle = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(sophia), "flow", "serve"], env=env, stdout=handle, stderr=subprocess.STDOUT
    )


def _insert(cur, doc_id: int, title: str, body: str) -> None:
    cur.execute(
        "INSERT INTO public.documents (id, title, body) VALUES (%s, %s, %s)", (doc_id, title, body)
    )


def _steady(url: str, corpus, rate: float, seconds: float, first_id: int) -> RateFigures:
    def insert(cur, n: int) -> None:
        doc = corpus[n % len(corpus)]
        _insert(cur, first_id + n, doc.title, doc.body)

    count = max(1, int(rate * seconds))
    return _timed(url, Watcher(url), insert, rate, count, first_id)


def _changed(url: str, kind: str, rate: float, count: int, first_id: int) -> RateFigures:
    """Updates (a new title) or deletes of rows first_id.. at `rate`, timed to the index."""

    def update(cur, n: int) -> None:
        cur.execute(
            "UPDATE public.documents SET title = %s WHERE id = %s",
            (f"Updated {first_id + n}", first_id + n),
        )

    def delete(cur, n: int) -> None:
        cur.execute("DELETE FROM public.documents WHERE id = %s", (first_id + n,))

    if kind == "update":
        return _timed(url, UpdateWatcher(url), update, rate, count, first_id)
    return _timed(url, DeleteWatcher(url), delete, rate, count, first_id)


def _timed(url: str, watcher: Watcher, write, rate: float, count: int, first_id: int):
    """`write(cur, n)` for n in 0..count on an open-loop schedule at `rate`, each a
    transaction of its own, while a poller times when `watcher` sees row first_id + n."""
    writer = psycopg2.connect(url)
    writer.autocommit = True
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            watcher.poll_once()
            time.sleep(POLL_S)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    start = time.perf_counter()
    try:
        with writer.cursor() as cur:
            for n in range(count):
                due = start + n / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                write(cur, n)
                watcher.commit(first_id + n, time.perf_counter())
        stop.set()
        poller.join()
        watcher.wait_all(timeout_s=60 + count)
    finally:
        stop.set()
        writer.close()
        watcher.conn.close()
    latencies = sorted(
        (watcher.searchable[i] - at) * 1000
        for i, at in watcher.committed.items()
        if i in watcher.searchable
    )
    capture = sorted(
        (watcher.journaled[i] - at) * 1000
        for i, at in watcher.committed.items()
        if i in watcher.journaled
    )
    return RateFigures(
        rate_per_s=rate,
        documents=len(latencies),
        p50_ms=round(_percentile(latencies, 0.50), 2),
        p95_ms=round(_percentile(latencies, 0.95), 2),
        p99_ms=round(_percentile(latencies, 0.99), 2),
        max_ms=round(latencies[-1], 2) if latencies else 0.0,
        capture_p50_ms=round(_percentile(capture, 0.50), 2),
        missing=count - len(latencies),
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


def _burst(url: str, corpus, documents: int, first_id: int) -> float:
    """Seconds from the commit of `documents` rows (one transaction) until all are
    searchable."""
    watcher = Watcher(url)
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            for n in range(documents):
                doc = corpus[n % len(corpus)]
                _insert(cur, first_id + n, doc.title, doc.body)
        committed = time.perf_counter()
        for n in range(documents):
            watcher.commit(first_id + n, committed)
        watcher.wait_all(timeout_s=600)
        return max(watcher.searchable.values()) - committed
    finally:
        conn.close()
        watcher.conn.close()


def _embed_one_ms(embedder, corpus, samples: int = 20) -> float:
    """The median time to embed one document alone, model loaded."""
    times = []
    for n in range(samples):
        doc = corpus[n % len(corpus)]
        started = time.perf_counter()
        embedder.embed_documents([_text(doc)])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _text(doc) -> str:
    """What the derivation embeds of a demo row (its text rule: title, blank line, body)."""
    return f"{doc.title}\n\n{doc.body}"


def short_corpus(corpus, chars: int = SHORT_CHARS) -> list:
    """The corpus with each body cut to its first `chars` characters (at a word): rows of
    one chunk, like most application rows, instead of whole docstrings of up to 15 chunks."""
    from sophia_assets.demo.corpus import CorpusDocument

    return [
        CorpusDocument(
            d.title, d.body if len(d.body) <= chars else d.body[:chars].rsplit(" ", 1)[0]
        )
        for d in corpus
    ]


def _raw_encode_seconds(corpus, documents: int) -> float:
    """`SentenceTransformer.encode` of the burst's texts (as our embedder chunks them), the
    model loaded beforehand: the raw library's time for the same work."""
    from sentence_transformers import SentenceTransformer

    from resources.embedder import EmbedderResource
    from sophia_assets.embedding.embedder import default_model_path

    chunker = EmbedderResource().load()
    texts = [
        chunk for n in range(documents) for chunk in chunker.chunks(_text(corpus[n % len(corpus)]))
    ]
    model = SentenceTransformer(str(default_model_path()), device="cpu")
    started = time.perf_counter()
    model.encode(texts)
    return time.perf_counter() - started


def run_live_bench(rates: list[float], seconds: float, burst: int, text: str) -> LiveFigures:
    from resources.embedder import EmbedderResource
    from sophia_assets.demo.corpus import load_corpus
    from sophia_assets.demo.seed import DOCUMENTS_DDL
    from sophia_assets.home import cache_dir
    from sophia_assets.postgres.embedded_server import postgres_url

    corpus = load_corpus(cache_dir())
    if text == "short":
        corpus = short_corpus(corpus)
    embedder = EmbedderResource().load()
    figures = LiveFigures(embed_one_ms=_embed_one_ms(embedder, corpus))
    say(f"one document embedded alone: {figures.embed_one_ms:.1f} ms (median)")
    with tempfile.TemporaryDirectory() as tmp, scratch_database(postgres_url(), "live") as url:
        _sql(url, DOCUMENTS_DDL)
        specs = _catalog_copy(Path(tmp))
        log = Path(tmp) / "serve.log"
        serve = _serve(url, specs, log)
        try:
            say("waiting for serve to take the first document end to end")
            warm = _steady(url, corpus, 1.0, 1.0, FIRST_ID - 10)
            if warm.missing:
                raise RuntimeError(f"serve did not index a document:\n{log.read_text()[-3000:]}")
            next_id = FIRST_ID
            for rate in rates:
                say(f"{rate:g} documents/s for {seconds:g} s")
                figures.rates.append(_steady(url, corpus, rate, seconds, next_id))
                next_id += int(rate * seconds) + 1
                say(f"  {figures.rates[-1]}")
            if rates:  # the first rate's rows, updated and then deleted at that rate
                count = figures.rates[0].documents
                for kind in ("update", "delete"):
                    say(f"{count} {kind}s at {rates[0]:g}/s")
                    setattr(figures, f"{kind}s", _changed(url, kind, rates[0], count, FIRST_ID))
            if burst:
                say(f"burst of {burst} documents in one transaction")
                figures.burst_documents = burst
                figures.burst_seconds = _burst(url, corpus, burst, next_id)
        finally:
            serve.terminate()
            serve.wait(timeout=60)
    if burst:
        say("raw SentenceTransformer.encode of the burst's texts")
        figures.burst_raw_encode_seconds = _raw_encode_seconds(corpus, burst)
    return figures


def _sql(url: str, statement: str) -> None:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def print_figures(figures: LiveFigures, as_json: bool) -> None:
    print(f"one document embedded alone: {figures.embed_one_ms:.1f} ms")
    for r in figures.rates:
        print(
            f"{r.rate_per_s:g} documents/s: {r.documents} documents, commit to searchable "
            f"p50 {r.p50_ms:.1f} ms, p95 {r.p95_ms:.1f}, p99 {r.p99_ms:.1f}, max {r.max_ms:.1f}"
            f" (capture alone p50 {r.capture_p50_ms:.1f} ms){', missing ' if r.missing else ''}"
            f"{r.missing or ''}"
        )
    for kind, r in (("updates", figures.updates), ("deletes", figures.deletes)):
        if r:
            print(
                f"{kind} at {r.rate_per_s:g}/s: {r.documents} rows, commit to index p50 "
                f"{r.p50_ms:.1f} ms, p95 {r.p95_ms:.1f}, p99 {r.p99_ms:.1f}, max {r.max_ms:.1f}"
                f"{', missing ' if r.missing else ''}{r.missing or ''}"
            )
    if figures.rates and figures.floor_p50_ms:
        first = figures.rates[0]
        print(
            f"floor p50 {figures.floor_p50_ms:.1f} ms (capture p50 + one embedding); p50 at "
            f"{first.rate_per_s:g}/s is {first.p50_ms / figures.floor_p50_ms:.2f}x the floor"
        )
    if figures.burst_documents:
        print(
            f"burst of {figures.burst_documents}: all searchable in {figures.burst_seconds:.2f} s; "
            f"raw encode {figures.burst_raw_encode_seconds:.2f} s "
            f"({figures.burst_seconds / figures.burst_raw_encode_seconds:.2f}x)"
        )
    if as_json:
        print(json.dumps(figures.as_dict()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__)
    parser.add_argument("--rates", default="5,10,20", help="documents/s, comma-separated (5,10,20)")
    parser.add_argument("--seconds", type=float, default=20, help="per rate (20)")
    parser.add_argument("--burst", type=int, default=1000, help="burst documents (1000; 0 skips)")
    parser.add_argument(
        "--text",
        choices=["short", "full"],
        default="short",
        help=f"demo rows cut to {SHORT_CHARS} characters (one chunk), or whole (up to 15 chunks)",
    )
    add_json_flag(parser)
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    print_figures(run_live_bench(rates, args.seconds, args.burst, args.text), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
