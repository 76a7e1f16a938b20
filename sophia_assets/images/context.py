"""The build context an image really uses, and its digest: the image's code version.

The files are those of the context that `.dockerignore` lets through and that the Dockerfile
reads (COPY/ADD sources and RUN bind mounts), plus the Dockerfile itself. A file the Dockerfile
never reads, or one `.dockerignore` keeps out, cannot change the digest.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sophia_assets.images.dockerfile import Dockerfile
from sophia_assets.images.dockerignore import DockerIgnore


@dataclass(frozen=True)
class BuildContext:
    root: Path
    dockerfile: Path

    def files(self) -> list[str]:
        """Relative, slash-separated paths of the context files the build reads, sorted."""
        ignore = DockerIgnore.for_context(self.root)
        sources = Dockerfile.read(self.dockerfile).context_sources()
        used = []
        for directory, folders, names in os.walk(self.root):
            base = Path(directory).relative_to(self.root).as_posix()
            prefix = "" if base == "." else base + "/"
            folders[:] = sorted(f for f in folders if not ignore.prunes(prefix + f))
            for name in sorted(names):
                relative = prefix + name
                if not ignore.excludes(relative) and _read_by(relative, sources):
                    used.append(relative)
        return sorted(used)

    def digest(self) -> str:
        """sha256 over the Dockerfile and every used file's path, mode and content."""
        digest = hashlib.sha256()
        digest.update(b"Dockerfile\0" + self.dockerfile.read_bytes() + b"\0")
        for relative in self.files():
            path = self.root / relative
            executable = os.access(path, os.X_OK)
            digest.update(f"{relative}\0{int(executable)}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


def _read_by(relative: str, sources: list[str]) -> bool:
    for source in sources:
        if source == "." or relative == source or relative.startswith(source + "/"):
            return True
        if any(c in source for c in "*?[") and (
            fnmatch.fnmatchcase(relative, source)
            or fnmatch.fnmatchcase(relative.split("/")[0], source)
        ):
            return True
    return False
