"""`sophia`: the platform from a terminal.

    sophia demo seed [--rows N]            create and fill public.documents
    sophia demo load --rate R --seconds S  stream inserts, updates and deletes into it
    sophia demo run [--rows N]             the main job on the embedded defaults
    sophia postgres start|stop|status|url  the embedded PostgreSQL under SOPHIA_HOME
    sophia catalog validate                check flow_specs/ and print its lineage
    sophia db roles                        the capture's least-privilege logins (idempotent)
    sophia db rotate                       rotate the capture login (two-role scheme)
    sophia images list [--files]           images in deploy/images.yaml and context digests
    sophia images check                    hadolint and our Dockerfile rules (exit 1 on errors)
    sophia search TEXT [--top-k K] [--json]
                                           nearest documents in the vector index
    sophia flow drain [--rebackfill]       capture up to now, then stop
    sophia flow serve                      capture continuously until SIGTERM/SIGINT
    sophia flow read COLLECTION [--reduced] [--since OFFSET]
                                           print a collection as JSON lines

Dagster, torch and the like are imported only by the verbs that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit, urlunsplit


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sophia", description="The sophia AI data platform.")
    verbs = parser.add_subparsers(title="commands")

    demo = verbs.add_parser("demo", help="the demo application table and the main job")
    demo_verbs = demo.add_subparsers(title="demo commands")
    seed = demo_verbs.add_parser("seed", help="create and fill public.documents (idempotent)")
    seed.add_argument("--rows", type=int, default=10_000, help="documents to seed (10000)")
    seed.set_defaults(handler=_demo_seed)
    load = demo_verbs.add_parser("load", help="apply inserts, updates and deletes at a rate")
    load.add_argument("--rate", type=float, required=True, help="changes per second")
    load.add_argument("--seconds", type=float, required=True, help="how long to run")
    load.add_argument("--seed", type=int, default=0, help="random seed of the change mix")
    load.set_defaults(handler=_demo_load)
    run = demo_verbs.add_parser("run", help="run the main job on the embedded defaults")
    run.add_argument(
        "--rows",
        type=int,
        default=1_000,
        help="documents to seed (1000: embedding on a CPU takes about a minute)",
    )
    run.set_defaults(handler=_demo_run)

    postgres = verbs.add_parser("postgres", help="the embedded PostgreSQL server")
    postgres_verbs = postgres.add_subparsers(title="postgres commands")
    for name, handler, text in (
        ("start", _postgres_start, "start it (or reuse the running one)"),
        ("stop", _postgres_stop, "stop it (fast shutdown, data kept)"),
        ("status", _postgres_status, "say whether it runs, and where"),
        ("url", _postgres_url, "print the URL to connect to"),
    ):
        postgres_verbs.add_parser(name, help=text).set_defaults(handler=handler)

    flow = verbs.add_parser("flow", help="the local flow runtime (CDC captures)")
    flow_verbs = flow.add_subparsers(title="flow commands")
    drain = flow_verbs.add_parser("drain", help="capture up to the current WAL position, stop")
    drain.add_argument(
        "--rebackfill",
        action="store_true",
        help="start over: new slot, full backfill, deletes reconciled",
    )
    drain.set_defaults(handler=_flow_drain)
    flow_verbs.add_parser(
        "serve", help="capture continuously until SIGTERM or SIGINT"
    ).set_defaults(handler=_flow_serve)
    read = flow_verbs.add_parser("read", help="print a collection's documents as JSON lines")
    read.add_argument("collection", help="e.g. sophia/postgresql_cdc")
    read.add_argument("--reduced", action="store_true", help="the current document per key")
    read.add_argument("--since", type=int, default=0, help="first journal offset (0)")
    read.set_defaults(handler=_flow_read)

    search = verbs.add_parser("search", help="semantic search over the vector index")
    search.add_argument("text", help="what to look for")
    search.add_argument("--top-k", type=int, default=5, help="how many documents (5)")
    search.add_argument("--json", action="store_true", help="one JSON array of results")
    search.set_defaults(handler=_search)

    catalog = verbs.add_parser("catalog", help="the flow_specs catalog")
    catalog_verbs = catalog.add_subparsers(title="catalog commands")
    catalog_verbs.add_parser(
        "validate", help="validate flow_specs/ and print the lineage"
    ).set_defaults(handler=_catalog_validate)

    db = verbs.add_parser("db", help="roles and credentials on the platform's Postgres")
    db_verbs = db.add_subparsers(title="db commands")
    db_verbs.add_parser(
        "roles", help="create the capture's least-privilege logins and grants"
    ).set_defaults(handler=_db_roles)
    db_verbs.add_parser("rotate", help="rotate the capture login now").set_defaults(
        handler=_db_rotate
    )

    images = verbs.add_parser("images", help="the container images in deploy/images.yaml")
    images_verbs = images.add_subparsers(title="images commands")
    listing = images_verbs.add_parser("list", help="images with their context digests")
    listing.add_argument("--files", action="store_true", help="also the files in each context")
    listing.set_defaults(handler=_images_list)
    images_verbs.add_parser(
        "check", help="hadolint and our rules on each image's Dockerfile"
    ).set_defaults(handler=_images_check)
    return parser


# -- db -----------------------------------------------------------------------------------


def _db_roles(args: argparse.Namespace) -> int:
    from sophia_assets.catalog import load_catalog
    from sophia_assets.home import flow_specs_dir
    from sophia_assets.postgres.embedded_server import postgres_url
    from sophia_assets.secrets.capture_login import set_up
    from sophia_assets.secrets.postgres_roles import GROUP, PASSWORD_LOGIN, ROLES
    from sophia_assets.secrets.store import configured_store

    admin = postgres_url()
    store = configured_store()
    setup = set_up(load_catalog(flow_specs_dir()), admin, store)
    if not _external_url():
        _embedded().apply_auth_rules()  # password logins for members of PASSWORD_LOGIN
    else:
        print(f"make sure pg_hba.conf asks {PASSWORD_LOGIN}'s members for a password")
    print(f"roles {', '.join(ROLES)} (LOGIN REPLICATION) in {GROUP}: SELECT on")
    for table in setup.tables:
        print(f"  {table}")
    if setup.rotation:
        print(f"first login: {setup.rotation.current}")
    where = getattr(store, "path", None) or f"ESC {getattr(store, 'reference', '')}"
    print(f"the current login is in {where}; captures connect with it")
    return 0


def _db_rotate(args: argparse.Namespace) -> int:
    from sophia_assets.postgres.embedded_server import postgres_url
    from sophia_assets.secrets.postgres_roles import rotate
    from sophia_assets.secrets.store import configured_store

    rotation = rotate(postgres_url(), configured_store())
    print(f"current login: {rotation.current} (previous: {rotation.previous or 'none'})")
    return 0


# -- images -------------------------------------------------------------------------------


def _images_list(args: argparse.Namespace) -> int:
    from sophia_assets.images.config import load_images

    for image in load_images():
        files = image.build_context.files()
        digest = image.build_context.digest()
        print(
            f"images/{image.name}  target={image.target or '(last)'}  "
            f"context={digest[:12]}  files={len(files)}  repository={image.repository}"
        )
        if args.files:
            print("".join(f"    {name}\n" for name in files), end="")
    return 0


def _images_check(args: argparse.Namespace) -> int:
    from sophia_assets.images.config import load_images
    from sophia_assets.images.rules import check_dockerfile, failing

    by_file: dict = {}
    for image in load_images():
        by_file.setdefault(image.dockerfile, []).append(image.target)
    failed = 0
    for dockerfile, targets in by_file.items():
        findings = check_dockerfile(dockerfile, targets)
        failed += len(failing(findings))
        print(f"{dockerfile}: {len(findings)} finding(s), {len(failing(findings))} failing")
        for finding in findings:
            print(f"  {finding}")
    return 1 if failed else 0


# -- demo ---------------------------------------------------------------------------------


def _demo_seed(args: argparse.Namespace) -> int:
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


def _demo_load(args: argparse.Namespace) -> int:
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


def _demo_run(args: argparse.Namespace) -> int:
    """The main command: seeds the source table, runs the `main` job (capture, embed, index)
    and prints a search result. Both runs are recorded in the local instance, so
    `dagster dev` shows them afterwards."""
    from sophia_assets.definitions import defs
    from sophia_assets.instance import local_instance

    with local_instance() as instance:
        seed = defs.get_job_def("demo_seed_job").execute_in_process(
            instance=instance,
            run_config={"ops": {"seed_demo_documents": {"config": {"rows": args.rows}}}},
            raise_on_error=False,
        )
        if not seed.success:
            return _failed(seed.run_id)
        events = seed.asset_materializations_for_node("seed_demo_documents")
        figures = {k: v.value for k, v in events[0].metadata.items()}
        print(f"seed run {seed.run_id}: public.documents {figures}")
        main = defs.resolve_job_def("main").execute_in_process(
            instance=instance, raise_on_error=False
        )
        if not main.success:
            return _failed(main.run_id)
        for event in main.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            shown = {k: v.value for k, v in materialization.metadata.items() if k in SHOWN}
            print(f"main run {main.run_id}: {materialization.asset_key.to_user_string()} {shown}")
    query = _demo_query()
    print(f'search "{query}":')
    _print_results(_searcher()(query, 3))
    return 0


SHOWN = (
    "documents",
    "commit_lsn",
    "latency_p99_ms",
    "embedded_documents",
    "documents_per_s",
    "vectors",
    "applied_offset",
)


def _demo_query() -> str:
    """A question answered by a seeded document: the first sentence of document 1."""
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


def _searcher():
    from resources.embedder import EmbedderResource
    from resources.postgres import PostgresResource
    from resources.vector_index import configured_index
    from sophia_assets.embedding.search import Search

    return Search(EmbedderResource().load(), configured_index(PostgresResource()))


def _print_results(results) -> None:
    for rank, result in enumerate(results, 1):
        print(f"  {rank}. [{result.score:.3f}] {result.title} (id {result.id})")


def _search(args: argparse.Namespace) -> int:
    import json

    results = _searcher()(args.text, args.top_k)
    if args.json:
        print(json.dumps([{"id": r.id, "title": r.title, "score": r.score} for r in results]))
    elif results:
        _print_results(results)
    else:
        print("no results: the index is empty; run `sophia demo run` first", file=sys.stderr)
    return 0


def _failed(run_id: str) -> int:
    print(
        f"run {run_id} failed; its logs are in the Dagster UI (`uv run dagster dev`)",
        file=sys.stderr,
    )
    return 1


# -- postgres ------------------------------------------------------------------------------


def _embedded():
    from sophia_assets.home import sophia_home
    from sophia_assets.postgres.embedded_server import EmbeddedPostgres

    return EmbeddedPostgres(sophia_home())


def _external_url() -> str | None:
    from sophia_assets.postgres.embedded_server import POSTGRES_URL_ENV

    return os.environ.get(POSTGRES_URL_ENV)


def _postgres_start(args: argparse.Namespace) -> int:
    if url := _external_url():
        print(f"SOPHIA_POSTGRES_URL is set; using {_masked(url)} and starting nothing")
        return 0
    server = _embedded()
    print(f"running: {server.ensure_running()} (data in {server.data})")
    return 0


def _postgres_stop(args: argparse.Namespace) -> int:
    server = _embedded()
    print("stopped" if server.stop() else "not running")
    return 0


def _postgres_status(args: argparse.Namespace) -> int:
    if url := _external_url():
        print(f"external server (SOPHIA_POSTGRES_URL): {_masked(url)}")
        return 0
    server = _embedded()
    status = server.status()
    if status.running:
        print(f"running: pid {status.pid}, {status.url} (data in {server.data})")
        return 0
    print(f"not running (data in {server.data}); `sophia postgres start` starts it")
    return 3


def _postgres_url(args: argparse.Namespace) -> int:
    url = _external_url()
    print(_masked(url) if url else _embedded().ensure_running())
    return 0


def _masked(url: str) -> str:
    """The URL with any password replaced, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# -- flow ----------------------------------------------------------------------------------


