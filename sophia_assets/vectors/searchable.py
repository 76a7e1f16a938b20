"""Commit-to-searchable: for each captured change, the time from its source commit to the
moment its vectors were applied to an index, one row per source document and batch in
`flow.searchable`. Backfilled rows are not changes (their vector updates carry no source
time) and do not count. Rows older than a day are pruned as new ones arrive."""

from __future__ import annotations

from dataclasses import dataclass

KEEP = "1 day"


@dataclass(frozen=True)
class SearchableFigures:
    documents: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    def as_metadata(self) -> dict[str, float | int]:
        figures: dict[str, float | int] = {"searchable_documents": self.documents}
        for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
            value = getattr(self, name)
            if value is not None:
                figures[f"searchable_{name}"] = round(value, 3)
        return figures


def record_searchable(conn, index: str, collection: str, offsets: tuple[int, int]) -> list[float]:
    """Called once the index acknowledged the vector updates at `offsets` (inclusive): the
    time is taken now, so it is never earlier than the moment they became searchable.
    Returns each recorded document's commit-to-searchable seconds."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO flow.searchable (index, source_key, source_ts) "
            "SELECT %s, regexp_replace(key->>0, ':[0-9]+$', ''), max(source_ts) "
            'FROM flow.journal WHERE collection = %s AND "offset" BETWEEN %s AND %s '
            "AND source_ts IS NOT NULL GROUP BY 2 "
            "RETURNING extract(epoch FROM searchable_at - source_ts)::float8",
            (index, collection, *offsets),
        )
        seconds = [row[0] for row in cur.fetchall()]
        if seconds:
            cur.execute(
                "DELETE FROM flow.searchable WHERE index = %s "
                "AND searchable_at < now() - %s::interval",
                (index, KEEP),
            )
    return seconds


def searchable_figures(cur, index: str, window_minutes: float) -> SearchableFigures:
    """Percentiles over the changes that became searchable in the last `window_minutes`."""
    cur.execute(
        "SELECT count(*), "
        "percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms), max(ms) "
        "FROM (SELECT extract(epoch FROM searchable_at - source_ts) * 1000 AS ms "
        "FROM flow.searchable WHERE index = %s "
        "AND searchable_at >= now() - make_interval(secs => %s)) AS recent",
        (index, window_minutes * 60),
    )
    count, percentiles, worst = cur.fetchone()
    p50, p95, p99 = percentiles if percentiles else (None, None, None)
    return SearchableFigures(
        count,
        _float(p50),
        _float(p95),
        _float(p99),
        _float(worst),
    )


def _float(value) -> float | None:
    return None if value is None else float(value)
