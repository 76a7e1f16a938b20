"""The flow runtime resource: runs the catalog's captures and reads their collections.

Locally it is the project's own runtime (`sophia_assets/flow`), with journals in the
platform's Postgres. In production Estuary runs the same catalog; reading its collections
from Dagster (through materialization triggers or Dekaf) belongs to the sensors' issue, and
until then this resource offers only the local runtime.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from resources.postgres import PostgresResource

if TYPE_CHECKING:
    from sophia_assets.catalog.model import Catalog
    from sophia_assets.embedding.lag import EmbeddingLag
    from sophia_assets.flow.capture import CaptureReport
    from sophia_assets.flow.latency import LatencyFigures
    from sophia_assets.vectors.searchable import SearchableFigures


class FlowRuntimeResource(dg.ConfigurableResource):
    postgres: dg.ResourceDependency[PostgresResource]
    latency_window_minutes: float = Field(
        default=15.0, description="Window over which the latency check computes percentiles."
    )

    def drain(
        self,
        catalog: "Catalog",
        capture_name: str,
        on_batch: Callable[["CaptureReport"], None] | None = None,
    ) -> "CaptureReport":
        """Captures up to the current WAL position (waits for a running `serve` instead)."""
        from sophia_assets.flow.capture import CaptureRunner
        from sophia_assets.secrets.capture_login import source_for

        capture = catalog.captures[capture_name]
        platform = self.postgres.url()
        runner = CaptureRunner(
            capture,
            catalog,
            source_for(capture, platform),
            platform,
            on_batch=on_batch or (lambda report: None),
        )
        return runner.drain()

    def latency(self, collection: str, offsets: tuple[int, int] | None = None) -> "LatencyFigures":
        from sophia_assets.flow import journal
        from sophia_assets.flow.latency import latency_figures

        conn = self.postgres.connect()
        try:
            journal.ensure_schema(conn)
            with conn, conn.cursor() as cur:
                if offsets is not None:
                    return latency_figures(cur, collection, offsets=offsets)
                return latency_figures(cur, collection, window_minutes=self.latency_window_minutes)
        finally:
            conn.close()

    def embedding_lag(self, source: str, derived: str) -> "EmbeddingLag":
        """How far the derivation of `derived` is behind its source collection."""
        from sophia_assets.embedding.lag import read_embedding_lag
        from sophia_assets.flow import journal

        conn = self.postgres.connect()
        try:
            journal.ensure_schema(conn)
            with conn, conn.cursor() as cur:
                return read_embedding_lag(cur, source, derived)
        finally:
            conn.close()

    def searchable(self, index: str) -> "SearchableFigures":
        """Commit-to-searchable figures of `index` over the latency window."""
        from sophia_assets.flow import journal
        from sophia_assets.vectors.searchable import searchable_figures

        conn = self.postgres.connect()
        try:
            journal.ensure_schema(conn)
            with conn, conn.cursor() as cur:
                return searchable_figures(cur, index, self.latency_window_minutes)
        finally:
            conn.close()
