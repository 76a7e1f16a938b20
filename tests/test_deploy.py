"""The production instance configs under deploy/ build real Dagster instances (schema
validation alone misses wrong module paths): Postgres storage against the embedded server, the
queued coordinator's limits, the Docker and Kubernetes run launchers; and the Helm values agree
with them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_docker import DockerRunLauncher
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresRunStorage

from tests.support.cdc import drop_database, new_database
from tests.support.paths import REPO
from tests.support.postgres import superuser_password

VARIANTS = REPO / "deploy" / "instance"
LIMITS = [
    {"key": "sophia/runner", "value": "gpu", "limit": 1},
    {"key": "sophia/capture", "limit": 1},
]


@pytest.fixture
def storage_env(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """DAGSTER_PG_* pointing at a fresh database on the embedded server."""
    url = new_database(postgres_url)
    parts = urlsplit(url)
    for name, value in {
        "DAGSTER_PG_HOST": parts.hostname,
        "DAGSTER_PG_PORT": str(parts.port),
        "DAGSTER_PG_USERNAME": parts.username,
        "DAGSTER_PG_PASSWORD": superuser_password(url),
        "DAGSTER_PG_DB": parts.path.lstrip("/"),
    }.items():
        monkeypatch.setenv(name, value)
    yield url
    drop_database(url)


def _instance(variant: str, home: Path) -> dg.DagsterInstance:
    ref = InstanceRef.from_dir(str(home), config_dir=str(VARIANTS / variant))
    return dg.DagsterInstance.from_ref(ref)


@dg.asset
def probe() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"written_by": "test_deploy"})


def test_every_variant_is_tested() -> None:
    assert sorted(p.name for p in VARIANTS.iterdir()) == ["docker", "k8s", "postgres"]


@pytest.mark.parametrize("variant", ["postgres", "docker", "k8s"])
def test_variant_shares_storage_queue_and_retries(
    variant: str, storage_env: str, kubeconfig: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SOPHIA_CODE_LOCATION_IMAGE", "acme/sophia-code-location:abc")
    monkeypatch.setenv("SOPHIA_DOCKER_NETWORK", "sophia")
    with _instance(variant, tmp_path / "home") as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.run_coordinator.get_run_queue_config()
        assert queue.tag_concurrency_limits == LIMITS
        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1


def test_postgres_storage_really_keeps_runs_and_events(storage_env: str, tmp_path: Path) -> None:
    with _instance("postgres", tmp_path / "writer") as instance:
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        run_id = dg.materialize([probe], instance=instance).run_id
    # A second instance from the same config (another process would do the same) sees it.
    with _instance("postgres", tmp_path / "reader") as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(dg.AssetKey("probe"))
        assert event.run_id == run_id
        assert event.asset_materialization.metadata["written_by"].value == "test_deploy"


def test_docker_variant_launches_runs_in_the_code_location_image(
    storage_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOPHIA_CODE_LOCATION_IMAGE", "acme/sophia-code-location:abc@sha256:00")
    monkeypatch.setenv("SOPHIA_DOCKER_NETWORK", "sophia")
    with _instance("docker", tmp_path / "home") as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, DockerRunLauncher)
        assert launcher.image == "acme/sophia-code-location:abc@sha256:00"
        assert launcher.networks == ["sophia"]
        assert "DAGSTER_PG_PASSWORD" in launcher.env_vars
        assert launcher.container_kwargs["user"] == "10001:10001"


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KUBECONFIG for the K8s variant. The kubernetes client reads KUBECONFIG once, at import
    (a daemon started with it set sees it there), so the module's copy is set as well."""
    from kubernetes.config import kube_config

    path = _kubeconfig(tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


def _kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "test-token"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


def test_k8s_variant_launches_runs_as_jobs_in_the_namespace(
    storage_env: str, kubeconfig: Path, tmp_path: Path
) -> None:
    import kubernetes

    with _instance("k8s", tmp_path / "home") as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.job_namespace == "sophia"
        assert launcher.env_secrets == ["sophia-platform"]
    # the launcher loaded the kubeconfig from the environment
    host = kubernetes.client.Configuration.get_default_copy().host
    assert host == "https://127.0.0.1:6443"


def test_helm_values_agree_with_the_instance_and_workspace() -> None:
    values = yaml.safe_load((REPO / "deploy/helm/values.yaml").read_text())
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    assert coordinator["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"] == LIMITS
    root = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert root["run_queue"]["tag_concurrency_limits"] == LIMITS
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    assert values["postgresql"]["enabled"] is False


def test_github_workflow_runs_ci_and_builds_every_image() -> None:
    from sophia_assets.images.config import load_images

    workflow = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    test_steps = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    assert "bash .ci/run" in test_steps
    build = workflow["jobs"]["images"]["steps"][-1]["run"]
    selected = build.split("--select", 1)[1].strip().strip("'").split(",")
    assert sorted(selected) == sorted(f"images/{i.name}" for i in load_images())
    assert workflow["jobs"]["images"]["if"].endswith("refs/heads/main'")
