"""SSH to a rented instance with the system's OpenSSH client: run a command, stream a file
in or out (through the command's stdin/stdout, so only `ssh` is needed), wait until it
answers. A dropped connection (exit 255) is an `SshError`, not the command's failure."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sophia_assets.gpu.clock import Clock

SSH_FAILED = 255  # OpenSSH's own exit status: connection refused, dropped, auth failed


class SshError(RuntimeError):
    """The SSH connection failed or dropped."""


class HostKeyRejected(SshError):
    """The machine at the address presented a host key other than the one pinned for it."""


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str
    key_path: Path
    known_hosts: Path  # holds only the key handed to this instance at launch
    port: int = 22
    connect_timeout_s: int = 10

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def command(self, remote: str) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.key_path),
            "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            f"ConnectTimeout={self.connect_timeout_s}",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "LogLevel=ERROR",
            f"{self.user}@{self.host}",
            remote,
        ]

    def run(self, remote: str, stdin: bytes | None = None, timeout_s: float = 600) -> bytes:
        """Runs `remote`, returns its stdout; raises on a non-zero exit."""
        result = subprocess.run(
            self.command(remote), input=stdin, capture_output=True, timeout=timeout_s
        )
        self.check(result.returncode, result.stderr.decode(errors="replace"), remote)
        return result.stdout

    def check(self, returncode: int, stderr: str, remote: str) -> None:
        tail = stderr.strip()[-1500:]
        if returncode == SSH_FAILED and "Host key verification failed" in stderr:
            raise HostKeyRejected(
                f"{self.address} presented a host key other than the one handed to it at launch "
                "(a recycled address or someone in the middle); not connecting"
            )
        if returncode == SSH_FAILED:
            raise SshError(f"SSH to {self.address} failed or dropped: {tail or 'no message'}")
        if returncode != 0:
            raise RuntimeError(
                f"`{_short(remote)}` on {self.address} exited with {returncode}: {tail}"
            )

    def put(self, data: bytes, remote_path: str) -> None:
        self.run(f"cat > {shlex.quote(remote_path)}", stdin=data)

    def get(self, remote_path: str) -> bytes:
        return self.run(f"cat {shlex.quote(remote_path)}")

    def wait_ready(self, clock: Clock, timeout_s: float, interval_s: float = 2.0) -> None:
        """Waits until a login succeeds: an instance is 'active' before its sshd answers."""
        deadline = clock.monotonic() + timeout_s
        while True:
            try:
                self.run("true", timeout_s=self.connect_timeout_s + 5)
                return
            except HostKeyRejected:
                raise  # waiting will not change the key
            except (SshError, subprocess.TimeoutExpired) as err:
                if clock.monotonic() >= deadline:
                    raise SshError(
                        f"{self.address} did not accept SSH within {timeout_s:.0f} s: {err}"
                    ) from err
            clock.sleep(interval_s)


def _short(command: str) -> str:
    return command if len(command) <= 80 else command[:77] + "..."
