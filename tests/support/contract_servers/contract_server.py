"""A loopback HTTP server that speaks a published OpenAPI contract: every request it receives
and every response it sends is validated with openapi-core, and mismatches are recorded in
`violations` for the test to assert on. Subclasses answer the requests."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters

from tests.support.paths import CONTRACTS

_SPECS: dict[str, dict] = {}


@dataclass
class _Request:
    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    content_type: str
    body: bytes | None


@dataclass
class _Response:
    status_code: int
    data: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    content_type: str = "application/json"


class DropConnection(Exception):  # noqa: N818 - an instruction, not an error
    """Raised by `answer` to close the connection without any response (a lost answer)."""


class ContractServer:
    validate_error_responses = True  # False where the contract leaves error bodies undefined

    def __init__(self, contract: str, base_path: str = "", validate: bool = True):
        self.validate = validate  # benchmarks may measure the client without the validator
        path = CONTRACTS / contract
        if not path.exists():
            raise FileNotFoundError(
                f"the contract {contract} is not at {path}; vendor the vendor's published "
                "document there and note its source in tests/contracts/README.md"
            )
        if contract not in _SPECS:  # large documents: parse once per test session
            _SPECS[contract] = yaml.safe_load(path.read_text())
        self.violations: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        spec = dict(_SPECS[contract])
        spec["servers"] = [{"url": self.url + base_path}]
        self._api = OpenAPI.from_dict(spec)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def answer(
        self,
        path: str,
        method: str,
        data: dict,
        query: dict[str, Any],
        headers: dict[str, str],
        size: int,
    ) -> tuple[int, dict]:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._serve(self, "get")

            def do_POST(self) -> None:
                server._serve(self, "post")

            def do_DELETE(self) -> None:
                server._serve(self, "delete")

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        query = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(url.query).items()}
        headers = dict(handler.headers.items())
        request = _Request(
            self.url,
            url.path,
            method,
            RequestParameters(query=query, header=headers),
            (handler.headers.get("Content-Type") or "").lower(),
            body,
        )
        if self.validate:
            try:
                self._api.validate_request(request)
            except Exception as err:
                self.violations.append(f"request {method.upper()} {url.path}: {err}")
        try:
            status, payload = self.answer(
                url.path, method, json.loads(body) if body else {}, query, headers, len(body or b"")
            )
        except DropConnection:
            handler.close_connection = True
            return
        response = _Response(status, json.dumps(payload).encode())
        # a 5xx comes from a gateway in front of the API, which the contract does not describe
        validated = status < 400 or (status < 500 and self.validate_error_responses)
        if self.validate and validated:
            try:
                self._api.validate_response(request, response)
            except Exception as err:
                self.violations.append(f"response {status} {url.path}: {err}")
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(response.data)))
        handler.end_headers()
        handler.wfile.write(response.data)
