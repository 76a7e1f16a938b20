"""Pulumi ESC as a resource: the environment named by `environment` (SOPHIA_ESC_ENVIRONMENT,
`org/project/env`) is opened once per run process, and its `environmentVariables` are put in
that process's environment, where the other resources read their secrets
(SOPHIA_POSTGRES_URL, SOPHIA_PINECONE_API_KEY, SOPHIA_LAMBDA_API_KEY, ...). The Postgres
resource opens it too before it connects, so every data-path step has it even without asking
for this resource. Nothing from it is logged: the log says how many variables, not values."""

import os

import dagster as dg
from pydantic import Field, PrivateAttr

from sophia_assets.secrets.esc import exported_variables, load_esc_environment


class EscResource(dg.ConfigurableResource):
    environment: str = Field(default="", description="org/project/env; empty: ESC not used")
    api_url: str | None = Field(default=None, description="Default: Pulumi Cloud")
    token_env: str = Field(default="PULUMI_ACCESS_TOKEN", description="Variable with the token.")
    _values: dict | None = PrivateAttr(default=None)

    @classmethod
    def from_environment(cls) -> "EscResource":
        return cls(
            environment=os.environ.get("SOPHIA_ESC_ENVIRONMENT", ""),
            api_url=os.environ.get("SOPHIA_ESC_URL") or None,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if not self.environment:
            return
        self._values = load_esc_environment(self.environment, self.api_url, self.token_env)
        if context.log:
            count = len(exported_variables(self._values))
            context.log.info(f"ESC {self.environment}: {count} variables set for this run")

    def values(self) -> dict:
        """The environment's resolved values."""
        return dict(self._values or {})
