"""The capture's Postgres login by the two-role scheme, and its least privilege.

Two login roles (`sophia_capture_a`, `sophia_capture_b`) with REPLICATION, members of
`sophia_capture`, which holds SELECT on the published tables only (plus the watermarks table
the backfill writes, as Estuary's capture needs). A rotation sets a new password on the role
not in use, proves a login with it, then publishes `current` and `previous`: the previous login
keeps working until the next rotation changes that role's password.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from sophia_assets.flow.source import ensure_publication, relation
from sophia_assets.postgres.scram import scram_verifier
from sophia_assets.secrets.store import SecretStore

SECRET = "postgres/capture"
GROUP = "sophia_capture"
PASSWORD_LOGIN = "sophia_password_login"  # the embedded server asks its members for passwords
ROLES = ("sophia_capture_a", "sophia_capture_b")
MAX_AGE_DAYS = 30


class RotationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Rotation:
    current: str
    previous: str | None
    rotated_at: float


def with_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    login = f"{quote(user, safe='')}:{quote(password, safe='')}"  # any character survives
    netloc = f"{login}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def setup_capture_roles(
    admin_url: str, tables: list[str], watermarks: str, publication: str
) -> None:
    """Creates (or repairs) the roles and their grants, the watermarks table and the
    publication; idempotent."""
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for role in (PASSWORD_LOGIN, GROUP):
                _create_role(cur, role, "NOLOGIN")
            for role in ROLES:
                _create_role(cur, role, "LOGIN REPLICATION")
                cur.execute(
                    sql.SQL("GRANT {}, {} TO {}").format(
                        sql.Identifier(GROUP), sql.Identifier(PASSWORD_LOGIN), sql.Identifier(role)
                    )
                )
            cur.execute("SELECT current_database()")
            cur.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(cur.fetchone()[0]), sql.Identifier(GROUP)
                )
            )
            schema, name = watermarks.split(".", 1)
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} "
                    "(slot text PRIMARY KEY, watermark text NOT NULL)"
                ).format(sql.Identifier(schema), sql.Identifier(name))
            )
            for table in tables:
                _grant(cur, table, "SELECT")
            _grant(cur, watermarks, "SELECT, INSERT, UPDATE")
            ensure_publication(cur, publication, [relation(t) for t in [*tables, watermarks]])
    finally:
        conn.close()


def rotate(admin_url: str, store: SecretStore, now: float | None = None) -> Rotation:
    state = store.read(SECRET) or {}
    current = (state.get("current") or {}).get("user")
    target = ROLES[1] if current == ROLES[0] else ROLES[0]
    password = secrets.token_urlsafe(32)
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (target,))
            if cur.fetchone() is None:
                raise RotationError(f"role {target} does not exist; run `sophia db roles` first")
            # The server gets a SCRAM verifier, never the password: a failed statement is
            # logged with its text, and that must not hold a credential.
            cur.execute(
                sql.SQL("ALTER ROLE {} WITH PASSWORD %s").format(sql.Identifier(target)),
                (scram_verifier(password),),
            )
    finally:
        conn.close()
    _verify_login(admin_url, target, password)
    rotated_at = time.time() if now is None else now
    store.write(
        SECRET,
        {
            "current": {"user": target, "password": password, "rotated_at": rotated_at},
            "previous": state.get("current"),
            "max_age_days": state.get("max_age_days", MAX_AGE_DAYS),
        },
    )
    return Rotation(target, current, rotated_at)


def _verify_login(admin_url: str, user: str, password: str) -> None:
    try:
        probe = psycopg2.connect(with_login(admin_url, user, password), connect_timeout=10)
    except psycopg2.OperationalError as err:
        raise RotationError(
            f"a login as {user} with its new password failed; nothing was published "
            f"(the current login still works): {str(err).strip().splitlines()[0]}"
        ) from None
    probe.close()


def _create_role(cur, role: str, attributes: str) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(sql.SQL(f"{verb} ROLE {{}} {attributes}").format(sql.Identifier(role)))


def _grant(cur, table: str, privileges: str) -> None:
    schema, name = table.split(".", 1)
    cur.execute(
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.Identifier(schema), sql.Identifier(GROUP)
        )
    )
    cur.execute(
        sql.SQL("GRANT {} ON {} TO {}").format(
            sql.SQL(privileges), sql.Identifier(schema, name), sql.Identifier(GROUP)
        )
    )
