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
    flow_verbs.add_parser(
        "serve", help="capture continuously until SIGTERM or SIGINT; exit 1 if a capture dies"
    ).set_defaults(handler=serve_captures)
    read = flow_verbs.add_parser("read", help="print a collection's documents as JSON lines")
    read.add_argument("collection", help="e.g. sophia/postgresql_cdc")
    read.add_argument("--reduced", action="store_true", help="the current document per key")
    read.add_argument("--since", type=int, default=0, help="first journal offset (0)")
    read.set_defaults(handler=read_collection)


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
    runners = capture_runners(on_batch=log_batch)
    died: dict[str, BaseException] = {}

    def serve(runner) -> None:
        """One capture; if it dies, the others stop too and the process exits non-zero, so a
        supervisor (systemd, Kubernetes) restarts it and nobody takes a half-dead serve
        for a healthy one."""
        try:
            runner.serve(stop)
        except BaseException as err:
            died[runner.settings.task] = err
            print(f"capture {runner.settings.task} died: {err!r}", file=sys.stderr, flush=True)
            stop.set()

    threads = [threading.Thread(target=serve, args=(r,), name=r.settings.task) for r in runners]
    for thread in threads:
        thread.start()
    print(
        f"serving {', '.join(r.settings.task for r in runners)}; SIGTERM or Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
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


def configure_logging() -> None:
    """Progress to stderr, so stdout carries only the reports."""
    import logging

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
