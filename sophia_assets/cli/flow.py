"""`sophia flow`: the local flow runtime, which runs the catalog's CDC captures."""

from __future__ import annotations

import argparse
import sys


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    group = verbs.add_parser(
        "flow",
        help="the local flow runtime (CDC captures)",
        description="The local flow runtime: it runs the catalog's Postgres captures into "
        "their collections' journals in the platform's Postgres.",
    )
    flow_verbs = group.add_subparsers(title="flow commands")
    drain = flow_verbs.add_parser("drain", help="capture up to the current WAL position, stop")
    drain.add_argument(
        "--rebackfill",
        action="store_true",
        help="start over: new slot, full backfill, deletes reconciled",
    )
    drain.set_defaults(handler=drain_captures)
    serve = flow_verbs.add_parser(
        "serve",
        help="run every task continuously until SIGTERM or SIGINT; exit 1 if one dies",
        description="Runs the catalog's tasks continuously: each capture, each embedding "
        "derivation (model loaded once, micro-batches as changes commit) and each vector "
        "index materialization, each resuming from its own checkpoint. Dagster runs of the "
        "same assets take a task over (its lease) and hand it back when they finish. "
        "Prometheus metrics are served on SOPHIA_METRICS_ADDR (127.0.0.1:9464; `off` for "
        "none; docs/monitoring.md).",
    )
    serve.add_argument(
        "--captures-only",
        action="store_true",
        help="run the captures only; embedding and indexing are left to Dagster runs",
    )
    serve.set_defaults(handler=serve_captures)
    read = flow_verbs.add_parser("read", help="print a collection's documents as JSON lines")
    read.add_argument("collection", help="e.g. sophia/postgresql_cdc")
    read.add_argument("--reduced", action="store_true", help="the current document per key")
    read.add_argument("--since", type=int, default=0, help="first journal offset (0)")
    read.set_defaults(handler=read_collection)
    add_quarantine_verbs(flow_verbs)


def add_quarantine_verbs(flow_verbs: argparse._SubParsersAction) -> None:
    group = flow_verbs.add_parser(
        "quarantine",
        help="documents a capture could not journal: list, show, replay",
        description="Documents a capture could not journal (a schema violation, a value with "
        "no JSON form), each with the reason and its source position. The capture went on "
        "past them; after fixing the schema, `replay` publishes them in capture order.",
    )
    verbs = group.add_subparsers(title="quarantine commands", required=True)
    listing = verbs.add_parser("list", help="one line per quarantined document, oldest first")
    listing.add_argument("--collection", help="only this collection's")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    listing.set_defaults(handler=list_quarantined)
    show = verbs.add_parser("show", help="one quarantined document, reason and source, as JSON")
    show.add_argument("id", type=int, help="its id, from `list`")
    show.set_defaults(handler=show_quarantined)
    replay = verbs.add_parser(
        "replay",
        help="publish a collection's quarantined documents in order (stop its capture first)",
        description="Validates each quarantined document of the collection against the "
        "catalog's schema as it is now and publishes the valid ones in capture order; "
        "those the journal already has a later change of are dropped, those still invalid "
        "stay with their new reason, and values with no JSON form stay (fix the source row: "
        "the capture reads it again). Exit 1 while the capture runs.",
    )
    replay.add_argument("collection", help="e.g. sophia/postgresql_cdc")
    replay.add_argument("ids", type=int, nargs="*", help="only these ids (default: all)")
    replay.set_defaults(handler=replay_quarantined)


def drain_captures(args: argparse.Namespace) -> int:
    configure_logging()
    for runner in capture_runners():
        if args.rebackfill:
            runner.reset_for_rebackfill()
        print_report(runner.drain())
    return 0


def serve_captures(args: argparse.Namespace) -> int:
    import signal
    import threading

    configure_logging()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    _end_stalled_transactions()
    from sophia_assets.cli import serve_metrics
    from sophia_assets.postgres.embedded_server import postgres_url

    metrics = serve_metrics.start_serve_metrics(postgres_url())
    runners = capture_runners(on_batch=serve_metrics.capture_observer(metrics, log_batch))
    tasks = {r.settings.task: r for r in runners}
    captures = set(tasks)
    live = []
    if not args.captures_only:
        from sophia_assets.cli.live import live_tasks

        live = live_tasks(on_batch=serve_metrics.task_observer(metrics, log_task_batch))
        tasks.update((t.task.task, t) for t in live)
    if metrics is not None:
        for runner in runners:
            serve_metrics.watch_capture(metrics, runner)
        for task in live:
            serve_metrics.watch_live_task(metrics, task)
    died: dict[str, BaseException] = {}

    def serve(name: str, task) -> None:
        """One task; if it dies, the others stop too and the process exits non-zero, so a
        supervisor (systemd, Kubernetes) restarts it and nobody takes a half-dead serve
        for a healthy one."""
        try:
            task.serve(stop)
        except BaseException as err:
            died[name] = err
            kind = "capture" if name in captures else "task"
            print(f"{kind} {name} died: {err!r}", file=sys.stderr, flush=True)
            stop.set()

    threads = [threading.Thread(target=serve, args=item, name=item[0]) for item in tasks.items()]
    for thread in threads:
        thread.start()
    print(f"serving {', '.join(tasks)}; SIGTERM or Ctrl-C stops", file=sys.stderr, flush=True)
    # Short joins keep the main thread free to take the signals that set `stop`.
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.5)
    for runner in runners:
        print_report(runner.report)
    if died:
        print(f"sophia flow serve: stopped because {', '.join(died)} died", file=sys.stderr)
        return 1
    return 0


