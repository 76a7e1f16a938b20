"""The `sophia` command line: its page matches its parser, its help lists every verb, and a
wrong verb is refused by name."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from sophia_assets.cli import parser
from sophia_assets.cli.reference import REGENERATE, markdown, verbs
from tests.support.paths import REPO
from tests.support.processes import run_python, run_sophia

# Written out rather than read from the parser: losing a verb must fail here. `search` is a
# verb itself; the benchmarks are `python -m bench.<name>`, not verbs.
VERBS = {
    "demo": ["seed", "load", "run"],
    "postgres": ["start", "stop", "status", "url"],
    "flow": ["drain", "serve", "read", "quarantine"],
    "search": [],
    "api": ["serve"],
    "catalog": ["validate"],
    "db": ["roles", "rotate"],
    "images": ["list", "check"],
}


def test_the_page_is_the_parser_written_out() -> None:
    page = (REPO / "docs" / "cli.md").read_text()
    assert page == markdown(), f"docs/cli.md is out of date; run `{REGENERATE}`"
    assert REGENERATE in page.splitlines()[0]


def test_the_regeneration_command_prints_the_page() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "sophia_assets.cli.reference"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == markdown()


def test_the_parser_has_exactly_these_verbs() -> None:
    groups = {name: [verb for verb, _, _ in verbs(group)] for name, _, group in verbs(parser())}
    assert groups == VERBS


def test_help_lists_every_group() -> None:
    listed = run_sophia("--help").stdout
    for group in VERBS:
        assert re.search(rf"^\s+{group}\b", listed, re.M), f"{group} not in sophia --help"
    assert "bench" not in listed


@pytest.mark.parametrize("group", [g for g, names in VERBS.items() if names])
def test_group_help_lists_its_verbs(group: str) -> None:
    listed = run_sophia(group, "--help").stdout
    for verb in VERBS[group]:
        assert re.search(rf"^\s+{verb}\b", listed, re.M), f"{verb} not in sophia {group} --help"


def test_search_help_lists_its_flags() -> None:
    listed = run_sophia("search", "--help").stdout
    for flag in ("text", "--top-k", "--json"):
        assert flag in listed


def test_help_imports_nothing_heavy() -> None:
    """Handlers import Dagster, torch and the drivers themselves, so `--help` stays instant."""
    loaded = run_python(
        "import sys; from sophia_assets.cli import parser; parser().format_help();"
        "print(' '.join(sorted(sys.modules)))"
    ).stdout.split()
    heavy = {"dagster", "torch", "sentence_transformers", "psycopg2", "tqdm", "orjson"}
    assert heavy.isdisjoint(loaded)


@pytest.mark.parametrize("argv", [["nosuch"], ["demo", "nosuch"]])
def test_an_unknown_verb_is_refused_by_name(argv: list[str]) -> None:
    result = run_sophia(*argv, check=False)
    assert result.returncode != 0
    assert "invalid choice: 'nosuch'" in result.stderr
