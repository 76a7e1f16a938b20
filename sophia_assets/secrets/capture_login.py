"""Setting up and rotating the capture's login for every capture of the catalog that runs on
the platform's Postgres (what `sophia db roles`, `sophia db rotate` and the rotation job do),
and the login such a capture connects with: the current one in the secret store, read at
every connection, so a serving capture follows a rotation."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class RotatedLogin:
    """The current login of SECRET in the store, on the host and database of `base_url`."""

    store: SecretStore
    base_url: str

    def _current(self) -> dict:
        state = self.store.read(SECRET) or {}
        if not state.get("current"):
            raise RuntimeError(f"no {SECRET} login in the secret store; run `sophia db roles`")
        return state["current"]

    def url(self) -> str:
        current = self._current()
        return with_login(self.base_url, current["user"], current["password"])

    def version(self) -> str:
        current = self._current()
        return f"{current['user']}@{current['rotated_at']}"

    def user(self) -> str:
        return self._current()["user"]


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
