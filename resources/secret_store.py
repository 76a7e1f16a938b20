"""The secret store resource: where managed secrets (the rotated capture login) are kept.

Locally a 0600 JSON file under SOPHIA_HOME (`secrets.json`; `path` moves it); with
SOPHIA_SECRET_STORE=esc, the Pulumi ESC environment SOPHIA_ESC_ENVIRONMENT."""

import dagster as dg
from pydantic import Field

from sophia_assets.secrets.store import FileSecretStore, SecretStore, configured_store


class SecretStoreResource(dg.ConfigurableResource):
    path: str | None = Field(default=None, description="Default: $SOPHIA_HOME/secrets.json")

    def store(self) -> SecretStore:
        return FileSecretStore(self.path) if self.path else configured_store()
