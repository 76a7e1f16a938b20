"""`sophia search`: semantic search over the vector index."""

from __future__ import annotations

import argparse
import sys


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    search = verbs.add_parser(
        "search",
        help="semantic search over the vector index",
        description="The documents nearest to TEXT in the vector index: pgvector in the "
        "platform's Postgres, or Pinecone when SOPHIA_PINECONE_HOST is set.",
    )
    search.add_argument("text", help="what to look for")
    search.add_argument("--top-k", type=int, default=5, help="how many documents (5)")
    search.add_argument("--json", action="store_true", help="one JSON array of results")
    search.set_defaults(handler=search_index)


def search_index(args: argparse.Namespace) -> int:
    import json

    results = searcher()(args.text, args.top_k)
    if args.json:
        print(json.dumps([{"id": r.id, "title": r.title, "score": r.score} for r in results]))
    elif results:
        print_results(results)
    else:
        print("no results: the index is empty; run `sophia demo run` first", file=sys.stderr)
    return 0


def searcher():
    """A search over the index the resources configure; `demo run` asks it too."""
    from resources.embedder import EmbedderResource
    from resources.postgres import PostgresResource
    from resources.vector_index import configured_index
    from sophia_assets.embedding.search import Search

    return Search(EmbedderResource().load(), configured_index(PostgresResource()).open())


def print_results(results) -> None:
    for rank, result in enumerate(results, 1):
        print(f"  {rank}. [{result.score:.3f}] {result.title} (id {result.id})")
