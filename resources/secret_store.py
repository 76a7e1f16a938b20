"""The secret store resource: where managed secrets (the rotated capture login) are kept.

Locally a 0600 JSON file under SOPHIA_HOME (`secrets.json`); `path` moves it."""

import dagster as dg
from pydantic import Field

from sophia_assets.secrets.store import FileSecretStore, SecretStore


class SecretStoreResource(dg.ConfigurableResource):
    path: str | None = Field(default=None, description="Default: $SOPHIA_HOME/secrets.json")

    def store(self) -> SecretStore:
        return FileSecretStore(self.path)
