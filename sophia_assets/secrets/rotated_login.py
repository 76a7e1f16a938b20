"""The capture's rotated login: the current `sophia_capture` login from the secret store. Each
connection reads the current login, and `version()` tells a serving capture that a rotation
happened, so it reconnects as the new role where it stopped (see flow.credentials)."""

from __future__ import annotations

from dataclasses import dataclass

from sophia_assets.catalog.model import Capture
from sophia_assets.flow.credentials import FixedLogin, SourceLogin
from sophia_assets.flow.runtime import source_url
from sophia_assets.secrets.postgres_roles import SECRET, with_login
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
