"""The n8n sensor against a loopback server that follows the n8n public API contract:
backlogs across pages, executions arriving between pages, failed and running executions,
unknown workflows and actions, and a rejected API key."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from resources.n8n import N8nResource
from sensors.n8n import WorkflowAction, build_n8n_sensor, load_workflows
from tests.support.contract_servers.n8n import API_KEY, N8nContractServer

EMBED = dg.define_asset_job("embed", selection=[dg.AssetKey(["sophia", "vector_updates"])])
PUBLISHED = WorkflowAction("1001", "content-published", "re-embed")
IMAGES = WorkflowAction("1002", "image-requested", "rebuild-image", "code-location")
STACK = WorkflowAction("1002", "stack-requested", "deploy-stack", "dagster")
STACKS_JOB = dg.define_asset_job("stacks", selection=[dg.AssetKey(["infra", "dagster"])])
IMAGES_JOB = dg.define_asset_job(
    "images", selection=[dg.AssetKey(["images", "code-location"]), dg.AssetKey(["images", "gpu"])]
)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOPHIA_N8N_API_KEY", API_KEY)
    with N8nContractServer(workflows={"1001", "1002"}) as running:
        yield running
    assert running.violations == [], running.violations[:3]


def _known(workflows) -> str:
    """The cursor of a sensor that met these workflows before any of their executions."""
    return json.dumps({w.id: {"after": 0, "done": [], "waiting": []} for w in workflows})


def _tick(server: N8nContractServer, workflows, cursor=None, jobs=(EMBED,), first_sight=False):
    cursor = cursor if cursor is not None or first_sight else _known(workflows)
    sensor = build_n8n_sensor(workflows, jobs=list(jobs))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"n8n": N8nResource(base_url=server.url)}
        )
        result = sensor.evaluate_tick(context)
    return result, result.cursor


def test_backlog_across_pages_is_handled_once(server) -> None:
    server.add("1001", 600)
    first, cursor = _tick(server, [PUBLISHED])
    assert len(first.asset_events) == 600
    keys = [r.run_key for r in first.run_requests]
    assert len(keys) == len(set(keys)) == 600 and keys[0] == "n8n:1001:1001"
    assert server.requests.count("/api/v1/executions") == 3  # pages of 250
    assert json.loads(cursor)["1001"] == {"after": 1600, "done": [], "waiting": []}

    second, _ = _tick(server, [PUBLISHED], cursor)
    assert second.asset_events == [] and second.run_requests == []


def test_an_execution_arriving_between_pages_is_not_missed(server) -> None:
    server.add("1001", 300)
    server.between_pages = lambda page: page == 1 and server.add("1001", 1)
    first, cursor = _tick(server, [PUBLISHED])
    server.between_pages = None
    second, _ = _tick(server, [PUBLISHED], cursor)
    handled = [r.run_key for r in first.run_requests + second.run_requests]
    assert len(handled) == len(set(handled)) == 301
    assert [r.run_key for r in second.run_requests] == ["n8n:1001:1301"]


def test_failed_executions_are_reported_not_acted_on(server) -> None:
    server.add("1001", 2)
    server.add("1001", 1, status="error")
    result, _ = _tick(server, [PUBLISHED])
    statuses = [e.metadata["status"].value for e in result.asset_events]
    assert statuses == ["success", "success", "error"]
    assert [r.run_key for r in result.run_requests] == ["n8n:1001:1001", "n8n:1001:1002"]


def test_a_running_execution_holds_the_cursor_until_it_settles(server) -> None:
    server.add("1001", 1)
    server.add("1001", 1, status="running")
    server.add("1001", 1)
    first, cursor = _tick(server, [PUBLISHED])
    assert [r.run_key for r in first.run_requests] == ["n8n:1001:1001", "n8n:1001:1003"]
    assert json.loads(cursor)["1001"] == {"after": 1001, "done": [1003], "waiting": []}
    server.set_status(1002, "success")
    second, cursor = _tick(server, [PUBLISHED], cursor)
    assert [r.run_key for r in second.run_requests] == ["n8n:1001:1002"]
    assert json.loads(cursor)["1001"] == {"after": 1003, "done": [], "waiting": []}


def test_the_first_sight_of_a_workflow_acts_on_none_of_its_history(server) -> None:
    server.add("1001", 600)  # a busy workflow, newly listed in the file
    first, cursor = _tick(server, [PUBLISHED], first_sight=True)
    assert first.asset_events == [] and first.run_requests == []
    assert "first sight of content-published: executions up to 1600 are history" in (
        first.skip_message
    )
    assert server.requests.count("/api/v1/executions") == 1  # one page of one, not 3 of 250
    server.add("1001", 1)
    second, _ = _tick(server, [PUBLISHED], cursor)
    assert [r.run_key for r in second.run_requests] == ["n8n:1001:1601"]


def test_a_waiting_execution_is_parked_not_holding_the_cursor(server) -> None:
    server.add("1001", 1)
    server.add("1001", 1, status="waiting")  # a Wait node: maybe for days
    server.add("1001", 1)
    first, cursor = _tick(server, [PUBLISHED])
    assert [r.run_key for r in first.run_requests] == ["n8n:1001:1001", "n8n:1001:1003"]
    assert json.loads(cursor)["1001"] == {"after": 1003, "done": [], "waiting": [1002]}
    server.add("1001", 1)
    second, cursor = _tick(server, [PUBLISHED], cursor)  # later ones still flow
    assert [r.run_key for r in second.run_requests] == ["n8n:1001:1004"]
    server.set_status(1002, "success")  # the wait ends
    third, cursor = _tick(server, [PUBLISHED], cursor)
    assert [r.run_key for r in third.run_requests] == ["n8n:1001:1002"]
    assert json.loads(cursor)["1001"] == {"after": 1004, "done": [], "waiting": []}
    fourth, _ = _tick(server, [PUBLISHED], cursor)
    assert fourth.run_requests == [] and fourth.asset_events == []


def test_unknown_workflow_and_refused_action_are_explained(server) -> None:
    server.add("1002", 1)
    unknown = WorkflowAction("9999", "ghost", "reindex")
    result, _ = _tick(server, [unknown, STACK])  # the stacks job is not offered here
    assert [e.asset_key for e in result.asset_events] == [STACK.asset_key]
    assert result.run_requests == []


def test_deploy_stack_requests_the_mapped_stack_only(server) -> None:
    server.add("1002", 1)
    result, _ = _tick(server, [STACK], jobs=(EMBED, STACKS_JOB))
    [request] = result.run_requests
    assert request.job_name == "stacks"
    assert request.asset_selection == [dg.AssetKey(["infra", "dagster"])]


def test_rebuild_image_requests_the_mapped_image_only(server) -> None:
    server.add("1002", 1)
    result, _ = _tick(server, [IMAGES], jobs=(EMBED, IMAGES_JOB))
    [request] = result.run_requests
    assert request.job_name == "images"
    assert request.asset_selection == [dg.AssetKey(["images", "code-location"])]
    assert request.run_key.startswith("n8n:1002:")


def test_privileged_actions_run_only_for_the_workflows_allowed_them(server) -> None:
    server.add("1001", 2)  # content-published: allowed re-embed only
    server.add("1002", 1)  # stack-requested: allowed deploy-stack of infra/dagster
    jobs = (EMBED, STACKS_JOB, IMAGES_JOB)
    result, _ = _tick(server, [PUBLISHED, STACK], jobs=jobs)
    by_workflow: dict[str, list] = {}
    for request in result.run_requests:
        by_workflow.setdefault(request.tags["sophia/n8n_workflow"], []).append(request)
    assert {r.job_name for r in by_workflow["content-published"]} == {"embed"}
    [deploy] = by_workflow["stack-requested"]
    assert deploy.job_name == "stacks"
    # each run names the execution that caused it
    execution_ids = {r.tags["sophia/n8n_execution"] for r in result.run_requests}
    assert len(execution_ids) == 3
    for request in result.run_requests:
        workflow = "1001" if request.tags["sophia/n8n_workflow"] == "content-published" else "1002"
        assert request.run_key == f"n8n:{workflow}:{request.tags['sophia/n8n_execution']}"


def test_rebuild_image_must_name_a_configured_image(tmp_path: Path) -> None:
    config = tmp_path / "workflows.yaml"
    config.write_text("workflows:\n  - {id: '5', name: x, action: rebuild-image, image: nope}\n")
    with pytest.raises(ValueError, match=r"workflows\[0\]\.image: rebuild-image needs the image"):
        load_workflows(config, images=["code-location"])
    config.write_text(
        "workflows:\n  - {id: '5', name: x, action: rebuild-image, image: code-location}\n"
    )
    assert load_workflows(config, images=["code-location"])[0].target == "code-location"
    config.write_text("workflows:\n  - {id: '6', name: y, action: deploy-stack, stack: moon}\n")
    with pytest.raises(ValueError, match=r"\.stack: deploy-stack needs the stack it acts on"):
        load_workflows(config, stacks=["n8n", "dagster"])


def test_rejected_api_key_skips_with_the_reason(server, monkeypatch) -> None:
    server.add("1001", 1)
    monkeypatch.setenv("SOPHIA_N8N_API_KEY", "wrong")
    result, cursor = _tick(server, [PUBLISHED], cursor='{"1001": {"after": 7, "done": []}}')
    assert "rejected the API key in SOPHIA_N8N_API_KEY (401" in result.skip_message
    assert "wrong" not in result.skip_message
    assert json.loads(cursor) == {"1001": {"after": 7, "done": []}}


def test_a_backlog_of_ten_thousand_is_worked_off(server) -> None:
    server.add("1001", 10_000)
    result, cursor = _tick(server, [PUBLISHED])
    assert len(result.run_requests) == 10_000
    assert json.loads(cursor)["1001"]["after"] == 11_000


def test_unknown_action_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "workflows.yaml"
    config.write_text("workflows:\n  - {id: '5', name: x, action: launch-rocket}\n")
    with pytest.raises(
        ValueError,
        match=r"workflows\[0\]\.action: unknown action "
        r"'launch-rocket'; use one of re-embed",
    ):
        load_workflows(config)
    assert load_workflows() == []  # the shipped file configures none


def test_unreachable_n8n_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("SOPHIA_N8N_API_KEY", API_KEY)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    sensor = build_n8n_sensor([PUBLISHED], jobs=[EMBED])
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance,
            resources={"n8n": N8nResource(base_url=f"http://127.0.0.1:{port}", timeout_s=2)},
        )
        result = sensor.evaluate_tick(context)
    assert result.skip_message.startswith("n8n: ") and result.run_requests == []


def test_without_workflows_the_sensor_is_stopped_and_says_why() -> None:
    sensor = build_n8n_sensor([], [])
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert "sensors/n8n_workflows.yaml" in sensor.description
    # started by hand anyway, it asks n8n nothing and says why it skipped
    context = dg.build_sensor_context(
        resources={"n8n": N8nResource(base_url="http://127.0.0.1:1")}  # never reached
    )
    result = sensor.evaluate_tick(context)
    assert result.run_requests == [] and "No n8n workflows are configured" in result.skip_message