def _end_stalled_transactions() -> None:
    """Every connection of this process (libpq reads PGOPTIONS) asks the server to end a
    transaction left idle past the lease TTL, so a frozen serve blocks no one."""
    import os

    from sophia_assets.flow.leases import stalled_transaction_options, ttl_from_environment

    options = stalled_transaction_options(ttl_from_environment())
    os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} {options}".strip()


def read_collection(args: argparse.Namespace) -> int:
    import orjson
    import psycopg2

    from sophia_assets.flow import journal
    from sophia_assets.postgres.embedded_server import postgres_url

    conn = psycopg2.connect(postgres_url())
    out = sys.stdout.buffer
    try:
        # A named (server-side) cursor streams the journal instead of loading it whole.
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


def list_quarantined(args: argparse.Namespace) -> int:
    import orjson

    from sophia_assets.flow import quarantine

    with _journal() as conn, conn.cursor() as cur:
        rows = quarantine.listing(cur, args.collection)
    for row in rows:
        if args.json:
            print(orjson.dumps(row.as_dict()).decode())
        else:
            loc = row.source.get("loc")
            print(
                f"{row.id}\t{row.collection}\t{row.quarantined_at:%Y-%m-%d %H:%M:%S}\t{loc}\t"
                f"{_shortened(row.reason)}"
            )
    if not rows and not args.json:
        print("nothing quarantined", file=sys.stderr)
    return 0


def show_quarantined(args: argparse.Namespace) -> int:
    import orjson

    from sophia_assets.flow import quarantine

    with _journal() as conn, conn.cursor() as cur:
        row = quarantine.one(cur, args.id)
    if row is None:
        print(
            f"no quarantined document {args.id}; `sophia flow quarantine list` has them",
            file=sys.stderr,
        )
        return 1
    print(orjson.dumps(row.as_dict(), option=orjson.OPT_INDENT_2).decode())
    return 0


def replay_quarantined(args: argparse.Namespace) -> int:
    from sophia_assets.flow import quarantine

    found = _binding_of(args.collection)
    if found is None:
        print(
            f"no capture of this runtime writes {args.collection!r}; "
            "`sophia catalog validate` prints the lineage",
            file=sys.stderr,
        )
        return 1
    task, binding = found
    with _journal() as conn:
        try:
            report = quarantine.replay(conn, task, binding, args.ids or None)
        except quarantine.ReplayRefused as err:
            print(f"sophia flow quarantine replay: {err}", file=sys.stderr)
            return 1
    print(
        f"{report.collection}: {len(report.published)} published, "
        f"{len(report.superseded)} dropped (a later change of the key is journaled), "
        f"{len(report.still_quarantined)} still invalid, "
        f"{len(report.kept)} kept (a value with no JSON form: fix the source row)"
    )
    return 0


def _shortened(text: str, width: int = 120) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _journal():
    """A connection to the platform's Postgres, closed on leaving the `with`."""
    import contextlib

    import psycopg2

    from sophia_assets.flow import journal
    from sophia_assets.postgres.embedded_server import postgres_url

    conn = psycopg2.connect(postgres_url())
    journal.ensure_schema(conn)
    return contextlib.closing(conn)


def _binding_of(collection: str):
    """(capture task, binding) of the capture that writes `collection`, if any."""
    from sophia_assets.catalog import load_catalog
    from sophia_assets.flow.bindings import capture_bindings, capture_settings
    from sophia_assets.flow.runtime import runnable_captures
    from sophia_assets.home import flow_specs_dir

    catalog = load_catalog(flow_specs_dir())
    for capture in runnable_captures(catalog):
        for binding in capture_bindings(capture, catalog):
            if binding.collection.name == collection:
                return capture_settings(capture).task, binding
    return None


def capture_runners(on_batch=None):
    """One runner per capture this runtime can run; journals go to the platform's Postgres."""
    from sophia_assets.catalog import load_catalog
    from sophia_assets.flow.capture import CaptureRunner
    from sophia_assets.flow.runtime import runnable_captures
    from sophia_assets.home import flow_specs_dir
    from sophia_assets.postgres.embedded_server import postgres_url
    from sophia_assets.secrets.capture_login import source_for

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


def print_report(report) -> None:
    for name, figures in report.collections.items():
        print(
            f"{name}: {figures.documents} documents (offsets {figures.first_offset}.."
            f"{figures.last_offset}), {figures.quarantined} quarantined"
        )
    print(
        f"{report.task}: checkpoint {report.checkpoint_lsn}, {report.transactions} "
        f"transactions, {report.backfilled_rows} rows backfilled"
    )


def log_batch(report) -> None:
    import logging

    logging.getLogger("sophia.flow").info(
        "%s: %d documents so far, checkpoint %s",
        report.task,
        report.documents,
        report.checkpoint_lsn,
    )


def log_task_batch(task: str, documents: int) -> None:
    import logging

    logging.getLogger("sophia.flow").info("%s: %d documents", task, documents)


def configure_logging() -> None:
    """Progress to stderr, so stdout carries only the reports."""
    import logging

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
