"""Canary values for every secret the platform reads, and the places they must never reach:
files under a tree (logs, the Dagster instance's storage, compute logs, the server's data)
and the arguments of every process (what `ps` shows any user)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

# Each secret the platform reads from the environment, by the variable that holds it.
SECRET_VARIABLES = (
    "SOPHIA_PINECONE_API_KEY",
    "SOPHIA_LAMBDA_API_KEY",
    "SOPHIA_N8N_API_KEY",
    "SOPHIA_API_KEYS",
    "SOPHIA_SOURCE_PASSWORD",
    "PULUMI_ACCESS_TOKEN",
    "PULUMI_CONFIG_PASSPHRASE",
)


def canaries() -> dict[str, str]:
    """One unguessable value per secret variable, recognisable when found."""
    return {name: f"canary-{name.lower()}-{secrets.token_hex(8)}" for name in SECRET_VARIABLES}


def files_holding(root: Path, values: dict[str, str], skip: set[Path]) -> list[str]:
    """`name in path` for every file under root holding a value (as bytes, so SQLite pages
    and WAL segments count)."""
    needles = {name: value.encode() for name, value in values.items()}
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path in skip or path.is_symlink():
            continue
        data = path.read_bytes()
        found.extend(f"{name} in {path}" for name, needle in needles.items() if needle in data)
    return found


@contextmanager
def process_arguments() -> Iterator[set[str]]:
    """Collects the command line of every process on the machine while the block runs."""
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):  # a snapshot every 50 ms, as `ps` in a loop would
            for process in psutil.process_iter(["cmdline"]):
                seen.add(" ".join(process.info["cmdline"] or []))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()
