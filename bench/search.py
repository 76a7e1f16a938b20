"""`python -m bench.search`: query latency of `Search` (embed the query, ask pgvector, keep the
best chunk per document) over an index of real corpus documents, against its two parts
measured alone in the same run: embedding a query, and the HNSW query with a ready vector.

The index holds one vector per document, embedded from its title and first line so that
building 10,000 of them takes under a minute on a CPU."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass

from bench.report import add_json_flag, say
from bench.scratch import scratch_database

ENV = "SOPHIA_BENCH_URL"


@dataclass
class SearchFigures:
    documents: int
    queries: int
    search_ms: list[float]
    embed_ms: list[float]
    index_ms: list[float]

    def as_dict(self) -> dict:
        p50, p99 = _percentiles(self.search_ms)
        e50, e99 = _percentiles(self.embed_ms)
        i50, i99 = _percentiles(self.index_ms)
        return {
            "documents": self.documents,
            "queries": self.queries,
            "p50_ms": p50,
            "p99_ms": p99,
            "embed_p50_ms": e50,
            "embed_p99_ms": e99,
            "index_p50_ms": i50,
            "index_p99_ms": i99,
            "ratio_to_parts": round(p50 / (e50 + i50), 3),
        }


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return round(cuts[49], 3), round(cuts[98], 3)


def run_search_bench(
    platform_url: str, corpus, documents: int, queries: int, say=print
) -> SearchFigures:
    import psycopg2

    from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path
    from sophia_assets.embedding.search import Search
    from sophia_assets.vectors import VectorRecord
    from sophia_assets.vectors.pgvector import PgVectorIndex

    if documents + queries > len(corpus):
        raise ValueError(f"the corpus has {len(corpus)} documents; ask for fewer")
    embedder = Embedder(ModelCard.read(default_model_path()), backend="auto")  # as a run does
    with scratch_database(platform_url, "search") as url:
        os.environ[ENV] = url
        index = PgVectorIndex(lambda: psycopg2.connect(url))
        say(f"indexing {documents} documents...")
        texts = [_first_line(d.title, d.body) for d in corpus[:documents]]
        vectors = embedder.embed(texts)
        records = [
            VectorRecord(f"{i + 1}:0", vector, {"source_key": i + 1, "title": corpus[i].title})
            for i, vector in enumerate(vectors)
        ]
        for start in range(0, len(records), 2000):
            index.apply(records[start : start + 2000], [], start + 2000)
        questions = [_first_line("", d.body) for d in corpus[documents : documents + queries]]
        search = Search(embedder, index)
        try:
            for question in questions[:20]:  # warm-up: caches, HNSW pages
                search(question)
            say(f"{queries} queries...")
            search_ms = [_timed(lambda q=q: search(q, 5)) for q in questions]
            embed_ms = [_timed(lambda q=q: embedder.embed([q])) for q in questions]
            ready = embedder.embed(questions[:queries])
            with index.session() as session:
                index_ms = [_timed(lambda v=v: session.query(v, 20)) for v in ready]
        finally:
            search.close()
    return SearchFigures(documents, queries, search_ms, embed_ms, index_ms)


def _first_line(title: str, body: str) -> str:
    line = body.strip().split("\n\n")[0].replace("\n", " ")[:200]
    return f"{title}: {line}" if title else line


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def print_search_figures(figures: SearchFigures, as_json: bool) -> None:
    data = figures.as_dict()
    print(
        f"search over {figures.documents} documents, {figures.queries} queries: "
        f"p50 {data['p50_ms']} ms, p99 {data['p99_ms']} ms"
    )
    print(
        f"  its parts alone: embed the query p50 {data['embed_p50_ms']} ms "
        f"(p99 {data['embed_p99_ms']}), HNSW query p50 {data['index_p50_ms']} ms "
        f"(p99 {data['index_p99_ms']})"
    )
    print(f"  search / (embed + query) at p50: {data['ratio_to_parts']}")
    if as_json:
        print(json.dumps(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__)
    parser.add_argument("--documents", type=int, default=10_000, help="index size (10000)")
    parser.add_argument("--queries", type=int, default=1_000, help="queries (1000)")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    from sophia_assets.demo.corpus import demo_corpus
    from sophia_assets.home import sophia_home
    from sophia_assets.postgres.embedded_server import postgres_url

    corpus = demo_corpus(sophia_home())
    figures = run_search_bench(postgres_url(), corpus, args.documents, args.queries, say=say)
    print_search_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
