"""A loopback Pushgateway that follows the gateway's documented HTTP API (the prometheus/
pushgateway README): `PUT|POST|DELETE /metrics/job/<job>{/<label>/<value>}`, a label value
written `<label>@base64/<urlsafe base64>` when it holds a `/`, bodies in the text
exposition format. PUT replaces a group, POST replaces the pushed families in it, DELETE
drops it. A body the text parser refuses gets 400, as the gateway answers. With
`credentials`, every request needs them as HTTP basic auth (the gateway's web config), else
401. GET /metrics serves every group with its grouping labels, so a real Prometheus can
scrape it."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

Group = tuple[tuple[str, str], ...]  # the grouping labels, job first


def grouping_of(path: str) -> Group:
    parts = [unquote(p) for p in path.removeprefix("/metrics/").split("/")]
    if len(parts) < 2 or len(parts) % 2 or parts[0] != "job":
        raise ValueError(f"not a grouping path: {path}")
    labels = []
    for name, value in zip(parts[::2], parts[1::2], strict=True):
        if name.endswith("@base64"):
            name = name.removesuffix("@base64")
            value = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        labels.append((name, value))
    return tuple(labels)


class LoopbackPushgateway:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.groups: dict[Group, dict[str, list[Sample]]] = {}  # group -> family -> samples
        self.requests: list[tuple[str, Group]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> LoopbackPushgateway:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def values(self, group: dict[str, str]) -> dict[str, float]:
        """The group's samples by name (job is one of `group`'s labels, in any order)."""
        with self._lock:
            families = next((f for g, f in self.groups.items() if dict(g) == group), {})
            return {s.name: s.value for samples in families.values() for s in samples}

    def _handler(self):
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                self._push(replace=True)

            def do_POST(self) -> None:
                self._push(replace=False)

            def do_DELETE(self) -> None:
                with gateway._lock:
                    gateway.groups.pop(grouping_of(self.path), None)
                self._answer(202, b"")

            def do_GET(self) -> None:
                self._answer(200, gateway._exposition().encode())

            def _push(self, replace: bool) -> None:
                if not self._authorized():
                    self._answer(401, b"Unauthorized")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                try:
                    group = grouping_of(self.path)
                    families = {f.name: f.samples for f in text_string_to_metric_families(body)}
                except ValueError as err:
                    self._answer(400, str(err).encode())
                    return
                with gateway._lock:
                    gateway.requests.append((self.command, group))
                    kept = {} if replace else gateway.groups.get(group, {})
                    gateway.groups[group] = {**kept, **families}
                self._answer(200, b"")

            def _authorized(self) -> bool:
                if gateway.credentials is None:
                    return True
                user, password = gateway.credentials
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                return self.headers.get("Authorization") == f"Basic {token}"

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler

    def _exposition(self) -> str:
        lines = []
        with self._lock:
            for group, families in self.groups.items():
                for samples in families.values():
                    for s in samples:
                        labels = {**dict(group), **s.labels}
                        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                        lines.append(f"{s.name}{{{text}}} {s.value}")
        return "\n".join(lines) + "\n"
