"""The capture's login to its source: read at every connect, so a rotated login takes effect
on the next connection, and `version()` tells a serving capture that a rotation happened, so
it reconnects as the new role where it stopped. A fixed URL here; the rotated login from the
secret store is `secrets.rotated_login.RotatedLogin` (secrets builds on flow, never back)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
