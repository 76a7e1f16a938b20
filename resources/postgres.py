"""The Postgres resource: the source database, the journals and the pgvector index live here.

Which server is used is configuration, never a test switch: the URL in the environment
variable named by `url_env` (default `SOPHIA_POSTGRES_URL`) when it is set, otherwise the
embedded server under `home` (default SOPHIA_HOME), started on first use. The URL is read from
the environment at run time, so a password in it never reaches Dagster's config or the UI.
"""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from sophia_assets.postgres.embedded_server import POSTGRES_URL_ENV, EmbeddedPostgres


class PostgresResource(dg.ConfigurableResource):
    url_env: str = Field(
        default=POSTGRES_URL_ENV,
        description="Environment variable holding the URL of an existing server to use instead "
        "of the embedded one.",
    )
    home: str | None = Field(
        default=None,
        description="Local state folder of the embedded server; defaults to SOPHIA_HOME.",
    )

    def url(self) -> str:
        # A production URL may come from Pulumi ESC (SOPHIA_ESC_ENVIRONMENT): opened once per
        # process, before anything connects.
        from sophia_assets.secrets.esc import load_esc_environment

        load_esc_environment()
        external = os.environ.get(self.url_env)
        if external:
            return external
        return EmbeddedPostgres(self._home()).ensure_running()

    def connect(self):
        """A new psycopg2 connection; the caller closes it."""
        import psycopg2

        return psycopg2.connect(self.url())

    def uses_embedded_server(self) -> bool:
        return not os.environ.get(self.url_env)

    def _home(self) -> Path:
        if self.home:
            return Path(self.home)
        from sophia_assets.home import sophia_home

        return sophia_home()
