"""The local flow runtime: which captures run where, resolved from the catalog and the
environment.

A capture's source is its connector config when every `${VAR}` it references is set
(production-like use against another server); otherwise the platform's own Postgres (the
embedded server, or `SOPHIA_POSTGRES_URL`). Journals always live in the platform's Postgres.
On the platform's server the capture logs in as the rotated login when there is one: that
choice needs the secret store, so it is made by `source_for` in secrets/capture_login.py.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

from sophia_assets.catalog.model import Capture, Catalog

ENV_REFERENCE = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*)\}$")
SUPPORTED_CONNECTORS = frozenset({"source-postgres"})


def runnable_captures(catalog: Catalog) -> list[Capture]:
    """The captures this runtime can run (Postgres sources)."""
    return [c for c in catalog.captures.values() if c.connector.name in SUPPORTED_CONNECTORS]


def source_url(capture: Capture, platform_url: str) -> str:
    config = capture.connector.config
    resolved = _resolve(config)
    if resolved is None or not resolved.get("address"):
        return platform_url
    password = ((resolved.get("credentials") or {}).get("password")) or ""
    user = quote(resolved.get("user") or "postgres", safe="")
    # every character percent-encoded: a password may hold / @ : ? # % and spaces
    auth = f"{user}:{quote(password, safe='')}@" if password else f"{user}@"
    database = resolved.get("database") or "postgres"
    return f"postgresql://{auth}{resolved['address']}/{quote(database, safe='')}"


def _resolve(value: Any) -> Any:
    """The config with `${VAR}` references replaced, or None if any variable is unset."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            resolved = _resolve(item)
            if resolved is None and item is not None:
                return None
            out[key] = resolved
        return out
    if isinstance(value, list):
        items = [_resolve(item) for item in value]
        return None if any(i is None for i in items) else items
    if isinstance(value, str) and (match := ENV_REFERENCE.match(value)):
        return os.environ.get(match.group(1))
    return value
