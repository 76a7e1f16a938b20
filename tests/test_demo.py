"""The demo source: a corpus of real prose, an idempotent seed, and a change stream."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import psycopg2
import pytest

from sophia_assets.demo.corpus import load_corpus
from sophia_assets.demo.load import apply_load
from sophia_assets.demo.seed import seed_documents
from tests.support.processes import run_sophia

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def corpus(shared_home: Path):
    return load_corpus(shared_home / "cache")


def _table_state(url: str) -> tuple:
    """Row count and a digest of every column of every row."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), md5(string_agg(id || '|' || title || '|' || body || '|' "
                "|| updated_at::text, E'\\n' ORDER BY id)) FROM public.documents"
            )
            return cur.fetchone()
    finally:
        conn.close()


def test_corpus_is_large_distinct_and_varied(corpus, shared_home: Path) -> None:
    bodies = [doc.body for doc in corpus]
    assert len(set(bodies)) == len(bodies) >= 10_000
    lengths = sorted(len(b) for b in bodies)
    deciles = statistics.quantiles(lengths, n=10)
    assert deciles[0] < 150 and deciles[-1] > 1_000  # short notes and long explanations
    assert sum(" the " in b for b in bodies) > len(bodies) / 2  # English prose, not filler
    assert load_corpus(shared_home / "cache") == corpus  # the cache gives the same documents


def test_seed_twice_leaves_the_same_table(clean_documents: str, corpus) -> None:
    first = seed_documents(clean_documents, corpus, rows=2_500)
    state = _table_state(clean_documents)
    second = seed_documents(clean_documents, corpus, rows=2_500)

    assert (first.inserted, first.unchanged) == (2_500, 0)
    assert (second.inserted, second.restored, second.unchanged) == (0, 0, 2_500)
    assert _table_state(clean_documents) == state
    assert state[0] == 2_500


def test_seed_restores_rows_changed_since(clean_documents: str, corpus) -> None:
    seed_documents(clean_documents, corpus, rows=100)
    conn = psycopg2.connect(clean_documents)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE public.documents SET body = 'edited' WHERE id = 7")
        cur.execute("DELETE FROM public.documents WHERE id = 9")
    conn.close()
    report = seed_documents(clean_documents, corpus, rows=100)
    assert (report.inserted, report.restored, report.unchanged) == (1, 1, 98)


def test_seed_refuses_more_rows_than_the_corpus(clean_documents: str, corpus) -> None:
    with pytest.raises(ValueError, match=f"the demo corpus has {len(corpus)} documents"):
        seed_documents(clean_documents, corpus, rows=len(corpus) + 1)


def test_load_applies_inserts_updates_and_deletes(clean_documents: str, corpus) -> None:
    seed_documents(clean_documents, corpus, rows=500)
    before = _table_state(clean_documents)
    report = apply_load(clean_documents, corpus, rate=400, seconds=0.5, seed=3)

    assert report.total == 200
    assert {"insert", "update", "touch", "delete"} <= set(report.changes)
    count_after = _table_state(clean_documents)[0]
    assert count_after == before[0] + report.changes["insert"] - report.changes["delete"]


@pytest.fixture
def cli_home(tmp_path: Path, corpus, shared_home: Path) -> Path:
    """A fresh SOPHIA_HOME that already holds the corpus cache (building it takes seconds)."""
    from tests.support.postgres import embedded

    shutil.copytree(shared_home / "cache", tmp_path / "cache")
    embedded(tmp_path)
    return tmp_path


def test_cli_seed_is_idempotent(cli_home: Path) -> None:
    env = {"SOPHIA_HOME": str(cli_home)}
    first = run_sophia("demo", "seed", "--rows", "300", env=env)
    second = run_sophia("demo", "seed", "--rows", "300", env=env)
    assert first.stdout.strip() == (
        "public.documents: 300 rows (300 inserted, 0 restored, 0 unchanged)"
    )
    assert second.stdout.strip() == (
        "public.documents: 300 rows (0 inserted, 0 restored, 300 unchanged)"
    )
    assert "seeding" in first.stderr  # the progress bar


def test_cli_rejects_bad_rows_with_the_fix(cli_home: Path) -> None:
    result = run_sophia(
        "demo", "seed", "--rows", "0", env={"SOPHIA_HOME": str(cli_home)}, check=False
    )
    assert result.returncode == 1
    assert "error: --rows 0: the demo corpus has" in result.stderr
