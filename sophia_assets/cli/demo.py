"""`sophia demo`: the demo application table, public.documents, and the main job on it."""

from __future__ import annotations

import argparse
import sys

from sophia_assets.cli.search import print_results, searcher

# The materialization metadata `demo run` prints: the figures that say the pipeline worked.
SHOWN = (
    "documents",
    "commit_lsn",
    "latency_p99_ms",
    "embedded_documents",
    "documents_per_s",
    "backend",
    "load_s",
    "vectors",
    "applied_offset",
)


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    group = verbs.add_parser(
        "demo",
        help="the demo application table and the main job",
        description="The demo application table public.documents in the platform's Postgres: "
        "seed it, stream changes into it, or run the main job (capture, embed, index) on it.",
    )
    demo_verbs = group.add_subparsers(title="demo commands")
    seed = demo_verbs.add_parser("seed", help="create and fill public.documents (idempotent)")
    seed.add_argument("--rows", type=int, default=10_000, help="documents to seed (10000)")
    seed.set_defaults(handler=seed_table)
    load = demo_verbs.add_parser("load", help="apply inserts, updates and deletes at a rate")
    load.add_argument("--rate", type=float, required=True, help="changes per second")
    load.add_argument("--seconds", type=float, required=True, help="how long to run")
    load.add_argument("--seed", type=int, default=0, help="random seed of the change mix")
    load.set_defaults(handler=apply_changes)
    run = demo_verbs.add_parser(
        "run",
        help="run the main job on the embedded defaults",
        description="Seeds public.documents, runs the main job (capture, embed, index) and "
        "prints a search result. Both runs are recorded in the local Dagster instance, so "
        "`dagster dev` shows them afterwards.",
    )
    run.add_argument(
        "--rows",
        type=int,
        default=1_000,
        help="documents to seed (1000: embedding on a CPU takes about a minute)",
    )
    run.set_defaults(handler=run_main_job)


def seed_table(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sophia_assets.demo.corpus import demo_corpus
    from sophia_assets.demo.seed import seed_documents
    from sophia_assets.home import sophia_home
    from sophia_assets.postgres.embedded_server import postgres_url

    url = postgres_url()
    corpus = demo_corpus(sophia_home())
    with tqdm(total=args.rows, unit="doc", desc="seeding", file=sys.stderr) as bar:
        report = seed_documents(url, corpus, args.rows, on_batch=bar.update)
    print(
        f"public.documents: {report.rows} rows ({report.inserted} inserted, "
        f"{report.restored} restored, {report.unchanged} unchanged)"
    )
    return 0


def apply_changes(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sophia_assets.demo.corpus import demo_corpus
    from sophia_assets.demo.load import apply_load
    from sophia_assets.home import sophia_home
    from sophia_assets.postgres.embedded_server import postgres_url

    url = postgres_url()
    corpus = demo_corpus(sophia_home())
    total = int(args.rate * args.seconds)
    with tqdm(total=total, unit="change", desc="load", file=sys.stderr) as bar:
        report = apply_load(
            url, corpus, args.rate, args.seconds, seed=args.seed, on_change=lambda _: bar.update(1)
        )
    mix = ", ".join(f"{count} {kind}" for kind, count in sorted(report.changes.items()))
    print(f"{report.total} changes in {report.seconds:.1f} s ({report.rate:.1f}/s): {mix}")
    return 0


def run_main_job(args: argparse.Namespace) -> int:
    """`demo_seed_job`, then `main`, in the local instance (the parser's description says why)."""
    from sophia_assets.definitions import defs
    from sophia_assets.instance import local_instance

    with local_instance() as instance:
        seed = defs.get_job_def("demo_seed_job").execute_in_process(
            instance=instance,
            run_config={"ops": {"seed_demo_documents": {"config": {"rows": args.rows}}}},
            raise_on_error=False,
        )
        if not seed.success:
            return failed(seed.run_id)
        events = seed.asset_materializations_for_node("seed_demo_documents")
        figures = {k: v.value for k, v in events[0].metadata.items()}
        print(f"seed run {seed.run_id}: public.documents {figures}")
        main = defs.resolve_job_def("main").execute_in_process(
            instance=instance, raise_on_error=False
        )
        if not main.success:
            return failed(main.run_id)
        for event in main.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            shown = {k: v.value for k, v in materialization.metadata.items() if k in SHOWN}
            print(f"main run {main.run_id}: {materialization.asset_key.to_user_string()} {shown}")
    query = first_sentence()
    print(f'search "{query}":')
    print_results(searcher()(query, 3))
    return 0


def first_sentence() -> str:
    """A question a seeded document answers: the first sentence of the first document."""
    import psycopg2

    from sophia_assets.postgres.embedded_server import postgres_url

    conn = psycopg2.connect(postgres_url())
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT body FROM public.documents ORDER BY id LIMIT 1")
            (body,) = cur.fetchone()
    finally:
        conn.close()
    return body.split("\n\n")[0].replace("\n", " ").split(". ")[0][:120]


def failed(run_id: str) -> int:
    print(
        f"run {run_id} failed; its logs are in the Dagster UI (`uv run dagster dev`)",
        file=sys.stderr,
    )
    return 1
