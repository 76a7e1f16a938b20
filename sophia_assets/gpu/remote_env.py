"""The entrypoint's environment on a rented machine: the project's files (exactly those the
code location image holds, so the context digest names both), and a Python to run them with:
`uv` builds the locked environment there (`uv sync --frozen --no-dev`), or a given
interpreter runs the shipped code as it is."""

from __future__ import annotations

import io
import shlex
import tarfile

from sophia_assets.gpu.ssh import SshTarget
from sophia_assets.home import PROJECT_ROOT
from sophia_assets.images.context import BuildContext

UV = "uv"  # the remote_python value that means: build the locked environment with uv
_UV_SETUP = (
    'export PATH="$HOME/.local/bin:$PATH"; '
    "command -v uv >/dev/null || python3 -m pip install --user --quiet uv; "
    "cd {workdir} && uv sync --frozen --no-dev --quiet"
)
SETUP_TIMEOUT_S = 1800.0


def project_bundle() -> tuple[bytes, str]:
    """A tar.gz of the code location's files, and their context digest."""
    context = BuildContext(PROJECT_ROOT, PROJECT_ROOT / "Dockerfile")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for relative in context.files():
            tar.add(PROJECT_ROOT / relative, arcname=relative)
    return buffer.getvalue(), context.digest()


def ship_project(target: SshTarget, workdir: str) -> str:
    bundle, digest = project_bundle()
    quoted = shlex.quote(workdir)
    target.run(f"mkdir -p {quoted} && tar xzf - -C {quoted}", stdin=bundle)
    return digest


def prepare_python(target: SshTarget, workdir: str, remote_python: str, setup: str = "") -> str:
    """The interpreter command to run the entrypoint with, from inside `workdir`, after the
    user's own `setup` shell command (if any) ran there."""
    if setup:
        target.run(f"cd {shlex.quote(workdir)} && {setup}", timeout_s=SETUP_TIMEOUT_S)
    if remote_python != UV:
        return shlex.quote(remote_python)
    target.run(_UV_SETUP.format(workdir=shlex.quote(workdir)), timeout_s=SETUP_TIMEOUT_S)
    return ".venv/bin/python"
