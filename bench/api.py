"""`python -m bench.api`: the search API under an open-loop load.

Starts `sophia api serve` on a scratch pgvector index of 10,000 demo documents (one vector per
document, from its title and first paragraph, as bench.search builds it), then sends searches
of held-out documents' first lines at fixed arrival rates from an async HTTP client. Arrivals
follow a Poisson schedule that does not wait for answers (open loop), and each latency runs
from the request's scheduled time, so queueing anywhere (client, server, database) counts.

Reports p50/p95/p99 at 10, 50 and 100 requests/s, then tries fractions of the floor rate and
reports the highest rate whose p99 stays under 200 ms. The floor, measured in the same run, is
the service's cores divided by the CPU time of one query embedding (this process's CPU time
over single-query embeddings) plus one index query (the Postgres backend's CPU time, read
from /proc through psutil). Client, service and Postgres share this machine's cores."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.http_load import HttpLoadClient
from bench.report import add_json_flag, say
from bench.scratch import scratch_database
from bench.search import _first_line

KEY = "bench-api-key"
FIXED_RATES = (10, 50, 100)
FLOOR_FRACTIONS = (0.5, 0.7, 0.85, 1.0, 1.2)
TARGET_P99_MS = 200.0


@dataclass
class RateFigures:
    rate: float
    sent: int
    errors: int
    latencies_ms: list[float] = field(default_factory=list)
    service_cpu_ms: float = 0.0  # the service process's CPU time per request sent
    client_cpu_ms: float = 0.0  # this process's (the load generator's)

    def percentiles(self) -> dict[str, float | None]:
        if len(self.latencies_ms) < 2:
            return {"p50": None, "p95": None, "p99": None}
        cuts = statistics.quantiles(self.latencies_ms, n=100, method="inclusive")
        return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "p99": round(cuts[98], 2)}

    def under_target(self) -> bool:
        p99 = self.percentiles()["p99"]
        return self.errors == 0 and p99 is not None and p99 < TARGET_P99_MS


def build_index(url: str, embedder, corpus, documents: int, say) -> None:
    import psycopg2

    from sophia_assets.vectors import VectorRecord
    from sophia_assets.vectors.pgvector import PgVectorIndex

    index = PgVectorIndex(lambda: psycopg2.connect(url))
    say(f"indexing {documents} documents...")
    vectors = embedder.embed([_first_line(d.title, d.body) for d in corpus[:documents]])
    records = [
        VectorRecord(f"{i + 1}:0", v, {"source_key": i + 1, "chunk": 0, "title": corpus[i].title})
        for i, v in enumerate(vectors)
    ]
    for start in range(0, len(records), 2000):
        index.apply(records[start : start + 2000], [], start + 2000)


def measure_floor(url: str, embedder, questions: list[str], cores: float) -> dict:
    """CPU seconds of one query embedding and of one index query, and the rate they allow."""
    import psutil
    import psycopg2

    from sophia_assets.vectors.pgvector import PgVectorIndex

    sample = questions[:200]
    for q in sample[:20]:
        embedder.embed([q])
    started = time.process_time()
    vectors = [embedder.embed([q])[0] for q in sample]
    embed_cpu = (time.process_time() - started) / len(sample)
    index = PgVectorIndex(lambda: psycopg2.connect(url))
    with index.session() as session:
        with session.conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = psutil.Process(cur.fetchone()[0])
        session.conn.commit()
        for v in vectors[:20]:
            session.query(v, 40)
        before = backend.cpu_times()
        for v in vectors:
            session.query(v, 40)  # top_k 10 asks the index for 4 chunks per document
        after = backend.cpu_times()
    query_cpu = (after.user + after.system - before.user - before.system) / len(vectors)
    return {
        "embed_cpu_ms": round(embed_cpu * 1000, 3),
        "query_cpu_ms": round(query_cpu * 1000, 3),
        "floor_rate": round(cores / (embed_cpu + query_cpu), 1),
    }


async def drive(base_url: str, rate: float, seconds: float, questions: list[str], seed: int):
    """Open loop: requests leave on a Poisson schedule whether or not earlier ones returned."""
    rng = random.Random(seed)
    figures = RateFigures(rate, 0, 0)
    client = HttpLoadClient(base_url, {"Authorization": f"Bearer {KEY}"})
    requests = [
        client.request_bytes("/v1/search", json.dumps({"text": q, "top_k": 10}).encode())
        for q in questions
    ]

    async def one(request: bytes, due: float) -> None:
        try:
            ok = await asyncio.wait_for(client.send(request), timeout=30) == 200
        except (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            ok = False
        if ok:
            figures.latencies_ms.append((time.perf_counter() - due) * 1000)
        else:
            figures.errors += 1

    tasks = []
    start = time.perf_counter() + 0.05
    due = start
    while due < start + seconds:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(requests[figures.sent % len(requests)], due)))
        figures.sent += 1
        due += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    client.close()
    return figures


def start_service(url: str, port: int, max_batch: int, workers: int) -> subprocess.Popen:
    sophia = Path(sys.executable).parent / "sophia"
    env = {**os.environ, "SOPHIA_POSTGRES_URL": url, "SOPHIA_API_KEYS": KEY}
    return subprocess.Popen(
        [str(sophia), "api", "serve", "--port", str(port), "--rate", "100000"]
        + ["--burst", "100000", "--max-batch", str(max_batch), "--model-workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(base_url: str, process: subprocess.Popen, deadline_s: float = 300) -> None:
    import httpx

    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError("sophia api serve exited before it was ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)  # polling interval
    raise TimeoutError(f"the service was not ready within {deadline_s} s")


def run_api_bench(args, say) -> dict:
    import psutil
    import psycopg2  # noqa: F401  (fail early without the driver)

    from sophia_assets.demo.corpus import demo_corpus
    from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path
    from sophia_assets.home import sophia_home
    from sophia_assets.postgres.embedded_server import postgres_url

    corpus = demo_corpus(sophia_home())
    card = ModelCard.read(default_model_path())
    questions = [_first_line("", d.body) for d in corpus[args.documents : args.documents + 2000]]
    with scratch_database(postgres_url(), "api") as url:
        build_index(url, Embedder(card, device="cpu", backend="auto"), corpus, args.documents, say)
        # As `sophia api serve` embeds queries: the run's backend on one thread.
        embedder = Embedder(card, device="cpu", backend="auto", threads=1)
        floor = measure_floor(url, embedder, questions, args.cores) | {"backend": embedder.backend}
        say(f"floor: {floor}")
        del embedder
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        process = start_service(url, port, args.max_batch, args.model_workers)
        try:
            wait_ready(base_url, process)
            asyncio.run(drive(base_url, 20, 3, questions, 0))  # warm-up
            results: dict[float, RateFigures] = {}
            rates = list(FIXED_RATES) + [round(f * floor["floor_rate"], 1) for f in FLOOR_FRACTIONS]
            service = psutil.Process(process.pid)
            for n, rate in enumerate(sorted(set(rates))):
                before, client_before = _cpu(service), time.process_time()
                figures = asyncio.run(drive(base_url, rate, args.seconds, questions, n + 1))
                sent = max(figures.sent, 1)
                figures.service_cpu_ms = round((_cpu(service) - before) * 1000 / sent, 2)
                figures.client_cpu_ms = round(
                    (time.process_time() - client_before) * 1000 / sent, 2
                )
                results[rate] = figures
                say(
                    f"{rate:>7.1f}/s: {figures.sent} sent, {figures.errors} errors, "
                    f"{figures.percentiles()}, CPU per request: service "
                    f"{figures.service_cpu_ms} ms, client {figures.client_cpu_ms} ms"
                )
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    passing = [r for r, f in results.items() if f.under_target()]
    return {
        "documents": args.documents,
        "seconds_per_rate": args.seconds,
        "max_batch": args.max_batch,
        "model_workers": args.model_workers,
        "cores": args.cores,
        **floor,
        "percentiles_at": {str(r): f.percentiles() for r, f in results.items()},
        "errors_at": {str(r): f.errors for r, f in results.items()},
        "service_cpu_ms_per_request_at": {str(r): f.service_cpu_ms for r, f in results.items()},
        "client_cpu_ms_per_request_at": {str(r): f.client_cpu_ms for r, f in results.items()},
        "p99_ms_at": {str(r): results[r].percentiles()["p99"] for r in FIXED_RATES},
        "max_rate_p99_under_200ms": max(passing) if passing else 0.0,
    }


def _cpu(process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--documents", type=int, default=10_000, help="index size (10000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per rate (10)")
    parser.add_argument("--cores", type=float, default=2.0, help="the service's cores (2)")
    parser.add_argument("--max-batch", type=int, default=2, help="the service's --max-batch (2)")
    parser.add_argument(
        "--model-workers", type=int, default=2, help="the service's --model-workers (2)"
    )
    add_json_flag(parser)
    args = parser.parse_args(argv)
    figures = run_api_bench(args, say)
    for rate in FIXED_RATES:
        p = figures["percentiles_at"][str(rate)]
        print(f"{rate:>4}/s: p50 {p['p50']} ms, p95 {p['p95']} ms, p99 {p['p99']} ms")
    print(
        f"highest rate with p99 < 200 ms: {figures['max_rate_p99_under_200ms']}/s; floor "
        f"{figures['floor_rate']}/s ({figures['cores']:g} cores / (embed "
        f"{figures['embed_cpu_ms']} ms + query {figures['query_cpu_ms']} ms CPU))"
    )
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
