"""The layers stay visible: import-linter's contracts (pyproject.toml) pass on the tree, and
they do fail when an engine imports the Dagster glue."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO

PACKAGES = ("sophia_assets", "resources", "sensors", "infra", "bench", "tests")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy_of_the_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root)
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return root


def test_the_tree_keeps_its_layers() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_engine_importing_a_resource_breaks_the_rule(tmp_path: Path) -> None:
    root = _copy_of_the_tree(tmp_path)
    engine = root / "sophia_assets" / "embedding" / "index_sync.py"
    engine.write_text(engine.read_text() + "\nfrom resources.postgres import PostgresResource\n")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "sophia_assets.embedding.index_sync -> resources.postgres" in result.stdout


def test_the_package_importing_a_test_double_breaks_the_rule(tmp_path: Path) -> None:
    root = _copy_of_the_tree(tmp_path)
    engine = root / "sophia_assets" / "vectors" / "pinecone.py"
    engine.write_text(engine.read_text() + "\nimport tests.support.contract_servers.pinecone\n")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "sophia_assets.vectors.pinecone -> tests.support.contract_servers.pinecone" in (
        result.stdout
    )
