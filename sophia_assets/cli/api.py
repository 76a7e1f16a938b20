"""`sophia api serve`: the search API over the configured index."""

from __future__ import annotations

import argparse


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    group = verbs.add_parser(
        "api",
        help="the search API: an HTTP service over the vector index",
        description="The search API (FastAPI on uvicorn) over the index the resources "
        "configure: pgvector in the platform's Postgres, or Pinecone when "
        "SOPHIA_PINECONE_HOST is set.",
    )
    api_verbs = group.add_subparsers(title="api commands")
    serve = api_verbs.add_parser(
        "serve",
        help="serve POST /v1/search, GET /v1/documents/KEY, /healthz, /readyz",
        description="Serves the search API until interrupted. API keys come from "
        "SOPHIA_API_KEYS (a comma-separated list; from the environment or Pulumi ESC) and "
        "are sent as `Authorization: Bearer KEY`. The OpenAPI document is at /openapi.json.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    serve.add_argument("--rate", type=float, default=50.0, help="requests per second per key (50)")
    serve.add_argument("--burst", type=int, default=100, help="burst per key (100)")
    serve.add_argument(
        "--max-lag-seconds",
        type=float,
        default=300.0,
        help="/readyz fails while the index is further behind than this (300)",
    )
    serve.add_argument(
        "--pool-size", type=int, default=4, help="database connections and threads (4)"
    )
    serve.add_argument(
        "--max-batch",
        type=int,
        default=2,
        help="query embeddings batched in one model call (2; 1: no batching)",
    )
    serve.add_argument(
        "--model-threads",
        type=int,
        default=1,
        help="CPU threads per model call (1: on 2 shared cores, more threads cost more than "
        "they save; see bench/api.py)",
    )
    serve.add_argument(
        "--model-workers",
        type=int,
        default=2,
        help="model calls at once (2; the torch backend always uses 1, since its tokenizer "
        "cannot be shared between threads)",
    )
    serve.set_defaults(handler=serve_api)


def serve_api(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from resources.embedder import EmbedderResource
    from resources.postgres import PostgresResource
    from resources.vector_index import configured_index
    from sophia_assets.api.app import create_app
    from sophia_assets.api.journal import JournalReader
    from sophia_assets.api.keys import KEYS_ENV, ApiKeys
    from sophia_assets.api.ratelimit import RateLimiter
    from sophia_assets.api.service import SearchService, ServiceSettings
    from sophia_assets.secrets.esc import load_esc_environment

    load_esc_environment()  # SOPHIA_API_KEYS may come from ESC
    keys = ApiKeys.from_text(os.environ.get(KEYS_ENV))
    if not keys:
        raise RuntimeError(
            f"{KEYS_ENV} is empty; set it to a comma-separated list of API keys "
            "(clients send one as `Authorization: Bearer KEY`)"
        )
    postgres = PostgresResource()
    embedder = EmbedderResource().load(threads=args.model_threads)
    workers = args.model_workers if embedder.backend == "onnx" else 1
    settings = ServiceSettings(args.pool_size, args.max_batch, args.max_lag_seconds, workers)
    service = SearchService(
        embedder,
        configured_index(postgres).open(),
        JournalReader(postgres.connect, args.pool_size),
        settings,
    )
    app = create_app(service, keys, RateLimiter(args.rate, args.burst))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
