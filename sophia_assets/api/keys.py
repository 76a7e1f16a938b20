"""API keys: held as sha256 hashes only, compared in constant time, never logged or echoed."""

from __future__ import annotations

import hashlib
import hmac

KEYS_ENV = "SOPHIA_API_KEYS"


class ApiKeys:
    def __init__(self, keys: list[str]):
        self._hashes = [_digest(k) for k in (k.strip() for k in keys) if k]

    @classmethod
    def from_text(cls, text: str | None) -> ApiKeys:
        """From a comma-separated list, as SOPHIA_API_KEYS holds it."""
        return cls((text or "").split(","))

    def __len__(self) -> int:
        return len(self._hashes)

    def identify(self, presented: str | None) -> str | None:
        """A stable, non-secret id of the key (a hash prefix) when `presented` is valid.

        Every stored hash is compared, so the time taken does not say which one matched."""
        if not presented:
            return None
        digest = _digest(presented)
        found = None
        for stored in self._hashes:
            if hmac.compare_digest(digest, stored):
                found = stored
        return found.hex()[:12] if found else None


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
