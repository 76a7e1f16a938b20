"""One `docker buildx build` on a Build Cloud builder: the command, its streamed log, and what
the metadata file and the plain progress output say about the result."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUILD_TIMEOUT_S = 90 * 60  # Build Cloud stops a build after 90 minutes
TAIL_LINES = 40
# `#7 [build 3/6] RUN ...` is a Dockerfile step; `#1 [internal] load ...` is bookkeeping.
_STEP = re.compile(r"^#(\d+) \[(?!internal\]|auth\])")
_CACHED = re.compile(r"^#(\d+) CACHED\b")


class BuildFailed(RuntimeError):
    """The build did not produce a pushed image; the message carries the log's tail."""


@dataclass(frozen=True)
class BuildRequest:
    docker: str
    builder: str
    dockerfile: Path
    context: Path
    tags: tuple[str, ...]
    target: str | None
    platforms: tuple[str, ...]
    metadata_file: Path

    def command(self) -> list[str]:
        command = [
            self.docker,
            "buildx",
            "build",
            "--builder",
            self.builder,
            "--file",
            str(self.dockerfile),
            "--push",
            "--metadata-file",
            str(self.metadata_file),
            "--provenance=mode=max",
            "--sbom=true",
            "--progress=plain",
            "--platform",
            ",".join(self.platforms),
        ]
        if self.target:
            command += ["--target", self.target]
        for tag in self.tags:
            command += ["--tag", tag]
        return [*command, str(self.context)]


@dataclass(frozen=True)
class BuildResult:
    digest: str
    tags: tuple[str, ...]
    duration_s: float
    steps: int
    cached_steps: int
    build_ref: str | None

    @property
    def cache_ratio(self) -> float:
        return self.cached_steps / self.steps if self.steps else 0.0


def run_build(request: BuildRequest, log: Callable[[str], None], flush_s: float = 2.0):
    """Runs the build, handing its log to `log` in chunks (every `flush_s` or 50 lines)."""
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    steps: set[str] = set()
    cached: set[str] = set()
    chunk: list[str] = []
    last_flush = started
    request.metadata_file.unlink(missing_ok=True)
    with subprocess.Popen(
        request.command(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            chunk.append(line)
            _count(line, steps, cached)
            if len(chunk) >= 50 or time.monotonic() - last_flush >= flush_s:
                log("\n".join(chunk))
                chunk, last_flush = [], time.monotonic()
            if time.monotonic() - started > BUILD_TIMEOUT_S:
                process.kill()
                raise BuildFailed(_failure("timed out after 90 minutes", tail))
        returncode = process.wait()
    if chunk:
        log("\n".join(chunk))
    if returncode != 0:
        raise BuildFailed(_failure(f"docker buildx build exited with {returncode}", tail))
    metadata = _metadata(request.metadata_file, tail)
    return BuildResult(
        digest=metadata["containerimage.digest"],
        tags=tuple(t for t in str(metadata.get("image.name", "")).split(",") if t) or request.tags,
        duration_s=round(time.monotonic() - started, 3),
        steps=len(steps),
        cached_steps=len(cached & steps),
        build_ref=metadata.get("buildx.build.ref"),
    )


def _count(line: str, steps: set[str], cached: set[str]) -> None:
    if match := _STEP.match(line):
        steps.add(match.group(1))
    elif match := _CACHED.match(line):
        cached.add(match.group(1))


def _metadata(path: Path, tail: deque[str]) -> dict:
    if not path.exists():
        raise BuildFailed(_failure(f"the build wrote no metadata file ({path})", tail))
    try:
        metadata = json.loads(path.read_text())
    except ValueError as err:
        raise BuildFailed(_failure(f"the metadata file {path} is not JSON: {err}", tail)) from err
    digest = metadata.get("containerimage.digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise BuildFailed(_failure(f"the metadata file {path} has no containerimage.digest", tail))
    return metadata


def _failure(reason: str, tail: deque[str]) -> str:
    lines = "\n".join(tail) or "(no output)"
    return f"{reason}. Last {len(tail)} lines of the build log:\n{lines}"
