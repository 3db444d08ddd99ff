"""A private sshd on 127.0.0.1 for the tests that drive real SSH (push, the fleet playbooks).

Throwaway host and user keys and config in a temporary folder; only the throwaway user
key may log in, as the user running the tests. `running_sshd()` stops it in `finally`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or next(
    (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None
)
MISSING = [n for n, p in (("sshd", SSHD), ("ssh", shutil.which("ssh")),
                          ("scp", shutil.which("scp")), ("ssh-keygen", shutil.which("ssh-keygen")))
           if p is None]  # fmt: skip
SKIP_NO_SSH = pytest.mark.skipif(
    bool(MISSING),
    reason=f"OpenSSH missing ({', '.join(MISSING)}): tools/install-test-deps.sh installs "
    "openssh-server and openssh-client",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def current_user() -> str:
    return os.environ.get("USER") or subprocess.check_output(["id", "-un"], text=True).strip()


@dataclass
class Sshd:
    """A private sshd and what a client needs to reach it."""

    port: int
    user: str
    key: Path
    known_hosts: Path

    def push_args(self) -> list[str]:
        return [
            "-p", str(self.port), "-i", str(self.key),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        ]  # fmt: skip

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-p", str(self.port), "-i", str(self.key), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
             f"{self.user}@127.0.0.1", command],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip


@contextmanager
def running_sshd(d: Path, user_key: Path | None = None) -> Iterator[Sshd]:
    """sshd -D on 127.0.0.1 with its files in `d`; `user_key` (made if None) may log in."""
    assert SSHD is not None
    d.mkdir(parents=True, exist_ok=True)
    names = ["host_key"] + ([] if user_key else ["user_key"])
    for name in names:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)  # fmt: skip
    key = user_key or d / "user_key"
    (d / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    port = free_port()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    user = current_user()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "StrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        f"AllowUsers {user}\nSubsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 50\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.DEVNULL, stderr=(d / "sshd.log").open("w"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.skip(f"sshd would not start: {(d / 'sshd.log').read_text().strip()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"sshd did not listen on port {port}")
            time.sleep(0.1)
        yield Sshd(port, user, key, d / "known_hosts")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
