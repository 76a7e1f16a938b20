"""The Lambda Cloud client and the rented-instance session against a loopback server that
follows `tests/contracts/lambda-cloud-api-1.8.3.json` (every request and response validated),
on a virtual clock the client and the server share: waits cost no real time, and the rate
limits are measured on the server's clock."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sophia_assets.gpu.lambda_api import (
    InsufficientCapacity,
    InvalidRequest,
    LambdaCloud,
    NotFound,
    QuotaExceeded,
    Unauthorized,
)
from sophia_assets.gpu.session import Choice, InstanceNotActive, LambdaSession, NoCapacity
from tests.support.contract_servers.lambda_cloud import (
    API_KEY,
    LambdaCloudContractServer,
    VirtualClock,
)

A10_EAST, A10_WEST = ("gpu_1x_a10", "us-east-1"), ("gpu_1x_a10", "us-west-1")
A100_EAST, A100_WEST = ("gpu_1x_a100", "us-east-1"), ("gpu_1x_a100", "us-west-1")
CHOICES = [Choice(*c) for c in (A10_EAST, A10_WEST, A100_EAST, A100_WEST)]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def _server(clock: VirtualClock, **kwargs) -> LambdaCloudContractServer:
    server = LambdaCloudContractServer(clock=clock, **kwargs)
    server.add_ssh_key("sophia-embedding", "ssh-ed25519 AAAAC3Nza test")
    return server


def _session(server, clock, tmp_path: Path, choices=CHOICES, **kwargs) -> LambdaSession:
    return LambdaSession(
        LambdaCloud(API_KEY, server.url, clock=clock),
        choices,
        ssh_key_name="sophia-embedding",
        ssh_user="ubuntu",
        ssh_key_path=tmp_path / "key",
        known_hosts=tmp_path / "known_hosts",
        run_id="0123456789abcdef",
        log=lambda message: None,
        **kwargs,
    )


def test_client_speaks_the_contract_through_an_instance_lifecycle(clock, tmp_path) -> None:
    with _server(clock) as server:
        client = LambdaCloud(API_KEY, server.url, clock=clock)
        types = {t.name: t for t in client.instance_types()}
        assert types["gpu_1x_a10"].regions_with_capacity == ("us-east-1",)
        assert types["gpu_1x_a10"].price_cents_per_hour == 75
        instance_id = client.launch(
            "us-east-1", "gpu_1x_a10", "sophia-embedding", "n", {"sophia": "embedding"}
        )
        booting = client.instance(instance_id)
        assert (booting.status, booting.ip, booting.tags) == (
            "booting",
            None,
            {"sophia": "embedding"},
        )
        clock.sleep(5)
        active = client.instance(instance_id)
        assert (active.status, active.ip) == ("active", "127.0.0.1")
        assert [i.id for i in client.instances()] == [instance_id]
        assert client.terminate([instance_id])[0].status == "terminating"
        clock.sleep(2)
        assert client.instance(instance_id).status == "terminated"
        assert server.fleet[instance_id].history == [
            "booting",
            "active",
            "terminating",
            "terminated",
        ]
        assert [k.name for k in client.ssh_keys()] == ["sophia-embedding"]
        assert client.add_ssh_key("second", "ssh-ed25519 AAAA other").name == "second"
        assert server.live() == []
    assert server.violations == []


@pytest.mark.parametrize(
    ("call", "error", "code"),
    [
        (lambda c: c.instance("f" * 32), NotFound, "global/object-does-not-exist"),
        (
            lambda c: c.launch("us-east-1", "gpu_1x_a10", "no-such-key", "n", {}),
            InvalidRequest,
            "global/invalid-parameters",
        ),
        (
            lambda c: c.launch("us-west-1", "gpu_1x_a100", "sophia-embedding", "n", {}),
            InsufficientCapacity,
            "instance-operations/launch/insufficient-capacity",
        ),
    ],
    ids=["not found", "invalid request", "insufficient capacity"],
)
def test_error_envelopes_become_typed_errors(clock, call, error, code) -> None:
    with _server(clock) as server:
        with pytest.raises(error) as raised:
            call(LambdaCloud(API_KEY, server.url, clock=clock))
        assert raised.value.code == code
    assert server.violations == []


def test_quota_and_a_rejected_key_are_typed_and_the_key_is_never_echoed(clock) -> None:
    with _server(clock, quota=1) as server:
        client = LambdaCloud(API_KEY, server.url, clock=clock)
        client.launch("us-east-1", "gpu_1x_a10", "sophia-embedding", "n", {})
        with pytest.raises(QuotaExceeded):
            client.launch("us-east-1", "gpu_1x_a10", "sophia-embedding", "n", {})
        with pytest.raises(Unauthorized) as raised:
            LambdaCloud("wrong-secret-key", server.url, clock=clock).instances()
        assert "SOPHIA_LAMBDA_API_KEY" in str(raised.value)
        assert "wrong-secret-key" not in str(raised.value)
    assert server.violations == []


def test_requests_are_paced_to_one_per_second_and_launches_to_one_per_12_s(clock) -> None:
    capacity = {A10_EAST: 3}
    with _server(clock, capacity=capacity) as server:
        client = LambdaCloud(API_KEY, server.url, clock=clock)
        for _ in range(3):
            client.launch("us-east-1", "gpu_1x_a10", "sophia-embedding", "n", {})
            client.instances()
        gaps = [b - a for a, b in zip(server.request_times, server.request_times[1:], strict=False)]
        assert min(gaps) >= 1.0
        assert server.launch_gaps() == [12.0, 12.0]  # as soon as allowed, never sooner
    assert server.violations == []


def test_capacity_falls_back_across_types_and_regions(clock, tmp_path) -> None:
    # a10 has no room anywhere; a100 is listed in us-east-1 but gone by launch (a race)
    capacity = {A100_WEST: 1}
    with _server(clock, capacity=capacity, phantom={A100_EAST}) as server:
        session = _session(server, clock, tmp_path)
        session._launch()
        assert (session.figures.instance_type, session.figures.region) == A100_WEST
        assert session.figures.tried == [
            "gpu_1x_a10@us-east-1: no capacity listed",
            "gpu_1x_a10@us-west-1: no capacity listed",
            "gpu_1x_a100@us-east-1: insufficient capacity at launch",
            f"gpu_1x_a100@us-west-1: launched {session.figures.instance_id}",
        ]
        assert [o for *_, o in server.launches][0] == "no-capacity"
        assert server.launch_gaps() == [12.0]  # the failed launch counted
        session.close()
        assert server.live() == []
    assert server.violations == []


def test_no_capacity_anywhere_lists_what_was_tried(clock, tmp_path) -> None:
    with _server(clock, capacity={}) as server:
        with pytest.raises(NoCapacity) as raised, _session(server, clock, tmp_path):
            pass
        for choice in CHOICES:
            assert f"{choice}: no capacity listed" in str(raised.value)
        assert server.launches == [] and server.live() == []
    assert server.violations == []


def test_an_instance_that_never_becomes_active_is_terminated(clock, tmp_path) -> None:
    with _server(clock, boot_s=None) as server:
        started = clock.monotonic()
        with (
            pytest.raises(InstanceNotActive, match="still booting after 900 s"),
            _session(server, clock, tmp_path, active_timeout_s=900),
        ):
            pass
        assert clock.monotonic() - started >= 900  # it waited the whole timeout first
        assert server.live() == []
        [instance] = server.fleet.values()
        assert instance.history == ["booting", "terminating", "terminated"]
    assert server.violations == []


def test_session_terminates_even_when_interrupted_while_terminating(clock, tmp_path) -> None:
    with _server(clock) as server:
        session = _session(server, clock, tmp_path)
        session._launch()
        original_sleep = clock.sleep
        interrupts = iter([KeyboardInterrupt()])

        def interrupted_sleep(seconds: float) -> None:
            original_sleep(seconds)
            if session.figures.instance_id and server.fleet[session.figures.instance_id].status:
                error = next(interrupts, None)
                if error:
                    raise error

        clock.sleep = interrupted_sleep
        with pytest.raises(KeyboardInterrupt):
            session.close()  # the interrupt is held until the instance is gone
        assert server.live() == []
        assert session.figures.terminated_at is not None
    assert server.violations == []


@pytest.mark.parametrize("lost_as", ["drop", "502"])
def test_an_unanswered_launch_is_adopted_never_repeated(clock, tmp_path, lost_as) -> None:
    with _server(clock, lose_launch_answers=1, lose_as=lost_as) as server:
        session = _session(server, clock, tmp_path)
        session._launch()
        [created] = server.fleet.values()
        assert len(server.launches) == 1  # the lost answer was not answered by a second launch
        assert session.figures.instance_id == created.id
        assert session.figures.tried == [
            f"gpu_1x_a10@us-east-1: launch unanswered, adopted {created.id}"
        ]
        session._wait_active()
        session.close()
        assert server.live() == []
    assert server.violations == []


def test_an_instance_that_shows_up_late_after_a_lost_launch_is_terminated(clock, tmp_path) -> None:
    capacity = {A10_EAST: 1, A10_WEST: 1}
    with _server(clock, capacity=capacity, lose_launch_answers=1) as server:
        server.listed_after_s = 30.0  # longer than the session keeps looking
        session = _session(server, clock, tmp_path)
        session._launch()
        first, second = server.fleet.values()
        assert session.figures.instance_id == second.id  # it moved on to the next choice
        assert "gpu_1x_a10@us-east-1: launch unanswered, no instance found" in session.figures.tried
        session._wait_active()
        clock.sleep(30)
        session.close()  # sweeps the run's instances: the first one is listed by now
        assert first.status == "terminating"
        clock.sleep(5)  # the server's clock: termination takes a second there
        assert server.live() == []
        assert first.history[-2:] == ["terminating", "terminated"]
    assert server.violations == []


def test_each_instance_gets_its_own_host_key_pinned_for_its_address(clock, tmp_path) -> None:
    with _server(clock) as server:
        session = _session(server, clock, tmp_path, firewall_rulesets=["fw-ssh-from-runner"])
        session._launch()
        session._wait_active()
        [launched] = server.fleet.values()
        cloud_config = yaml.safe_load(launched.user_data)
        public = cloud_config["ssh_keys"]["ed25519_public"]
        assert cloud_config["ssh_deletekeys"] is True  # the image's own keys go
        assert "PRIVATE KEY" in cloud_config["ssh_keys"]["ed25519_private"]
        assert (tmp_path / "known_hosts").read_text().split() == ["127.0.0.1", *public.split()[:2]]
        assert "StrictHostKeyChecking=yes" in session.target.command("true")
        assert launched.firewall_rulesets == ["fw-ssh-from-runner"]
        assert launched.tags["sophia-deployment"] == "default"
        session.close()
        other = _session(server, clock, tmp_path / "other")
        (tmp_path / "other").mkdir()
        clock.sleep(12)  # another client: the account's launch limit still holds
        other._launch()
        assert server.fleet[other.figures.instance_id].user_data != launched.user_data
        other.close()
    assert server.violations == []


def test_janitor_terminates_exactly_the_instances_no_live_run_owns(clock, monkeypatch) -> None:
    import json
    import time

    import dagster as dg
    from dagster._core.test_utils import create_run_for_test

    from resources.gpu_runner import LambdaGpuRunner
    from resources.pushgateway import PushgatewayResource
    from sensors.lambda_janitor import build_janitor_sensor
    from tests.support.contract_servers.pushgateway import LoopbackPushgateway

    now = time.time()
    started = dg.DagsterRunStatus.STARTED
    with _server(clock, capacity={A10_EAST: 10}) as server, dg.instance_for_test() as instance:
        client = LambdaCloud(API_KEY, server.url, clock=clock)

        def rent(name: str, status=None, beat=None, ours=True, deployment="default", uses=None):
            run_id = None
            if status is not None:
                tags = {"sophia/lambda_heartbeat": str(int(beat))} if beat else {}
                tags |= {"sophia/lambda_instance": uses} if uses else {}
                run_id = create_run_for_test(instance, status=status, tags=tags).run_id
            tags = {
                "sophia": "embedding",
                "dagster-run": run_id or "f" * 36,
                "sophia-deployment": deployment,
            }
            return client.launch(
                "us-east-1", "gpu_1x_a10", "sophia-embedding", name, tags if ours else {}
            )

        expected = {
            rent("finished", dg.DagsterRunStatus.SUCCESS, now): "is SUCCESS",
            rent("silent", started, now - 1200): "but silent for 120",
            rent("unknown-run"): "is unknown here",
            rent("too-old", started, now): "maximum age",
            rent("duplicate", started, now - 60, uses="0" * 32): f"uses {'0' * 32}",
        }
        kept = [
            rent("alive", started, now - 60),
            rent("not-ours", ours=False),
            rent("another-deployment", dg.DagsterRunStatus.SUCCESS, now, deployment="staging"),
        ]
        too_old = next(k for k, v in expected.items() if v == "maximum age")
        cursor = {i: now - 300 for i in [*expected, *kept]}  # all first seen 5 minutes ago
        cursor[too_old] = now - 7 * 3600

        monkeypatch.setenv("SOPHIA_LAMBDA_API_KEY", API_KEY)
        sensor = build_janitor_sensor(now=lambda: now)
        with LoopbackPushgateway() as gateway:
            monkeypatch.setenv("SOPHIA_PUSHGATEWAY_URL", gateway.url)
            context = dg.build_sensor_context(
                instance=instance,
                cursor=json.dumps(cursor),
                resources={
                    "gpu_runner": LambdaGpuRunner(api_url=server.url),
                    "pushgateway": PushgatewayResource(),
                },
            )
            result = sensor.evaluate_tick(context)
        # The tick's figures, for the GPU alerts: the default deployment's instances it saw
        # (not another deployment's, nor untagged ones) and how many it terminated.
        pushed = gateway.values({"job": "sophia-gpu-janitor", "deployment": "default"})
        assert pushed["sophia_gpu_janitor_terminated_instances"] == len(expected)
        assert pushed["sophia_gpu_janitor_instances"] == len(expected) + 1
        assert pushed["sophia_gpu_janitor_last_tick_timestamp_seconds"] == now
        reasons = {
            e.metadata["instance_id"].value: e.metadata["reason"].value for e in result.asset_events
        }
        assert set(reasons) == set(expected)
        for instance_id, fragment in expected.items():
            assert fragment in reasons[instance_id]
        for instance_id in expected:
            assert server.fleet[instance_id].status == "terminating"
        for instance_id in kept:
            assert server.fleet[instance_id].status in ("booting", "active")
    assert server.violations == []
