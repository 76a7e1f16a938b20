"""GPU embedding runs through Dagster Pipes: locally, and on a 'rented' instance that is really
this machine: the loopback Lambda API (contract-validated) hands out 127.0.0.1, where the tests
run a real sshd with a generated key. Every case ends with the fleet empty."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import psutil
import pytest
import yaml

from resources.embedder import EmbedderResource
from resources.gpu_runner import LambdaGpuRunner, LocalGpuRunner
from resources.postgres import PostgresResource
from resources.pushgateway import PushgatewayResource
from sensors.lambda_janitor import GPU_INSTANCES, build_janitor_sensor
from sophia_assets.assets.embeddings import vector_updates_asset
from sophia_assets.catalog.translator import FlowTranslator
from sophia_assets.embedding.batch import read_vectors
from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path
from tests.support.cdc import catalog_copy, load, runner, sql
from tests.support.contract_servers.lambda_cloud import API_KEY, LambdaCloudContractServer
from tests.support.dagster_runs import step_failure
from tests.support.gpu_probe import OUTPUT_ENV, TEXTS, gpu_probe
from tests.support.paths import REPO
from tests.support.postgres import SOURCE_URL_ENV
from tests.support.secret_canaries import process_arguments
from tests.support.sshd import LoopbackSshd, SshdUnavailable

pytestmark = pytest.mark.slow


ENTRYPOINT = "sophia_assets.embedding.entrypoint"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    try:
        server = LoopbackSshd(tmp_path_factory.mktemp("sshd")).start()
    except SshdUnavailable as err:
        pytest.skip(f"no sshd for the SSH tests: {err}")
    yield server
    server.stop()


def _api(sshd: LoopbackSshd, monkeypatch: pytest.MonkeyPatch, **kwargs):
    """A loopback Lambda API, and the SOPHIA_LAMBDA_* settings that point the runner at it."""
    server = LambdaCloudContractServer(**{"boot_s": 0.3, "terminate_s": 0.2, **kwargs})
    server.add_ssh_key("sophia-embedding", (sshd.root / "client_key.pub").read_text())
    server.on_launch = lambda instance: sshd.apply_cloud_init(instance.user_data)
    for name, value in {
        "SOPHIA_LAMBDA_API_KEY": API_KEY,
        "SOPHIA_LAMBDA_URL": server.url,
        "SOPHIA_LAMBDA_SSH_KEY_PATH": str(sshd.client_key),
        "SOPHIA_LAMBDA_SSH_USER": sshd.user,
        "SOPHIA_LAMBDA_SSH_PORT": str(sshd.port),
        "SOPHIA_LAMBDA_REMOTE_PYTHON": sys.executable,  # the shipped code, this interpreter
        "SOPHIA_LAMBDA_POLL_S": "0.2",
        # Lambda's one request a second, paced by the client (test_lambda_cloud holds it to
        # that on a virtual clock), is not what these tests are about; the loopback API needs none.
        "SOPHIA_LAMBDA_REQUEST_INTERVAL_S": "0.02",
        "SOPHIA_LAMBDA_CHOICES": "gpu_1x_a10@us-east-1",
        "SOPHIA_LAMBDA_DEVICE": "cpu",
    }.items():
        monkeypatch.setenv(name, value)
    return server


@pytest.fixture
def lambda_api(sshd, monkeypatch: pytest.MonkeyPatch):
    with _api(sshd, monkeypatch) as server:
        yield server
    assert server.violations == [], server.violations[:3]


def _probe(instance, runner, **kwargs):
    return dg.materialize(
        [gpu_probe], instance=instance, resources={"gpu_runner": runner}, **kwargs
    )


def _logs(instance, run_id: str) -> str:
    return "\n".join(e.user_message for e in instance.all_logs(run_id))


def test_remote_vectors_equal_the_local_runners(lambda_api, tmp_path, monkeypatch) -> None:
    with dg.instance_for_test() as instance, process_arguments() as arguments:
        monkeypatch.setenv(OUTPUT_ENV, str(tmp_path / "remote.npz"))
        remote = _probe(instance, LambdaGpuRunner.from_environment())
        monkeypatch.setenv(OUTPUT_ENV, str(tmp_path / "local.npz"))
        local = _probe(instance, LocalGpuRunner(device="cpu"))
        logs = _logs(instance, remote.run_id)
        tags = instance.get_run_by_id(remote.run_id).tags
        events = "\n".join(str(event) for event in instance.all_logs(remote.run_id))
    # the Lambda key and the host key's private half stay out of the event log and of `ps`
    [rented] = lambda_api.fleet.values()
    private = yaml.safe_load(rented.user_data)["ssh_keys"]["ed25519_private"]
    for secret in (API_KEY, private.splitlines()[1]):
        assert secret not in events and secret not in str(tags)
        assert not any(secret in command for command in arguments)
    remote_vectors = read_vectors((tmp_path / "remote.npz").read_bytes())
    local_vectors = read_vectors((tmp_path / "local.npz").read_bytes())
    assert [len(v) for v in remote_vectors] == [1, 1, 0, 4, 1]  # the long one in 4 chunks
    assert remote_vectors == local_vectors  # the same code on the same device: identical

    [materialization] = remote.asset_materializations_for_node("gpu_probe")
    figures = {k: v.value for k, v in materialization.metadata.items()}
    assert figures["lambda/instance_type"] == "gpu_1x_a10"
    assert figures["lambda/region"] == "us-east-1"
    assert 0 < figures["lambda/launch_to_active_s"] < figures["lambda/launch_to_terminated_s"]
    assert figures["lambda/compute_s"] > 0
    assert figures["lambda/estimated_cost_usd"] == pytest.approx(
        figures["lambda/launch_to_terminated_s"] * 0.75 / 3600, abs=1e-4
    )
    assert figures["runner/device"] == "cpu" and figures["runner/documents_per_s"] > 0
    assert figures["runner/peak_memory_mb"] > 100
    assert local.asset_materializations_for_node("gpu_probe")[0].metadata["runner/device"]
    # the entrypoint's Pipes logs, from the other side of SSH, are in the run's own log
    assert "on cpu loaded in" in logs and f"{len(TEXTS)} documents" in logs
    assert tags["sophia/lambda_instance_type"] == "gpu_1x_a10"
    assert "sophia/lambda_heartbeat" in tags
    assert rented.history == ["booting", "active", "terminating", "terminated"]
    assert rented.tags == {
        "sophia": "embedding",
        "dagster-run": remote.run_id,
        "sophia-deployment": "default",
    }
    assert lambda_api.live() == []


def test_gpu_tagged_embedding_run_goes_through_lambda(
    lambda_api, source: str, tmp_path: Path
) -> None:
    catalog = load(catalog_copy(tmp_path))
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT n, 'title ' || n, "
        "'a document about topic ' || n FROM generate_series(1, 30) AS n",
    )
    runner(source, catalog).drain()
    card = ModelCard.read(default_model_path())
    specs = {s.key: s for s in FlowTranslator(catalog).build_specs()}
    asset = vector_updates_asset(
        catalog, specs[dg.AssetKey(["sophia", "vector_updates"])], card.version
    )
    postgres = PostgresResource(url_env=SOURCE_URL_ENV)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset],
            instance=instance,
            tags={"sophia/runner": "gpu"},
            resources={
                "postgres": postgres,
                "embedder": EmbedderResource(),
                "gpu_runner": LambdaGpuRunner.from_environment(),
            },
        )
        logs = _logs(instance, result.run_id)
    [materialization] = result.asset_materializations_for_node(asset.node_def.name)
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["embedded_documents"] == 30
    assert metadata["lambda/instance_type"] == "gpu_1x_a10"
    assert "embedding through LambdaGpuRunner" in logs and "on cpu loaded in" in logs
    assert lambda_api.live() == []
    stored = sql(
        source,
        "SELECT document->'vector' FROM flow.journal WHERE collection = 'sophia/vector_updates' "
        "AND document->>'embedding_id' = '7:0'",
    )
    expected = Embedder(card, device="cpu").embed_documents(["title 7\n\na document about topic 7"])
    np.testing.assert_allclose(stored[0][0], expected[0][0], rtol=0, atol=1e-6)


def test_a_failure_in_the_run_terminates_the_instance(lambda_api, monkeypatch) -> None:
    monkeypatch.setenv("SOPHIA_LAMBDA_DEVICE", "cuda:7")  # the remote entrypoint will refuse it
    with dg.instance_for_test() as instance:
        result = _probe(instance, LambdaGpuRunner.from_environment(), raise_on_error=False)
    assert not result.success
    message = step_failure(result)
    assert "entrypoint on" in message and "exited with 1" in message
    assert "cuda" in message.lower()
    assert len(lambda_api.fleet) == 1 and lambda_api.live() == []


def _remote_entrypoint(sshd: LoopbackSshd, timeout_s: float = 120) -> psutil.Process:
    """The entrypoint process running under our sshd, once it exists."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:  # sshd restarts with the launch's host key (cloud-init): its pid changes
            children = psutil.Process(sshd.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            try:
                if ENTRYPOINT in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)  # polling for a process to appear
    raise AssertionError("the entrypoint never started over SSH")


