"""The n8n public REST API (`/api/v1`), as the n8n sensor needs it: workflows by id, a
workflow's executions newer than a given one (walked newest-first with `nextCursor`), its
newest execution, and one execution by id.

The API key is read from the environment variable named by `api_key_env` at call time, so it
never reaches Dagster's config, logs or errors."""

import os
from dataclasses import dataclass
from typing import Any

import dagster as dg
import httpx
from pydantic import Field

PAGE_LIMIT = 250  # the API's maximum


class N8nError(RuntimeError):
    """n8n refused or failed a request; the message says what to fix."""


@dataclass(frozen=True)
class Execution:
    id: int
    workflow_id: str
    status: str  # success, error, crashed, canceled, running, new, waiting, unknown
    mode: str
    started_at: str | None
    stopped_at: str | None

    @property
    def settled(self) -> bool:
        return self.status not in ("new", "running", "waiting")

    @property
    def holds_cursor(self) -> bool:
        """Running work settles soon; a `waiting` execution (a Wait node) may wait for days,
        so the sensor parks it instead of holding every later execution back."""
        return self.status in ("new", "running")


@dataclass(frozen=True)
class ExecutionPage:
    executions: list[Execution]  # newer than the boundary, oldest first
    requests: int


class N8nResource(dg.ConfigurableResource):
    base_url: str = Field(
        default="http://127.0.0.1:5678",
        description="The n8n instance; the API lives under /api/v1.",
    )
    api_key_env: str = "SOPHIA_N8N_API_KEY"
    timeout_s: float = 10.0

    def _client(self) -> httpx.Client:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise N8nError(
                f"{self.api_key_env} is not set; create an API key in n8n "
                "(Settings > n8n API) and export it there"
            )
        return httpx.Client(
            base_url=self.base_url.rstrip("/") + "/api/v1",
            headers={"X-N8N-API-KEY": key},
            timeout=self.timeout_s,
        )

    def workflow_exists(self, workflow_id: str) -> bool:
        with self._client() as client:
            response = client.get(f"/workflows/{workflow_id}")
        if response.status_code == 404:
            return False
        _raise_for(response, self.api_key_env)
        return True

    def newest_execution_id(self, workflow_id: str) -> int:
        """The workflow's newest execution id; 0 when it has none."""
        with self._client() as client:
            response = client.get("/executions", params={"workflowId": workflow_id, "limit": 1})
        _raise_for(response, self.api_key_env)
        data = response.json()["data"]
        return int(data[0]["id"]) if data else 0

    def execution(self, execution_id: int) -> Execution | None:
        """One execution; None when n8n no longer has it (pruned, deleted)."""
        with self._client() as client:
            response = client.get(f"/executions/{execution_id}")
        if response.status_code == 404:
            return None
        _raise_for(response, self.api_key_env)
        return _execution(response.json())

    def executions_after(
        self, workflow_id: str, after_id: int, limit: int = PAGE_LIMIT
    ) -> ExecutionPage:
        """Every execution of the workflow with an id above `after_id`. Pages come newest
        first; the walk stops at the first page that reaches `after_id`."""
        found: list[Execution] = []
        cursor: str | None = None
        requests = 0
        with self._client() as client:
            while True:
                params: dict[str, Any] = {"workflowId": workflow_id, "limit": limit}
                if cursor:
                    params["cursor"] = cursor
                response = client.get("/executions", params=params)
                requests += 1
                _raise_for(response, self.api_key_env)
                body = response.json()
                page = [_execution(item) for item in body["data"]]
                found.extend(e for e in page if e.id > after_id)
                cursor = body.get("nextCursor")
                if not cursor or not page or min(e.id for e in page) <= after_id:
                    break
        found.sort(key=lambda e: e.id)
        return ExecutionPage(found, requests)


def _execution(item: dict[str, Any]) -> Execution:
    return Execution(
        int(item["id"]),
        str(item["workflowId"]),
        item["status"],
        item["mode"],
        item.get("startedAt"),
        item.get("stoppedAt"),
    )


def _raise_for(response: httpx.Response, api_key_env: str) -> None:
    if response.status_code == 401:
        raise N8nError(
            f"n8n rejected the API key in {api_key_env} (401 Unauthorized); "
            "create a new key in n8n (Settings > n8n API)"
        )
    if response.status_code >= 400:
        raise N8nError(
            f"n8n answered {response.status_code} to {response.request.method} "
            f"{response.request.url.path}"
        )
