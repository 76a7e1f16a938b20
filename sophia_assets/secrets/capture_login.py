"""Setting up and rotating the capture's login for every capture of the catalog that runs on
the platform's Postgres (what `sophia db roles`, `sophia db rotate` and the rotation job do),
and the login such a capture connects with: the current one in the secret store, read at
every connection, so a serving capture follows a rotation."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sophia_assets.backoff import Backoff
from sophia_assets.catalog.model import Capture, Catalog
from sophia_assets.flow.bindings import capture_bindings, capture_settings
from sophia_assets.flow.credentials import FixedLogin, SourceLogin
from sophia_assets.flow.runtime import runnable_captures, source_url
from sophia_assets.secrets.postgres_roles import (
    SECRET,
    Rotation,
    rotate,
    setup_capture_roles,
    with_login,
)
from sophia_assets.secrets.store import SecretStore, configured_store

_LOG = logging.getLogger(__name__)


class RotatedLogin:
    """The current login of SECRET in the store, on the host and database of `base_url`.

    A serving capture asks for `version()` every second; the store is read in a background
    thread (at most every `refresh_s`) so the capture never waits on it. When the store cannot
    be read (an ESC outage, a stall), the login in hand is kept and the read retried with
    backoff: an outage never stops or hangs the capture. Only the very first read, with no
    login in hand yet, fails the caller."""

    def __init__(
        self,
        store: SecretStore,
        base_url: str,
        refresh_s: float = 1.0,
        log: Callable[[str], None] = _LOG.warning,
        max_backoff_s: float = 60.0,
    ):
        self.store, self.base_url, self.refresh_s, self.log = store, base_url, refresh_s, log
        self.failures = 0
        self._login: dict | None = None
        self._due = 0.0
        self._reading = False
        self._backoff = Backoff(min(1.0, max_backoff_s), max_backoff_s)
        self._lock = threading.Lock()

    def url(self) -> str:
        current = self._current(wait=True)  # connecting: worth waiting for the newest
        return with_login(self.base_url, current["user"], current["password"])

    def version(self) -> str:
        current = self._current(wait=False)
        return f"{current['user']}@{current['rotated_at']}"

    def user(self) -> str:
        return self._current(wait=False)["user"]

    def _current(self, wait: bool) -> dict:
        with self._lock:
            due = not self._reading and time.monotonic() >= self._due
            self._reading = self._reading or due
            login = self._login
        if login is None or (due and wait):
            return self._read()
        if due:
            threading.Thread(target=self._read, name="capture-login", daemon=True).start()
        return login

    def _read(self) -> dict:
        try:
            state = self.store.read(SECRET) or {}
            if not state.get("current"):
                raise RuntimeError(f"no {SECRET} login in the secret store; run `sophia db roles`")
        except Exception as err:
            with self._lock:
                self._reading = False
                if self._login is None:
                    raise
                self.failures += 1
                delay = self._backoff.next_delay()
                self._due = time.monotonic() + delay
                kept = self._login["user"]
            self.log(f"secret store unreadable ({err}); keeping {kept}, next read in {delay:.0f} s")
            return self._login
        with self._lock:
            self._login, self._reading = state["current"], False
            self._due = time.monotonic() + self.refresh_s
            self._backoff.reset()
            return self._login


def source_login(url: str, store: SecretStore | None = None) -> SourceLogin:
    """The rotated capture login when `sophia db roles` set one up, else the URL as it is."""
    store = store or configured_store()
    return RotatedLogin(store, url) if store.read(SECRET) else FixedLogin(url)


def source_for(capture: Capture, platform_url: str) -> SourceLogin | str:
    """The capture's source login: its connector config's, or on the platform's own server
    the rotated least-privilege login when `sophia db roles` set one up."""
    url = source_url(capture, platform_url)
    return source_login(url) if url == platform_url else url


@dataclass(frozen=True)
class RoleSetup:
    tables: list[str]
    rotation: Rotation | None  # the first rotation, when there was no login yet


def platform_tables(catalog: Catalog, admin_url: str) -> list[tuple[str, list[str], str, str]]:
    """Per capture on the platform's server: (name, published tables, watermarks, publication)."""
    out = []
    for capture in runnable_captures(catalog):
        if source_url(capture, admin_url) != admin_url:
            continue  # a production source: its DBA grants, as Estuary's setup guide says
        settings = capture_settings(capture)
        tables = [b.id for b in capture_bindings(capture, catalog)]
        out.append((capture.name, tables, settings.watermarks_table, settings.publication))
    return out


def set_up(catalog: Catalog, admin_url: str, store: SecretStore) -> RoleSetup:
    published: list[str] = []
    for _, tables, watermarks, publication in platform_tables(catalog, admin_url):
        setup_capture_roles(admin_url, tables, watermarks, publication)
        published += tables
    rotation = None if store.read(SECRET) else rotate(admin_url, store)
    return RoleSetup(published, rotation)
