"""Capture latency: for each captured change, the journal's commit time minus the source's
commit time. The journal commit time is Postgres' own commit timestamp of the journal
transaction when `track_commit_timestamp` is on (the embedded server has it), else the time
the row was written, just before its commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class LatencyFigures:
    documents: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    window_start: datetime | None
    window_end: datetime | None

    def as_metadata(self) -> dict[str, float | int | str]:
        figures: dict[str, float | int | str] = {"latency_documents": self.documents}
        for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
            value = getattr(self, name)
            if value is not None:
                figures[f"latency_{name}"] = round(value, 3)
        if self.window_start and self.window_end:
            figures["latency_window"] = (
                f"{self.window_start.isoformat()} .. {self.window_end.isoformat()}"
            )
        return figures


def commit_time_expression(cur) -> str:
    cur.execute("SELECT current_setting('track_commit_timestamp') = 'on'")
    on = cur.fetchone()[0]
    return "coalesce(pg_xact_commit_timestamp(xmin), captured_at)" if on else "captured_at"


def latency_figures(
    cur,
    collection: str,
    *,
    window_minutes: float | None = None,
    offsets: tuple[int, int] | None = None,
) -> LatencyFigures:
    """Figures over the changes captured in the last `window_minutes`, or in an offset range.
    Backfilled rows (no source commit time) are not changes and do not count."""
    committed = commit_time_expression(cur)
    where = ["collection = %s", "source_ts IS NOT NULL"]
    params: list = [collection]
    if window_minutes is not None:
        where.append("captured_at >= now() - make_interval(secs => %s)")
        params.append(window_minutes * 60)
    if offsets is not None:
        where.append('"offset" BETWEEN %s AND %s')
        params.extend(offsets)
    cur.execute(
        f"""
        WITH changes AS (
            SELECT extract(epoch FROM ({committed} - source_ts)) * 1000 AS ms, captured_at
            FROM flow.journal WHERE {" AND ".join(where)}
        )
        SELECT count(*),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY ms),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY ms),
               max(ms), min(captured_at), max(captured_at)
        FROM changes
        """,
        params,
    )
    count, p50, p95, p99, worst, start, end = cur.fetchone()
    return LatencyFigures(count, _float(p50), _float(p95), _float(p99), _float(worst), start, end)


def _float(value) -> float | None:
    return None if value is None else float(value)
