"""Where managed secrets live. Locally a JSON file under SOPHIA_HOME, readable by its owner
only (0600), replaced atomically; in production Pulumi ESC (resources/esc.py). A secret is a
small document, e.g. `{"current": {...}, "previous": {...}}`; nothing here ever logs one."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from sophia_assets.home import sophia_home

STORE_FILE = "secrets.json"


class SecretStore(ABC):
    @abstractmethod
    def read(self, name: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def write(self, name: str, value: dict[str, Any]) -> None: ...

    @abstractmethod
    def names(self) -> list[str]: ...


class FileSecretStore(SecretStore):
    def __init__(self, path: Path | None = None):
        self.path = Path(path or sophia_home() / STORE_FILE)

    def read(self, name: str) -> dict[str, Any] | None:
        return self._load().get(name)

    def names(self) -> list[str]:
        return sorted(self._load())

    def write(self, name: str, value: dict[str, Any]) -> None:
        document = {**self._load(), name: value}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".secrets-")
        try:
            os.fchmod(handle, 0o600)  # before a byte is written
            with os.fdopen(handle, "w") as out:
                json.dump(document, out, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def version(self) -> int:
        """Changes whenever the file is replaced (cheap enough to poll every second)."""
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def _load(self) -> dict[str, Any]:
        try:
            mode = stat.S_IMODE(self.path.stat().st_mode)
        except FileNotFoundError:
            return {}
        if mode & 0o077:
            raise PermissionError(
                f"{self.path} is readable by others (mode {mode:o}); run `chmod 600 {self.path}`"
            )
        return json.loads(self.path.read_text())
