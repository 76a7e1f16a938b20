"""The root dagster.yaml builds a real instance, and what the main command ran stays in it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator

from tests.support.caches import place_corpus
from tests.support.paths import REPO
from tests.support.postgres import embedded
from tests.support.processes import run_sophia
from tests.support.secret_canaries import canaries, files_holding, process_arguments

pytestmark = pytest.mark.slow


def _instance_in(cwd: Path, monkeypatch) -> dg.DagsterInstance:
    monkeypatch.chdir(cwd)
    return dg.DagsterInstance.from_ref(
        InstanceRef.from_dir(str(cwd / "ephemeral-home"), config_dir=str(REPO))
    )


def test_root_dagster_yaml_builds_a_persistent_instance(tmp_path: Path, monkeypatch) -> None:
    with _instance_in(tmp_path, monkeypatch) as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
        assert {"key": "sophia/runner", "value": "gpu", "limit": 1} in limits
        assert not instance.is_ephemeral
    # storage lands under .sophia/dagster of the working directory, not the throwaway home
    assert (tmp_path / ".sophia/dagster/storage/history/runs.db").exists()
    assert not (tmp_path / "ephemeral-home/history").exists()


def test_main_command_run_is_visible_afterwards(
    tmp_path: Path, monkeypatch, corpus_file: Path
) -> None:
    server = embedded(tmp_path / ".sophia")
    place_corpus(corpus_file, tmp_path / ".sophia")  # built before: the demo seed reads it
    planted = canaries()  # every secret variable set, though the local run needs none
    env = {"SOPHIA_HOME": str(tmp_path / ".sophia"), **planted}
    with process_arguments() as arguments:
        result = run_sophia("demo", "run", "--rows", "200", cwd=tmp_path, env=env)
    # No secret reaches a log, the instance's storage, compute logs, the output or `ps`:
    # the canaries, and the superuser's generated password (everything used it).
    planted["superuser password"] = server.passfile.read_text().strip().rsplit(":", 1)[1]
    assert files_holding(tmp_path, planted, skip={server.passfile}) == []
    for name, value in planted.items():
        assert value not in result.stdout + result.stderr, name
        assert not any(value in command for command in arguments), name
    assert any("demo run" in command for command in arguments)  # the watcher saw the run
    assert "public.documents {'rows': 200, 'inserted': 200" in result.stdout
    assert "sophia/postgresql_cdc {'documents': 200" in result.stdout
    assert "sophia/vector_updates {'embedded_documents': 200" in result.stdout
    # The search for document 1's first sentence finds document 1 first.
    assert "  1. [" in result.stdout and result.stdout.split("  1. [")[1].split("\n")[0].endswith(
        "(id 1)"
    )

    # The instance lives under SOPHIA_HOME; `dagster dev` in the working directory (root
    # dagster.yaml) and DAGSTER_HOME=$SOPHIA_HOME/dagster both see what the command ran.
    assert (tmp_path / ".sophia/dagster/dagster.yaml").exists()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".sophia/dagster"))
    with dg.DagsterInstance.get() as instance:
        assert [r.job_name for r in reversed(instance.get_runs())] == ["demo_seed_job", "main"]
    monkeypatch.delenv("DAGSTER_HOME")
    with _instance_in(tmp_path, monkeypatch) as instance:
        runs = instance.get_runs()
        assert [(r.job_name, r.status) for r in reversed(runs)] == [
            ("demo_seed_job", dg.DagsterRunStatus.SUCCESS),
            ("main", dg.DagsterRunStatus.SUCCESS),
        ]
        seeded = instance.get_latest_materialization_event(
            dg.AssetKey(["postgres", "public", "documents"])
        )
        assert seeded.asset_materialization.metadata["rows"].value == 200
        captured = instance.get_latest_materialization_event(
            dg.AssetKey(["sophia", "postgresql_cdc"])
        )
        assert captured.asset_materialization.metadata["documents"].value == 200
