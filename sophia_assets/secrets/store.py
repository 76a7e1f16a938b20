"""Where managed secrets live. Locally a JSON file under SOPHIA_HOME, readable by its owner
only (0600), replaced atomically; in production a Pulumi ESC environment, under
`values.sophia.secrets`, with every password published as `fn::secret`. A secret is a small
document, e.g. `{"current": {...}, "previous": {...}}`; nothing here ever logs one."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import yaml

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


class EscSecretStore(SecretStore):
    """Secrets in the ESC environment `org/project/env` (read by opening it, written by
    updating its definition), so stacks and runs that import it see the new login."""

    def __init__(self, reference: str, token: str | None, api_url: str | None = None):
        self.reference, self.token, self.api_url = reference, token, api_url

    def _secrets(self) -> dict[str, Any]:
        from sophia_assets.secrets.esc import open_environment

        values = open_environment(self.reference, self.token, self.api_url)
        return (values.get("sophia") or {}).get("secrets") or {}

    def read(self, name: str) -> dict[str, Any] | None:
        return self._secrets().get(name)

    def names(self) -> list[str]:
        return sorted(self._secrets())

    def write(self, name: str, value: dict[str, Any]) -> None:
        from sophia_assets.secrets.esc import esc_client, request_timeout

        api = esc_client(self.token or "", self.api_url).esc_api
        org, project, env = self.reference.split("/")
        timeout = request_timeout()
        # The raw YAML: the SDK's model of a definition rejects `fn::secret` under
        # environmentVariables, which real environments use.
        response = api.get_environment_without_preload_content(
            org, project, env, _request_timeout=timeout
        )
        if response.status != 200:
            raise RuntimeError(f"ESC environment {self.reference}: {response.status} on read")
        definition = yaml.safe_load(response.data) or {}
        secrets = definition.setdefault("values", {}).setdefault("sophia", {})
        secrets.setdefault("secrets", {})[name] = _marked(value)
        api.update_environment_yaml(
            org, project, env, yaml.safe_dump(definition), _request_timeout=timeout
        )


def _marked(value: Any) -> Any:
    """Passwords as `fn::secret`, so ESC keeps them encrypted and masks them everywhere."""
    if isinstance(value, dict):
        return {k: {"fn::secret": v} if k == "password" else _marked(v) for k, v in value.items()}
    return value


def configured_store() -> SecretStore:
    """ESC when SOPHIA_SECRET_STORE=esc (environment SOPHIA_ESC_ENVIRONMENT), else the file."""
    if os.environ.get("SOPHIA_SECRET_STORE") == "esc":
        return EscSecretStore(
            os.environ.get("SOPHIA_ESC_ENVIRONMENT", ""),
            os.environ.get("PULUMI_ACCESS_TOKEN"),
            os.environ.get("SOPHIA_ESC_URL") or None,
        )
    return FileSecretStore()
