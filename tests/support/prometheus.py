"""A real Prometheus on loopback for the monitoring tests, started and stopped by the tests, and
its `promtool`.

`ensure_prometheus()` installs Debian's `prometheus` package (both binaries) when it is
missing, as tests/support/sshd.py does for sshd; it needs root, or passwordless sudo as on a
CI runner, and apt-get, and says so when it has neither."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
READY_TIMEOUT_S = 30.0
POLL_S = 0.2


class PrometheusUnavailable(RuntimeError):
    pass


def ensure_prometheus() -> Path:
    if PROMETHEUS.exists() and PROMTOOL.exists():
        return PROMETHEUS
    command = [*_privileged(), "apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:  # stale package lists: refresh once
        update = [*_privileged(), "apt-get", "update"]
        subprocess.run(update, env=env, capture_output=True, timeout=900)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if not (PROMETHEUS.exists() and PROMTOOL.exists()):
        raise PrometheusUnavailable(f"apt-get install prometheus failed: {result.stderr[-800:]}")
    return PROMETHEUS


def _privileged() -> list[str]:
    """The prefix that runs apt-get as root: none for root, `sudo -n` where it needs no
    password (a CI runner's user)."""
    if not shutil.which("apt-get"):
        raise PrometheusUnavailable(
            "prometheus is not installed and there is no apt-get to install it; "
            "install Debian's `prometheus` package (it has /usr/bin/promtool)"
        )
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        probe = subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["sudo", "-n"]
    raise PrometheusUnavailable(
        "prometheus is not installed and this user cannot install it (needs root or "
        "passwordless sudo); install it with `apt-get install prometheus`"
    )


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs promtool with `args`; the caller judges the exit status (a failed check is an
    answer, not an error here)."""
    ensure_prometheus()
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackPrometheus:
    """Prometheus on 127.0.0.1, scraping `scrape_targets` (job -> "host:port") and evaluating
    `rule_files` at the scrape interval. `scrape_configs` are appended as they are, for a
    test of a configuration's own relabelling."""

    def __init__(
        self,
        root: Path,
        scrape_targets: dict[str, str],
        scrape_interval_s: float = 0.5,
        rule_files: Iterable[Path] = (),
        scrape_configs: Iterable[dict[str, Any]] = (),
    ):
        self.root = root
        self.scrape_targets = dict(scrape_targets)
        self.interval = f"{round(scrape_interval_s * 1000)}ms"
        self.rule_files = [Path(path).resolve() for path in rule_files]
        self.scrape_configs = list(scrape_configs)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        jobs = [
            {"job_name": job, "static_configs": [{"targets": [address]}]}
            for job, address in self.scrape_targets.items()
        ]
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": jobs + self.scrape_configs,
        }

    def start(self) -> LoopbackPrometheus:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("prometheus is already running; stop() it first")
        binary = ensure_prometheus()
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.get(f"{self.url}/-/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.05)  # polling a server that is coming up
        self.stop()
        raise RuntimeError(
            f"prometheus was not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}"
        )

    def _api(self, path: str, **params: str) -> Any:
        """`data` of an API answer; Prometheus' own error text when it refused."""
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10.0)
        try:
            body = response.json()
        except ValueError:
            body = {"status": "error", "error": response.text[:500]}
        if response.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(
                f"prometheus {path} {params}: HTTP {response.status_code}: "
                f"{body.get('errorType', '')} {body.get('error', '')}".rstrip()
            )
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector (or scalar/string pair) `expr` evaluates to now."""
        return self._api("/api/v1/query", query=expr)["result"]

    def wait_for(
        self, expr: str, predicate: Callable[[list[dict]], bool], timeout_s: float = 30
    ) -> list[dict]:
        """Polls `expr` until `predicate(result)` holds; the result that satisfied it."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{expr!r} did not satisfy the predicate within {timeout_s:g} s; last "
                    f"result: {result}\nprometheus log:\n{self.log_tail()}"
                )
            time.sleep(POLL_S)

    def rules(self) -> list[dict]:
        """The rule groups as loaded, each rule with its `health` and `lastError`."""
        return self._api("/api/v1/rules")["groups"]

    def targets(self) -> dict[str, list[dict]]:
        """`activeTargets` (after relabelling) and `droppedTargets` (their discovered labels)."""
        return self._api("/api/v1/targets")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> LoopbackPrometheus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
