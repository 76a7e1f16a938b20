"""`sophia postgres`: the embedded PostgreSQL server under SOPHIA_HOME."""

from __future__ import annotations

import argparse
import os

from sophia_assets.postgres.urls import masked


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    group = verbs.add_parser(
        "postgres",
        help="the embedded PostgreSQL server",
        description="The embedded PostgreSQL server, its data under SOPHIA_HOME. With "
        "SOPHIA_POSTGRES_URL set, the verbs report that server and start nothing.",
    )
    postgres_verbs = group.add_subparsers(title="postgres commands")
    # Exit status 3 for "not running" lets scripts test it, as `pg_ctl status` does.
    not_running = "Exit status 3 when it is not running."
    for name, handler, text, description in (
        ("start", start, "start it (or reuse the running one)", None),
        ("stop", stop, "stop it (fast shutdown, data kept)", None),
        ("status", status, "say whether it runs, and where", not_running),
        ("url", url, "print the URL to connect to", None),
    ):
        verb = postgres_verbs.add_parser(name, help=text, description=description)
        verb.set_defaults(handler=handler)


def embedded_server():
    """The server under SOPHIA_HOME; `db roles` also needs it, for its auth rules."""
    from sophia_assets.home import sophia_home
    from sophia_assets.postgres.embedded_server import EmbeddedPostgres

    return EmbeddedPostgres(sophia_home())


def external_url() -> str | None:
    """The server SOPHIA_POSTGRES_URL names instead of the embedded one, if any."""
    from sophia_assets.postgres.embedded_server import POSTGRES_URL_ENV

    return os.environ.get(POSTGRES_URL_ENV)


def start(args: argparse.Namespace) -> int:
    if external := external_url():
        print(f"SOPHIA_POSTGRES_URL is set; using {masked(external)} and starting nothing")
        return 0
    server = embedded_server()
    print(f"running: {server.ensure_running()} (data in {server.data})")
    return 0


def stop(args: argparse.Namespace) -> int:
    print("stopped" if embedded_server().stop() else "not running")
    return 0


def status(args: argparse.Namespace) -> int:
    if external := external_url():
        print(f"external server (SOPHIA_POSTGRES_URL): {masked(external)}")
        return 0
    server = embedded_server()
    state = server.status()
    if state.running:
        print(f"running: pid {state.pid}, {state.url} (data in {server.data})")
        return 0
    print(f"not running (data in {server.data}); `sophia postgres start` starts it")
    return 3


def url(args: argparse.Namespace) -> int:
    external = external_url()
    print(masked(external) if external else embedded_server().ensure_running())
    return 0
