"""The capture's login to its source. Each connection reads the current login, and
`version()` tells a serving capture that a rotation happened, so it reconnects as the new
role where it stopped. Flow knows only this interface and a fixed URL; the login rotated
through the secret store is `RotatedLogin` in secrets/capture_login.py."""

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
