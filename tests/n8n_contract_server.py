"""A loopback n8n public API that follows `../shared/contracts/n8n-public-api-2.41.1.yml`:
requests and responses are validated with openapi-core and mismatches recorded. Executions
are listed newest first with n8n's cursor (base64 JSON `{lastId, limit}`); a hook can add
executions between two pages, and a wrong API key gets 401."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters

CONTRACT = (
    Path(
        os.environ.get("SOPHIA_CONTRACTS")
        or Path(__file__).resolve().parents[2] / "shared/contracts"
    )
    / "n8n-public-api-2.41.1.yml"
)
API_KEY = "n8n-test-key-not-a-secret"
_SPEC_CACHE: dict = {}


@dataclass
class _Request:
    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    content_type: str = "application/json"
    body: bytes | None = None


@dataclass
class _Response:
    status_code: int
    data: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    content_type: str = "application/json"


class N8nContractServer:
    def __init__(self, workflows: set[str]):
        self.workflows = workflows
        self.executions: list[dict] = []  # any order; listed newest first
        self.violations: list[str] = []
        self.requests: list[str] = []
        self.between_pages: Callable[[int], None] | None = None  # called after page n
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        if "spec" not in _SPEC_CACHE:  # 20,000 lines: parse once per test session
            if not CONTRACT.exists():
                raise FileNotFoundError(
                    f"the n8n contract is not at {CONTRACT}; check out "
                    "shared/ beside the repository or set SOPHIA_CONTRACTS"
                )
            _SPEC_CACHE["spec"] = yaml.safe_load(CONTRACT.read_text())
        spec = dict(_SPEC_CACHE["spec"])
        spec["servers"] = [{"url": f"{self.url}/api/v1"}]
        self._api = OpenAPI.from_dict(spec)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
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

    def __enter__(self) -> N8nContractServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self)

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        request = _Request(
            self.url,
            url.path,
            "get",
            RequestParameters(query=query, header=dict(handler.headers.items())),
        )
        try:
            self._api.validate_request(request)
        except Exception as err:
            self.violations.append(f"request GET {url.path}: {err}")
        status, payload = self._answer(url.path, query, handler.headers.get("X-N8N-API-KEY"))
        response = _Response(status, json.dumps(payload).encode())
        if status == 200:
            try:
                self._api.validate_response(request, response)
            except Exception as err:
                self.violations.append(f"response {status} {url.path}: {err}")
        self.requests.append(url.path)
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(response.data)))
        handler.end_headers()
        handler.wfile.write(response.data)

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
