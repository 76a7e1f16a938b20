"""Where the live path stands, as the Estuary sensor reports it: whether `sophia flow serve`
holds the derivation's and each index's lease, how far each has got, and each index's
commit-to-searchable figures over a window. One short transaction of reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sophia_assets.flow import journal
from sophia_assets.flow.leases import SERVE
from sophia_assets.flow.tasks import derivation_task, index_task
from sophia_assets.vectors.searchable import SearchableFigures, searchable_figures


@dataclass(frozen=True)
class LiveProgress:
    serving: bool  # serve holds the derivation's lease
    derived_offset: int  # the derivation's checkpoint: the last source offset embedded
    updates_offset: int  # the derived collection's last journal offset
    serving_indexes: frozenset[str] = frozenset()  # indexes whose lease serve holds
    applied: dict[str, int] = field(default_factory=dict)  # index -> applied offset
    searchable: dict[str, SearchableFigures] = field(default_factory=dict)


def read_live_progress(
    connect: Callable[[], Any], derivation: str, indexes: list[str], window_minutes: float
) -> LiveProgress:
    conn = connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('flow.leases') IS NOT NULL")
            if not cur.fetchone()[0]:
                return LiveProgress(False, -1, -1)
            served = _served_tasks(cur, [derivation_task(derivation), *map(index_task, indexes)])
            cur.execute(
                'SELECT coalesce(max("offset"), -1) FROM flow.journal WHERE collection = %s',
                (derivation,),
            )
            updates_offset = cur.fetchone()[0]
            return LiveProgress(
                serving=derivation_task(derivation) in served,
                derived_offset=_offset(cur, derivation_task(derivation)),
                updates_offset=updates_offset,
                serving_indexes=frozenset(i for i in indexes if index_task(i) in served),
                applied={i: _offset(cur, index_task(i)) for i in indexes},
                searchable={i: searchable_figures(cur, i, window_minutes) for i in indexes},
            )
    finally:
        conn.close()


def _served_tasks(cur, tasks: list[str]) -> set[str]:
    """The tasks whose live lease `sophia flow serve` holds."""
    cur.execute(
        "SELECT task FROM flow.leases WHERE task = ANY(%s) AND kind = %s AND owner IS NOT NULL "
        "AND heartbeat >= now() - make_interval(secs => ttl_s)",
        (tasks, SERVE),
    )
    return {row[0] for row in cur.fetchall()}


def _offset(cur, task: str) -> int:
    checkpoint = journal.load_checkpoint(cur, task)
    return checkpoint[1]["offset"] if checkpoint else -1
