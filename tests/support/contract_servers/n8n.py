"""A loopback n8n public API that follows `tests/contracts/n8n-public-api-2.41.1.yml`
(requests and responses validated by `ContractServer`). Executions are listed newest first
with n8n's cursor (base64 JSON `{lastId, limit}`); a hook can add executions between two pages,
and a wrong API key gets 401."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from tests.support.contract_servers.contract_server import ContractServer

API_KEY = "n8n-test-key-not-a-secret"


class N8nContractServer(ContractServer):
    validate_error_responses = False  # the contract leaves 401/404 bodies undefined

    def __init__(self, workflows: set[str], validate: bool = True):
        super().__init__("n8n-public-api-2.41.1.yml", base_path="/api/v1", validate=validate)
        self.workflows = workflows
        self.executions: list[dict] = []  # any order; listed newest first
        self.requests: list[str] = []
        self.between_pages: Callable[[int], None] | None = None  # called after page n
        self._pages_served = 0

    def add(self, workflow_id: str, count: int, status: str = "success") -> None:
        start = max((int(e["id"]) for e in self.executions), default=1000)
        for n in range(1, count + 1):
            self.executions.append(
                {
                    "id": str(start + n),
                    "finished": status == "success",
                    "mode": "webhook",
                    "retryOf": None,
                    "retrySuccessId": None,
                    "status": status,
                    "startedAt": "2026-11-24T03:00:00.000Z",
                    "stoppedAt": None if status == "running" else "2026-11-24T03:00:01.000Z",
                    "workflowId": workflow_id,
                    "waitTill": None,
                }
            )

    def set_status(self, execution_id: int, status: str) -> None:
        for execution in self.executions:
            if int(execution["id"]) == execution_id:
                execution["status"] = status
                execution["stoppedAt"] = "2026-11-24T03:00:02.000Z"

    def answer(
        self,
        path: str,
        method: str,
        data: dict,
        query: dict[str, Any],
        headers: dict[str, str],
        size: int,
    ) -> tuple[int, dict]:
        self.requests.append(path)
        return self._answer(path, query, headers.get("X-N8N-API-KEY"))

    def _answer(self, path: str, query: dict, key: str | None) -> tuple[int, dict]:
        if key != API_KEY:
            return 401, {"message": "unauthorized"}
        if path.startswith("/api/v1/workflows/"):
            workflow_id = path.rsplit("/", 1)[1]
            if workflow_id not in self.workflows:
                return 404, {"message": "Not Found"}
            return 200, _workflow(workflow_id)
        if path == "/api/v1/executions":
            return 200, self._page(query)
        if path.startswith("/api/v1/executions/"):
            wanted = path.rsplit("/", 1)[1]
            found = [e for e in self.executions if e["id"] == wanted]
            return (200, _full(found[0])) if found else (404, {"message": "Not Found"})
        return 404, {"message": "Not Found"}

    def _page(self, query: dict) -> dict:
        limit = int(query.get("limit", 100))
        last_id = None
        if query.get("cursor"):
            decoded = json.loads(base64.b64decode(query["cursor"]))
            last_id, limit = int(decoded["lastId"]), int(decoded["limit"])
        rows = sorted(
            (
                e
                for e in self.executions
                if e["workflowId"] == query.get("workflowId")
                and (last_id is None or int(e["id"]) < last_id)
            ),
            key=lambda e: -int(e["id"]),
        )
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = base64.b64encode(
                json.dumps({"lastId": page[-1]["id"], "limit": limit}).encode()
            ).decode()
        self._pages_served += 1
        if self.between_pages:
            self.between_pages(self._pages_served)
        return {"data": page, "nextCursor": next_cursor}


def _full(execution: dict) -> dict:
    """One execution as `GET /executions/{id}` returns it: the listing's fields and the ones
    the contract requires there besides."""
    return {
        **execution,
        "createdAt": execution["startedAt"],
        "deletedAt": None,
        "storedAt": "db",
        "tracingContext": None,
        "deduplicationKey": None,
        "jsonSizeBytes": 0,
        "binaryDataSizeBytes": 0,
        "workflowVersionId": None,
        "usedPrivateCredentials": False,
    }


def _workflow(workflow_id: str) -> dict:
    """A workflow as `GET /workflows/{id}` returns it, with every field the contract requires."""
    return {
        "id": workflow_id,
        "name": f"workflow {workflow_id}",
        "description": None,
        "active": True,
        "activeVersionId": None,
        "createdAt": "2026-11-01T00:00:00.000Z",
        "updatedAt": "2026-11-01T00:00:00.000Z",
        "isArchived": False,
        "versionId": "v1",
        "versionCounter": 1,
        "sourceWorkflowId": None,
        "triggerCount": 1,
        "nodes": [],
        "connections": {},
        "nodeGroups": [],
        "settings": None,
        "staticData": None,
        "meta": None,
        "shared": [],
        "activeVersion": None,
    }
