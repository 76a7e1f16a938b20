"""Each benchmark runs end to end on a small input and prints its figures as JSON on the last
line. Figures are never asserted: timings are not test assertions on these machines."""

from __future__ import annotations

import json

import pytest

from sophia_assets.postgres.urls import with_database
from tests.support.processes import run_bench

pytestmark = pytest.mark.slow

CASES = {
    "api": (
        ["--documents", "200", "--seconds", "1"],
        {"p99_ms_at", "max_rate_p99_under_200ms", "floor_rate"},
    ),
    "cdc": (
        ["--rows", "3000", "--rate", "200", "--seconds", "1"],
        {"floor_rows_per_s", "journal_rows_per_s", "ratio", "latency_p50_ms", "latency_p99_ms"},
    ),
    "embed": (
        ["--rows", "40", "--backends", "torch,onnx_fp32"],  # int8's guard: tests/test_onnx_int8
        {"raw_docs_per_s", "pipeline_docs_per_s", "ratio", "incremental_fraction"},
    ),
    "search": (["--documents", "200", "--queries", "50"], {"p50_ms", "p99_ms"}),
    "sensors": (
        ["--executions", "300", "--documents", "1000"],
        {"n8n_executions_per_s", "estuary_tick_s", "executions", "documents"},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_prints_its_figures_as_json(name: str, postgres_url: str) -> None:
    args, keys = CASES[name]
    result = run_bench(
        name,
        *args,
        "--json",
        env={"SOPHIA_POSTGRES_URL": with_database(postgres_url, "postgres")},
    )
    figures = json.loads(result.stdout.splitlines()[-1])
    assert keys <= set(figures), result.stderr[-2000:]
