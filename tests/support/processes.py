"""Commands of this environment in separate processes, as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO


def run_python(
    code: str, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter of this environment (another process)."""
    return _run([sys.executable, "-c", code], env, cwd, check)


def run_sophia(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs the installed `sophia` console script."""
    return _run([str(Path(sys.executable).parent / "sophia"), *args], env, cwd, check)


def run_bench(
    name: str, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m bench.<name>` from the repository root, as the README says."""
    return _run([sys.executable, "-m", f"bench.{name}", *args], env, REPO, check)


def _run(
    command: list[str], env: dict[str, str] | None, cwd: Path | None, check: bool
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env={**os.environ, **(env or {})},
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


def stop_and_show(process: subprocess.Popen, tail: int = 4000) -> None:
    """SIGTERM, a minute to finish, then SIGKILL; prints the end of its stderr, which pytest
    shows with a failure."""
    process.terminate()
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    print(err[-tail:])