def _flow_runners(on_batch=None):
    from sophia_assets.catalog import load_catalog
    from sophia_assets.flow.capture import CaptureRunner
    from sophia_assets.flow.runtime import runnable_captures, source_for
    from sophia_assets.home import flow_specs_dir
    from sophia_assets.postgres.embedded_server import postgres_url

    catalog = load_catalog(flow_specs_dir())
    platform = postgres_url()
    return [
        CaptureRunner(
            capture,
            catalog,
            source_for(capture, platform),
            platform,
            on_batch=on_batch or (lambda report: None),
        )
        for capture in runnable_captures(catalog)
    ]


def _print_report(report) -> None:
    for name, figures in report.collections.items():
        print(
            f"{name}: {figures.documents} documents (offsets {figures.first_offset}.."
            f"{figures.last_offset}), {figures.quarantined} quarantined"
        )
    print(
        f"{report.task}: checkpoint {report.checkpoint_lsn}, {report.transactions} "
        f"transactions, {report.backfilled_rows} rows backfilled"
    )


def _flow_drain(args: argparse.Namespace) -> int:
    _configure_logging()
    for runner in _flow_runners():
        if args.rebackfill:
            runner.reset_for_rebackfill()
        _print_report(runner.drain())
    return 0


def _flow_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    _configure_logging()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runners = _flow_runners(on_batch=_log_batch)
    threads = [
        threading.Thread(target=r.serve, args=(stop,), name=r.settings.task) for r in runners
    ]
    for thread in threads:
        thread.start()
    print(
        f"serving {', '.join(r.settings.task for r in runners)}; SIGTERM or Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.5)
    for runner in runners:
        _print_report(runner.report)
    return 0


def _log_batch(report) -> None:
    import logging

    logging.getLogger("sophia.flow").info(
        "%s: %d documents so far, checkpoint %s",
        report.task,
        report.documents,
        report.checkpoint_lsn,
    )


def _configure_logging() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _flow_read(args: argparse.Namespace) -> int:
    import orjson
    import psycopg2

    from sophia_assets.flow import journal
    from sophia_assets.postgres.embedded_server import postgres_url

    conn = psycopg2.connect(postgres_url())
    out = sys.stdout.buffer
    try:
        with conn.cursor(name="flow_read") as cur:
            cur.itersize = 5000
            documents = (
                journal.read_reduced(cur, args.collection)
                if args.reduced
                else (doc for _, doc in journal.read(cur, args.collection, args.since))
            )
            for document in documents:
                out.write(orjson.dumps(document) + b"\n")
    finally:
        conn.close()
    return 0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- catalog -------------------------------------------------------------------------------


def _catalog_validate(args: argparse.Namespace) -> int:
    from sophia_assets.catalog import CatalogError, load_catalog
    from sophia_assets.catalog.translator import FlowTranslator
    from sophia_assets.home import flow_specs_dir

    try:
        catalog = load_catalog(flow_specs_dir())
    except CatalogError as err:
        print(err, file=sys.stderr)
        return 1
    print(
        f"{catalog.root}: {len(catalog.files)} files, {len(catalog.captures)} captures, "
        f"{len(catalog.collections)} collections, "
        f"{len(catalog.materializations)} materializations"
    )
    for spec in FlowTranslator(catalog).build_specs():
        for dep in spec.deps:
            print(f"  {dep.asset_key.to_user_string()} -> {spec.key.to_user_string()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
