"""The capture's login to its source. A fixed URL, or the rotated capture login from the
secret store: each connection reads the current login, and `version()` tells a serving
capture that a rotation happened, so it reconnects as the new role where it stopped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sophia_assets.secrets.postgres_roles import SECRET, with_login
from sophia_assets.secrets.store import SecretStore, configured_store


class SourceLogin(Protocol):
    def url(self) -> str: ...

    def version(self) -> str: ...

    def user(self) -> str: ...


@dataclass(frozen=True)
class FixedLogin:
    value: str

    def url(self) -> str:
        return self.value

    def version(self) -> str:
        return ""

    def user(self) -> str:
        return "(from the URL)"


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
