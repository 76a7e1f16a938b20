"""A real OpenSSH server on loopback for the SSH tests, started and stopped by the tests.

`ensure_sshd()` installs Debian's openssh-server when it is missing (the project's test setup
does this, not a person); it needs root and apt-get, and says so when it cannot."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil
import yaml

SSHD = Path("/usr/sbin/sshd")


class SshdUnavailable(RuntimeError):
    pass


def ensure_sshd() -> Path:
    if SSHD.exists():
        return SSHD
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SshdUnavailable(
            "openssh-server is not installed and this user cannot install it "
            "(needs root and apt-get); install it with `apt-get install openssh-server`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:  # stale package lists: refresh once
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=900)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if not SSHD.exists():
        raise SshdUnavailable(f"apt-get install openssh-server failed: {result.stderr[-800:]}")
    return SSHD


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackSshd:
    """sshd on 127.0.0.1 accepting one generated key for the current user."""

    def __init__(self, root: Path):
        self.root = root
        self.user = getpass.getuser()
        self.port = _free_port()
        self.client_key = root / "client_key"
        self.process: subprocess.Popen | None = None

    def start(self) -> LoopbackSshd:
        binary = ensure_sshd()
        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            if not (self.root / name).exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.root / name)],
                    check=True,
                )
        authorized = self.root / "authorized_keys"
        authorized.write_text((self.root / "client_key.pub").read_text())
        authorized.chmod(0o600)
        config = self.root / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.root / 'host_key'}\n"
            f"PidFile {self.root / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\n"
            f"StrictModes no\nAllowUsers {self.user}\nLogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        self.process = subprocess.Popen(
            [str(binary), "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "sshd.log", "w"),  # noqa: SIM115 - lives as long as sshd
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)  # polling a port that is coming up
        raise RuntimeError("sshd did not listen within 15 s")

    def apply_cloud_init(self, user_data: str) -> None:
        """What cloud-init does at first boot with a launch's `ssh_keys`: the host key
        becomes the one given, and sshd restarts with it."""
        config = yaml.safe_load(user_data) if user_data else None
        private = ((config or {}).get("ssh_keys") or {}).get("ed25519_private")
        if not private:
            return
        self.stop()
        host_key = self.root / "host_key"
        host_key.write_text(private)
        host_key.chmod(0o600)
        self.start()

    def drop_connections(self) -> int:
        """Kills the per-connection sshd processes: every session drops, the server stays."""
        children = psutil.Process(self.process.pid).children(recursive=False)
        for child in children:
            child.kill()
        return len(children)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.drop_connections()
            self.process.terminate()
            self.process.wait(timeout=10)
