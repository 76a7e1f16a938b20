"""The demo seed as a Dagster job, so a seed run is visible in the UI and its row counts are
recorded as a materialization of the source table `postgres/public/documents`."""

import dagster as dg

from resources.postgres import PostgresResource

DOCUMENTS_KEY = dg.AssetKey(["postgres", "public", "documents"])
DEFAULT_ROWS = 10_000


class SeedConfig(dg.Config):
    rows: int = DEFAULT_ROWS


@dg.op(description="Creates and fills public.documents from the demo corpus (idempotent).")
def seed_demo_documents(
    context: dg.OpExecutionContext, config: SeedConfig, postgres: PostgresResource
):
    from sophia_assets.demo.corpus import load_corpus
    from sophia_assets.demo.seed import seed_documents
    from sophia_assets.home import sophia_home

    corpus = load_corpus(sophia_home() / "cache")
    done = 0

    def progress(batch: int) -> None:
        nonlocal done
        done += batch
        context.log.info(f"seeded {done}/{config.rows} documents")

    report = seed_documents(postgres.url(), corpus, config.rows, on_batch=progress)
    yield dg.AssetMaterialization(
        asset_key=DOCUMENTS_KEY,
        description="Seeded from the demo corpus (docstrings of Python, sympy and networkx).",
        metadata={
            "rows": report.rows,
            "inserted": report.inserted,
            "restored": report.restored,
            "unchanged": report.unchanged,
        },
    )
    yield dg.Output(report.rows)


@dg.job(description="Seeds the demo application table public.documents.")
def demo_seed_job():
    seed_demo_documents()
