"""Each benchmark runs end to end on a small input and prints its figures as JSON on the last
line. Figures are never asserted: timings are not test assertions on these machines."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from sophia_assets.postgres.urls import with_database
from tests.support.caches import place_corpus
from tests.support.postgres import superuser_password
from tests.support.processes import run_bench
from tests.support.secret_canaries import process_arguments

pytestmark = pytest.mark.slow

CASES = {
    "api": (
        ["--documents", "60", "--seconds", "1"],
        {"p99_ms_at", "max_rate_p99_under_200ms", "floor_rate"},
    ),
    "cdc": (
        ["--rows", "3000", "--rate", "200", "--seconds", "1", "--big-tx-rows", "3000"],
        {
            "floor_rows_per_s",
            "journal_rows_per_s",
            "ratio",
            "latency_p50_ms",
            "latency_p99_ms",
            "big_tx_documents",
            "peak_rss_mb",
            "metrics_on_ratio_to_off",
            "metrics_on_latency_p99_ms",
        },
    ),
    "embed": (
        # torch's and int8's paths have their own tests (test_embeddings, test_onnx_int8)
        ["--rows", "16", "--backends", "onnx_fp32"],
        {"raw_docs_per_s", "pipeline_docs_per_s", "ratio", "incremental_fraction"},
    ),
    "live": (
        # the burst's baseline loads torch (~40 s here): measured by hand, not in the suite
        ["--rates", "5", "--seconds", "1", "--burst", "0"],
        {
            "rate_per_s",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "floor_p50_ms",
            "max_rate_p99_under_100ms",
            "update_p99_ms",
            "delete_p99_ms",
        },
    ),
    "search": (["--documents", "200", "--queries", "50"], {"p50_ms", "p99_ms"}),
    "sensors": (
        ["--executions", "300", "--documents", "1000"],
        {"n8n_executions_per_s", "estuary_tick_s", "executions", "documents"},
    ),
}
# These read the demo corpus from SOPHIA_HOME/cache: given the session's copy, as a home where
# it was built before holds it, each need not parse every installed docstring again (~15 s).
READ_THE_CORPUS = {"api", "embed", "live", "search"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_prints_its_figures_as_json(
    name: str, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    args, keys = CASES[name]
    if name in READ_THE_CORPUS:
        place_corpus(request.getfixturevalue("corpus_file"), Path(os.environ["SOPHIA_HOME"]))
    url, password = _with_inline_password(with_database(postgres_url, "postgres"))
    with process_arguments() as arguments:
        result = run_bench(name, *args, "--json", env={"SOPHIA_POSTGRES_URL": url})
    figures = json.loads(result.stdout.splitlines()[-1])
    assert keys <= set(figures), result.stderr[-2000:]
    if name == "cdc":  # the large transaction is journaled exactly once
        assert figures["big_tx_documents"] == 3000
    # the benches hand the password to their children (writers, pg_recvlogical, servers)
    # through the environment, never their arguments, and never print it
    assert not [command for command in arguments if password in command]
    assert password not in result.stdout + result.stderr


def _with_inline_password(url: str) -> tuple[str, str]:
    """The embedded server's URL with the superuser's password in it, as an external
    server's URL would carry one."""
    password = superuser_password(url)
    parts = urlsplit(url)
    netloc = f"postgres:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, query="")), password
