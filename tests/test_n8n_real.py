"""The n8n sensor against a real n8n (scripts/n8n_local.sh starts one). Runs only when
SOPHIA_N8N_URL and SOPHIA_N8N_API_KEY are set; otherwise it is skipped, saying so."""

from __future__ import annotations

import os
import threading
import uuid

import dagster as dg
import httpx
import pytest

from resources.n8n import N8nResource
from sensors.n8n import WorkflowAction, build_n8n_sensor

URL = os.environ.get("SOPHIA_N8N_URL")
pytestmark = pytest.mark.skipif(
    not (URL and os.environ.get("SOPHIA_N8N_API_KEY")),
    reason="no real n8n: run scripts/n8n_local.sh and source its env file to include this test",
)
EMBED = dg.define_asset_job("embed", selection=[dg.AssetKey(["sophia", "vector_updates"])])


def _webhook_workflow(client: httpx.Client, path: str) -> str:
    workflow = {
        "name": f"sophia-test-{path}",
        "nodes": [
            {
                "id": str(uuid.uuid4()),
                "name": "Webhook",
                "type": "n8n-nodes-base.webhook",
                "typeVersion": 2,
                "position": [0, 0],
                "webhookId": str(uuid.uuid4()),
                "parameters": {"path": path, "httpMethod": "POST", "responseMode": "onReceived"},
            }
        ],
        "connections": {},
        "settings": {"saveDataSuccessExecution": "all", "saveDataErrorExecution": "all"},
    }
    created = client.post("/workflows", json=workflow)
    created.raise_for_status()
    workflow_id = created.json()["id"]
    client.post(f"/workflows/{workflow_id}/activate").raise_for_status()
    return workflow_id


def test_executions_of_a_real_workflow_become_runs() -> None:
    api = httpx.Client(
        base_url=f"{URL}/api/v1",
        timeout=30,
        headers={"X-N8N-API-KEY": os.environ["SOPHIA_N8N_API_KEY"]},
    )
    path = uuid.uuid4().hex[:12]
    workflow_id = _webhook_workflow(api, path)
    sensor = build_n8n_sensor([WorkflowAction(workflow_id, "real-test", "re-embed")], [EMBED])
    resource = N8nResource(base_url=URL)
    with dg.instance_for_test() as instance:  # first sight, before any execution
        context = dg.build_sensor_context(instance=instance, resources={"n8n": resource})
        known = sensor.evaluate_tick(context).cursor
    for n in range(3):
        for _ in range(40):  # the webhook is registered shortly after activation
            response = httpx.post(f"{URL}/webhook/{path}", json={"n": n}, timeout=30)
            if response.status_code != 404:
                break
            threading.Event().wait(0.5)
        response.raise_for_status()
    with dg.instance_for_test() as instance:
        seen: list[str] = []
        cursor = known
        for _ in range(60):  # executions are stored asynchronously after the webhook answers
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"n8n": resource}
            )
            result = sensor.evaluate_tick(context)
            cursor = result.cursor
            seen += [r.run_key for r in result.run_requests]
            if len(seen) >= 3:
                break
            threading.Event().wait(0.5)
    assert len(seen) == len(set(seen)) == 3
