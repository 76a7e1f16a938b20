"""`sophia demo load`: a steady stream of application writes against `public.documents`.

Each change is its own transaction, as an application's would be. The mix exercises everything
a CDC consumer must handle: inserts, content updates, updates that touch only `updated_at`
(which must cost no re-embedding downstream), and deletes.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg2

from sophia_assets.demo.corpus import CorpusDocument

# (kind, weight)
CHANGE_MIX = (("insert", 3), ("update", 4), ("touch", 1), ("delete", 2))


@dataclass
class LoadReport:
    seconds: float = 0.0
    changes: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.changes.values())

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0


def apply_load(
    url: str,
    corpus: list[CorpusDocument],
    rate: float,
    seconds: float,
    seed: int = 0,
    on_change: Callable[[LoadReport], None] = lambda report: None,
) -> LoadReport:
    """Applies about `rate` changes per second for `seconds`, paced against the clock so a
    slow change is caught up rather than lowering the rate."""
    if rate <= 0 or seconds <= 0:
        raise ValueError("--rate and --seconds must both be positive")
    rng = random.Random(seed)
    kinds, weights = zip(*CHANGE_MIX, strict=True)
    report = LoadReport()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(max(id), 0) FROM public.documents")
            (next_id,) = cur.fetchone()
            started = time.monotonic()
            planned = int(rate * seconds)
            for index in range(planned):
                due = started + index / rate
                if (delay := due - time.monotonic()) > 0:
                    time.sleep(delay)
                kind = rng.choices(kinds, weights)[0]
                if kind == "insert":
                    next_id += 1
                    doc = corpus[(next_id - 1) % len(corpus)]
                    cur.execute(
                        "INSERT INTO public.documents (id, title, body) VALUES (%s, %s, %s)",
                        (next_id, doc.title, doc.body),
                    )
                else:
                    kind = _change_existing(cur, kind, rng, next_id, corpus)
                report.changes[kind] += 1
                report.seconds = time.monotonic() - started
                on_change(report)
    finally:
        conn.close()
    return report


def _change_existing(cur, kind: str, rng: random.Random, max_id: int, corpus) -> str:
    """Updates, touches or deletes the first live row at or after a random id."""
    pick = "(SELECT id FROM public.documents WHERE id >= %s ORDER BY id LIMIT 1)"
    target = rng.randint(1, max(max_id, 1))
    if kind == "delete":
        cur.execute(f"DELETE FROM public.documents WHERE id = {pick}", (target,))
    elif kind == "touch":
        cur.execute(f"UPDATE public.documents SET updated_at = now() WHERE id = {pick}", (target,))
    else:
        doc = rng.choice(corpus)
        cur.execute(
            f"UPDATE public.documents SET body = %s, updated_at = now() WHERE id = {pick}",
            (doc.body, target),
        )
    return kind if cur.rowcount else "missed"