def test_an_ssh_drop_fails_the_run_and_terminates_the_instance(lambda_api, sshd) -> None:
    outcome = {}
    with dg.instance_for_test() as instance:
        worker = threading.Thread(
            target=lambda: outcome.update(
                result=_probe(instance, LambdaGpuRunner.from_environment(), raise_on_error=False)
            )
        )
        worker.start()
        _remote_entrypoint(sshd)
        assert sshd.drop_connections() >= 1
        worker.join(timeout=180)
    result = outcome["result"]
    assert not result.success
    assert "dropped while the entrypoint ran" in step_failure(result)
    assert lambda_api.live() == []


def test_a_host_presenting_another_key_fails_the_run_and_is_terminated(lambda_api, sshd) -> None:
    lambda_api.on_launch = lambda instance: None  # cloud-init never ran: sshd keeps its own key
    with dg.instance_for_test() as instance:
        result = _probe(instance, LambdaGpuRunner.from_environment(), raise_on_error=False)
    assert not result.success
    assert "presented a host key other than the one handed to it at launch" in step_failure(result)
    assert lambda_api.live() == []
    [rented] = lambda_api.fleet.values()
    assert rented.history[-2:] == ["terminating", "terminated"]


def test_the_heartbeat_goes_on_through_a_long_remote_set_up(sshd, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "set-up-started"
    with _api(sshd, monkeypatch) as server, dg.instance_for_test() as instance:
        monkeypatch.setenv("SOPHIA_LAMBDA_SETUP", f"touch {marker} && sleep 4")
        monkeypatch.setenv("SOPHIA_LAMBDA_HEARTBEAT_S", "0.5")
        runner = LambdaGpuRunner.from_environment()
        outcome = {}
        worker = threading.Thread(target=lambda: outcome.update(result=_probe(instance, runner)))
        worker.start()
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the set-up to begin
        [run] = instance.get_runs()
        janitor = build_janitor_sensor(heartbeat_timeout_s=2.0)
        resources = {"gpu_runner": runner, "pushgateway": PushgatewayResource()}
        while marker.stat().st_mtime + 3 > time.time():
            time.sleep(0.1)  # until the set-up has been silent for longer than the timeout
        tick = janitor.evaluate_tick(
            dg.build_sensor_context(instance=instance, resources=resources)
        )
        worker.join(timeout=180)
        assert tick.asset_events == [], [e.metadata["reason"] for e in tick.asset_events]
        assert outcome["result"].success
        assert server.live() == []
        assert run.run_id == outcome["result"].run_id
    assert server.violations == []


def test_an_instance_never_active_is_terminated_at_the_timeout(sshd, monkeypatch) -> None:
    with _api(sshd, monkeypatch, boot_s=None) as server:
        monkeypatch.setenv("SOPHIA_LAMBDA_ACTIVE_TIMEOUT_S", "1")
        runner = LambdaGpuRunner.from_environment()
        with dg.instance_for_test() as instance:
            result = _probe(instance, runner, raise_on_error=False)
            tags = instance.get_run_by_id(result.run_id).tags
        assert "still booting after 1 s; giving it up" in step_failure(result)
        assert server.live() == []
        assert tags["sophia/lambda_instance_type"] == "gpu_1x_a10"  # what it cost is reported
    assert server.violations == []


def test_no_capacity_fails_with_what_was_tried_or_falls_back_to_local(sshd, monkeypatch) -> None:
    with _api(sshd, monkeypatch, capacity={}) as server, dg.instance_for_test() as instance:
        monkeypatch.setenv("SOPHIA_LAMBDA_CHOICES", "gpu_1x_a10@us-east-1,gpu_1x_a100@us-west-1")
        failed = _probe(instance, LambdaGpuRunner.from_environment(), raise_on_error=False)
        assert (
            "no Lambda Cloud capacity; tried gpu_1x_a10@us-east-1: no capacity listed; "
            "gpu_1x_a100@us-west-1: no capacity listed" in step_failure(failed)
        )
        monkeypatch.setenv("SOPHIA_LAMBDA_FALLBACK_LOCAL", "true")
        fallback = _probe(instance, LambdaGpuRunner.from_environment())
        assert "falling back to the local runner" in _logs(instance, fallback.run_id)
        [materialization] = fallback.asset_materializations_for_node("gpu_probe")
        assert materialization.metadata["runner/device"].value == "cpu"
        assert server.launches == [] and server.live() == []
    assert server.violations == []


# -- interrupted and killed run workers ---------------------------------------------------------


def _job_process(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "job",
            "execute",
            "-f",
            str(REPO / "tests" / "support" / "gpu_probe.py"),
            "-j",
            "gpu_probe_job",
        ],
        cwd=REPO,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a run worker has
    )
    return process, home


