"""`sophia db`: the capture's roles and credentials on the platform's Postgres."""

from __future__ import annotations

import argparse

from sophia_assets.cli.postgres import embedded_server, external_url


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    group = verbs.add_parser(
        "db",
        help="roles and credentials on the platform's Postgres",
        description="The capture's least-privilege logins by the two-role scheme, and their "
        "rotation. The current login is kept in the configured secret store.",
    )
    db_verbs = group.add_subparsers(title="db commands")
    db_verbs.add_parser(
        "roles",
        help="create the capture's least-privilege logins and grants",
        description="Idempotent: safe to run again.",
    ).set_defaults(handler=set_up_roles)
    db_verbs.add_parser("rotate", help="rotate the capture login now").set_defaults(
        handler=rotate_login
    )


def set_up_roles(args: argparse.Namespace) -> int:
    from sophia_assets.catalog import load_catalog
    from sophia_assets.home import flow_specs_dir
    from sophia_assets.postgres.embedded_server import postgres_url
    from sophia_assets.secrets.capture_login import set_up
    from sophia_assets.secrets.postgres_roles import GROUP, PASSWORD_LOGIN, ROLES
    from sophia_assets.secrets.store import configured_store

    admin = postgres_url()
    store = configured_store()
    setup = set_up(load_catalog(flow_specs_dir()), admin, store)
    if not external_url():
        embedded_server().apply_auth_rules()  # password logins for members of PASSWORD_LOGIN
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


def rotate_login(args: argparse.Namespace) -> int:
    from sophia_assets.postgres.embedded_server import postgres_url
    from sophia_assets.secrets.postgres_roles import rotate
    from sophia_assets.secrets.store import configured_store

    rotation = rotate(postgres_url(), configured_store())
    print(f"current login: {rotation.current} (previous: {rotation.previous or 'none'})")
    return 0
