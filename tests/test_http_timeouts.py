"""Every outside HTTP client gives up on a server that accepts the connection and never
answers (a stalled service), instead of hanging its caller: ESC, n8n, Lambda Cloud and
Pinecone, each with its timeout set low for the test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from resources.n8n import N8nResource
from sophia_assets.gpu.lambda_api import LambdaCloud, LambdaCloudError, LaunchOutcomeUnknown
from sophia_assets.secrets.esc import EscError, open_environment
from sophia_assets.vectors.pinecone import PineconeIndex
from tests.support.contract_servers.lambda_cloud import VirtualClock

HANG_GUARD_S = 60  # far above every timeout below: past it, the call hung


@pytest.fixture
def stalled() -> Iterator[str]:
    """A loopback server that accepts connections and reads, but never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    done.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def _gives_up(call: Callable[[], object]) -> BaseException:
    """Runs `call` in a thread; returns what it raised. Fails if it is still waiting."""
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            call()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "the client waited on a stalled server with no timeout"
    assert "error" in outcome, "a stalled server cannot have answered"
    return outcome["error"]


def test_esc(stalled, monkeypatch) -> None:
    monkeypatch.setenv("SOPHIA_ESC_TIMEOUT_S", "0.5")
    error = _gives_up(lambda: open_environment("acme/sophia/prod", "pul-token-x", stalled))
    assert isinstance(error, EscError)
    assert "unreachable" in str(error) and "pul-token-x" not in str(error)


def test_n8n(stalled, monkeypatch) -> None:
    monkeypatch.setenv("SOPHIA_N8N_API_KEY", "n8n-key-x")
    n8n = N8nResource(base_url=stalled, timeout_s=0.5)
    error = _gives_up(lambda: n8n.workflow_exists("wf"))
    assert "timed out" in str(error).lower() and "n8n-key-x" not in str(error)


def test_lambda_cloud(stalled) -> None:
    client = LambdaCloud("lambda-key-x", stalled, clock=VirtualClock(), timeout_s=0.5)
    listing = _gives_up(client.instances)  # reads are retried, then give up
    assert isinstance(listing, LambdaCloudError) and "lambda-key-x" not in str(listing)
    launch = _gives_up(lambda: client.launch("us-east-1", "gpu_1x_a10", "k", "n", {}))
    assert isinstance(launch, LaunchOutcomeUnknown)  # sent, unanswered: not repeated


def test_pinecone(stalled) -> None:
    index = PineconeIndex(lambda: None, stalled, "pinecone-key-x", retries=0, timeout_s=0.5)
    error = _gives_up(index.stats)
    assert "timed out" in str(error).lower() or "timeout" in type(error).__name__.lower()
    assert "pinecone-key-x" not in str(error)
