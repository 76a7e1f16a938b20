"""A loopback Pulumi ESC API answering the calls `pulumi-esc-sdk` makes to read and update an
environment: `POST /api/esc/environments/{org}/{project}/{env}/open` (a session id),
`GET .../open/{session}` (the resolved values as ESC `Value`s, secrets marked), and
`GET`/`PATCH .../{env}` (the definition as YAML). Values are plain data; `{"fn::secret": x}`
marks a secret. The token is checked as the SDK sends it (`Authorization: token <PAT>`);
every call is recorded. `outage` makes every call fail ("fail": 503) or hang ("stall": no
answer until the outage ends) the way a real outage does."""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

TOKEN = "pul-esc-test-token-not-a-secret"
_OPEN = re.compile(r"^/api/esc/environments/([^/]+)/([^/]+)/([^/]+)/open(?:/([^/?]+))?$")
_DEFINITION = re.compile(r"^/api/esc/environments/([^/]+)/([^/]+)/([^/]+)$")


class EscLoopback:
    def __init__(self, environments: dict[str, dict[str, Any]]):
        self.environments = environments  # "org/project/env" -> values
        self.sessions: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.outage: str | None = None  # None, "fail" or "stall": see start_outage
        self.ended = threading.Event()  # set when an outage ends: stalled calls then fail
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> EscLoopback:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def opens(self) -> int:
        return sum(1 for method, _ in self.calls if method == "POST")

    def start_outage(self, kind: str) -> None:
        self.ended.clear()
        self.outage = kind

    def end_outage(self) -> None:
        self.outage = None
        self.ended.set()

    def _answer(self, method: str, path: str, auth: str, body: bytes) -> tuple[int, Any]:
        self.calls.append((method, path.split("?")[0]))
        if self.outage == "stall":
            self.ended.wait(timeout=60)
        if self.outage is not None:
            return 503, {"code": 503, "message": "Service Unavailable"}
        if auth != f"token {TOKEN}":
            return 401, {"code": 401, "message": "Unauthorized: No credentials provided"}
        definition = _DEFINITION.match(path.split("?")[0])
        if definition:
            reference = "/".join(definition.group(1, 2, 3))
            if reference not in self.environments:
                return 404, {"code": 404, "message": f"environment {reference} not found"}
            if method == "GET":
                return 200, yaml.safe_dump({"values": self.environments[reference]})
            if method == "PATCH":
                self.environments[reference] = (yaml.safe_load(body) or {}).get("values") or {}
                return 200, {"diagnostics": []}
        match = _OPEN.match(path.split("?")[0])
        if not match:
            return 404, {"code": 404, "message": "not found"}
        reference = "/".join(match.group(1, 2, 3))
        if reference not in self.environments:
            return 404, {"code": 404, "message": f"environment {reference} not found"}
        if method == "POST" and match.group(4) is None:
            session = uuid.uuid4().hex
            self.sessions[session] = reference
            return 200, {"id": session, "diagnostics": {"diagnostics": []}}
        if method == "GET" and self.sessions.get(match.group(4)) == reference:
            values = self.environments[reference]
            return 200, {"properties": {k: _value(v) for k, v in values.items()}}
        return 404, {"code": 404, "message": "no such open session"}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received = self.rfile.read(length) if length else b""
                status, body = server._answer(
                    method, self.path, self.headers.get("Authorization", ""), received
                )
                is_yaml = isinstance(body, str)
                data = body.encode() if is_yaml else json.dumps(body).encode()
                self.send_response(status)
                kind = "application/x-yaml" if is_yaml else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

        return Handler


def _value(raw: Any, secret: bool = False) -> dict[str, Any]:
    """Plain data as an ESC `Value` tree; `{"fn::secret": x}` is a secret leaf."""
    if isinstance(raw, dict) and set(raw) == {"fn::secret"}:
        return _value(raw["fn::secret"], secret=True)
    if isinstance(raw, dict):
        inner: Any = {k: _value(v) for k, v in raw.items()}
    elif isinstance(raw, list):
        inner = [_value(v) for v in raw]
    else:
        inner = raw
    value = {"value": inner, "trace": {}}
    if secret:
        value["secret"] = True
    return value
