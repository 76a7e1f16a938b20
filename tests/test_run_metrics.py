"""The data-path jobs' success hook: each asset step's figures go to the Pushgateway when
one is set (a loopback gateway here), nothing is pushed otherwise, and a gateway that is
down never fails the run."""

from __future__ import annotations

import socket

import dagster as dg
import pytest

from resources.pushgateway import PushgatewayResource
from sophia_assets.jobs.run_metrics import run_metrics_hook
from tests.support.contract_servers.pushgateway import LoopbackPushgateway

COLLECTION = dg.AssetSpec(["sophia", "postgresql_cdc"])
UPDATES = dg.AssetSpec(["sophia", "vector_updates"], deps=[COLLECTION])


@dg.multi_asset(name="capture", specs=[COLLECTION])
def capture():
    yield dg.MaterializeResult(
        asset_key=COLLECTION.key, metadata={"documents": 42, "commit_lsn": "0/16B3748"}
    )


@dg.multi_asset(name="embed", specs=[UPDATES])
def embed():
    yield dg.MaterializeResult(
        asset_key=UPDATES.key,
        metadata={"source_documents": 40, "documents_per_s": 17.5, "model": "m@1"},
    )


def _run() -> dg.ExecuteInProcessResult:
    job = dg.define_asset_job("main", hooks={run_metrics_hook([capture, embed])})
    defs = dg.Definitions(
        assets=[capture, embed], jobs=[job], resources={"pushgateway": PushgatewayResource()}
    )
    return defs.resolve_job_def("main").execute_in_process()


def test_each_step_pushes_its_figures_to_a_group_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with LoopbackPushgateway() as gateway:
        monkeypatch.setenv("SOPHIA_PUSHGATEWAY_URL", gateway.url)
        assert _run().success
    captured = gateway.values(
        {"job": "sophia-runs", "dagster_job": "main", "asset": "sophia/postgresql_cdc"}
    )
    embedded = gateway.values(
        {"job": "sophia-runs", "dagster_job": "main", "asset": "sophia/vector_updates"}
    )
    assert captured["sophia_run_documents"] == 42
    assert "sophia_run_documents_per_second" not in captured  # a capture reports no rate
    assert embedded["sophia_run_documents"] == 40
    assert embedded["sophia_run_documents_per_second"] == 17.5
    assert embedded["sophia_run_last_success_timestamp_seconds"] > 1.7e9
    # Each push replaced its group whole (PUT), so a later run leaves no stale figure.
    assert {method for method, _ in gateway.requests} == {"PUT"}


def test_nothing_is_pushed_without_a_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOPHIA_PUSHGATEWAY_URL", raising=False)
    with LoopbackPushgateway() as gateway:
        assert _run().success
    assert gateway.requests == []


def test_a_password_in_the_url_is_sent_as_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackPushgateway(credentials=("pusher", "s3cret/@:x")) as gateway:
        address = gateway.url.replace("http://", "http://pusher:s3cret%2F%40%3Ax@")
        monkeypatch.setenv("SOPHIA_PUSHGATEWAY_URL", address)
        assert _run().success
    assert len(gateway.requests) == 2  # each step's group, accepted


@pytest.mark.parametrize("userinfo", ["", "pusher:s3cret@", "pusher:s3cret@x:y@"])
def test_a_gateway_that_fails_never_fails_the_run_nor_shows_the_url(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, userinfo: str
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("SOPHIA_PUSHGATEWAY_URL", f"http://{userinfo}127.0.0.1:{port}")
    result = _run()
    assert result.success
    # the hook handled it: Dagster would record a hook that raised as HOOK_ERRORED
    assert not [e for e in result.all_events if e.event_type_value == "HOOK_ERRORED"]
    assert "could not push sophia-runs figures" in caplog.text
    assert "SOPHIA_PUSHGATEWAY_URL" in caplog.text
    assert "s3cret" not in caplog.text