def _wait_until_empty(server: LambdaCloudContractServer, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while server.live() and time.monotonic() < deadline:
        time.sleep(0.1)  # terminating -> terminated on the server's clock


def test_a_cancelled_run_sigterm_terminates_the_instance(lambda_api, sshd, tmp_path) -> None:
    process, home = _job_process(tmp_path)
    _remote_entrypoint(sshd)
    assert len(lambda_api.live()) == 1
    process.send_signal(signal.SIGTERM)  # what cancelling a run does to its worker
    output, _ = process.communicate(timeout=180)
    assert process.returncode != 0
    assert lambda_api.live() == [], output[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
        assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
        assert f"terminating {next(iter(lambda_api.fleet))}" in _logs(instance, run.run_id)


def test_a_killed_run_worker_is_cleaned_up_by_the_janitor(lambda_api, sshd, tmp_path) -> None:
    process, home = _job_process(tmp_path)
    _remote_entrypoint(sshd)
    os.killpg(process.pid, signal.SIGKILL)  # no finally runs
    process.communicate(timeout=60)
    [leaked] = lambda_api.live()

    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED  # nobody recorded its death
        resources = {
            "gpu_runner": LambdaGpuRunner.from_environment(),
            "pushgateway": PushgatewayResource(),
        }
        now = time.time()
        fresh = build_janitor_sensor(now=lambda: now)
        context = dg.build_sensor_context(instance=instance, resources=resources)
        assert fresh.evaluate_tick(context).asset_events == []  # its heartbeat is recent

        later = build_janitor_sensor(now=lambda: now + 3600)  # an hour without a heartbeat
        context = dg.build_sensor_context(instance=instance, resources=resources)
        result = later.evaluate_tick(context)
    [event] = result.asset_events
    assert event.asset_key == GPU_INSTANCES
    assert event.metadata["instance_id"].value == leaked.id
    assert event.metadata["run_id"].value == run.run_id
    assert "silent for" in event.metadata["reason"].value
    _wait_until_empty(lambda_api)
    assert lambda_api.live() == []
