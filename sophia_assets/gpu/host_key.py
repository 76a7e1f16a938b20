"""A fresh SSH host key per rented instance, so the runner never trusts a key on first use.

The runner generates the key pair, hands it to the instance at launch in cloud-init
`user_data` (cloud-init installs it before sshd starts), and connects with a known_hosts file
that holds only its public half. A machine that answers at the address with any other key (a
recycled address, someone in the middle) fails the connection."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostKey:
    private: str  # OpenSSH PEM; travels only inside the launch request
    public: str  # "ssh-ed25519 AAAA... comment"

    @classmethod
    def generate(cls, comment: str) -> HostKey:
        with tempfile.TemporaryDirectory(prefix="sophia-hostkey-") as tmp:
            path = Path(tmp) / "host_key"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                check=True,
                capture_output=True,
            )
            return cls(path.read_text(), path.with_suffix(".pub").read_text().strip())

    def cloud_init(self) -> str:
        """cloud-config that replaces the image's host keys with this one."""
        private = "\n".join("    " + line for line in self.private.strip().splitlines())
        return (
            "#cloud-config\n"
            "ssh_deletekeys: true\n"
            "ssh_genkeytypes: []\n"
            "ssh_keys:\n"
            "  ed25519_private: |\n"
            f"{private}\n"
            f"  ed25519_public: {self.public}\n"
        )

    def known_hosts_line(self, host: str, port: int) -> str:
        name = host if port == 22 else f"[{host}]:{port}"
        kind, blob = self.public.split()[:2]
        return f"{name} {kind} {blob}\n"

    def pin(self, known_hosts: Path, host: str, port: int) -> None:
        """Writes a known_hosts file that trusts this key at host:port and nothing else."""
        known_hosts.write_text(self.known_hosts_line(host, port))
        known_hosts.chmod(0o600)
