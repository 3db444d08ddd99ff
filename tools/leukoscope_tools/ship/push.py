"""Send a bundle to one or more Pis over SSH and install it there (`leukoscope-tools push`).

Per host: the bundle's files are copied with the system's `scp` into the Pi's incoming
folder under a hidden `.partial` name, renamed when the copy is complete (so a cut
connection never leaves something that looks like a bundle), and installed with
`leukoscope model install` over `ssh`; the upload is removed afterwards. The Pi checks
everything again (hashes, signature, golden outputs) before the model goes live.
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from leukoscope.model.manifest import MANIFEST, read_manifest
from leukoscope.model.store import SIGNATURE_FILE
from leukoscope_tools.ship.sign import check_hashes

#: The Pi's upload folder (systemd/leukoscope.tmpfiles) and how a maintainer runs the
#: device command there (systemd/leukoscope.sudoers: as the appliance's user, not root).
DEFAULT_INCOMING = "/var/lib/leukoscope-incoming"
DEFAULT_REMOTE = "sudo -n -u leukoscope /opt/leukoscope/venv/bin/leukoscope"


@dataclass(frozen=True)
class SshOptions:
    """How to reach the Pis: port, identity file and extra `-o` options."""

    port: int | None = None
    identity: Path | None = None
    options: tuple[str, ...] = ()
    connect_timeout_s: int = 15
    limit_kbps: int | None = None

    def common(self) -> list[str]:
        """Options that ssh and scp share (`-o BatchMode`: never wait for a password)."""
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}"]
        if self.identity is not None:
            args += ["-i", str(self.identity)]
        for opt in self.options:
            args += ["-o", opt]
        return args

    def ssh(self, host: str, command: str) -> list[str]:
        """An ssh command line that runs `command` on `host`."""
        port = ["-p", str(self.port)] if self.port else []
        return ["ssh", *port, *self.common(), "--", host, command]

    def scp(self, sources: Sequence[Path], host: str, dest: str) -> list[str]:
        """An scp command line that copies `sources` into folder `dest` on `host`."""
        port = ["-P", str(self.port)] if self.port else []
        limit = ["-l", str(self.limit_kbps)] if self.limit_kbps else []
        return ["scp", "-q", "-p", *port, *limit, *self.common(), "--", *map(str, sources),
                f"{host}:{dest}/"]  # fmt: skip


@dataclass
class HostResult:
    """What happened on one host."""

    host: str
    ok: bool
    message: str
    output: list[str] = field(default_factory=list)


def _bundle_files(bundle: Path) -> list[str]:
    """The files to send: the manifest, its signature if any, and what the manifest lists."""
    manifest = read_manifest(bundle)
    names = [MANIFEST, *sorted(manifest.files)]
    if (bundle / SIGNATURE_FILE).is_file():
        names.append(SIGNATURE_FILE)
    return names


def _upload_plan(names: list[str]) -> dict[str, list[str]]:
    """Files grouped by their sub-folder, so one scp per folder keeps the layout."""
    groups: dict[str, list[str]] = {}
    for rel in names:
        parent = str(Path(rel).parent)
        groups.setdefault("" if parent == "." else parent, []).append(rel)
    return groups


def push_one(
    bundle: Path,
    host: str,
    *,
    ssh: SshOptions,
    activate: bool,
    incoming: str,
    remote: str,
    say: Callable[[str], None],
) -> HostResult:
    """Upload, install and clean up on one host; never raises for a host's failure."""
    names = _bundle_files(bundle)
    upload = f"{incoming}/{bundle.name}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    partial = f"{incoming}/.{Path(upload).name}.partial"
    q = shlex.quote
    dirs = sorted({d for d in _upload_plan(names) if d})
    mkdirs = " ".join(q(f"{partial}/{d}") for d in dirs)
    prep = f"umask 022 && mkdir -p -- {q(partial)} {mkdirs}"
    res = _run(ssh.ssh(host, prep))
    if res.returncode != 0:
        return HostResult(host, False, f"cannot reach or write {incoming}: {_last(res)}")
    total = sum((bundle / n).stat().st_size for n in names)
    say(f"{host}: uploading {len(names)} files ({total / 1e6:.1f} MB)")
    sent = 0
    for sub, files in _upload_plan(names).items():
        dest = f"{partial}/{sub}" if sub else partial
        res = _run(ssh.scp([bundle / f for f in files], host, dest))
        if res.returncode != 0:
            _run(ssh.ssh(host, f"rm -rf -- {q(partial)}"))
            return HostResult(host, False, f"upload failed: {_last(res)}")
        sent += sum((bundle / f).stat().st_size for f in files)
        say(f"{host}: {sent * 100 // max(total, 1)}% uploaded")
    install = f"{remote} model install {q(upload)}" + (" --activate" if activate else "")
    # Readable by the appliance's user, renamed only when whole, removed after install.
    script = (
        f"chmod -R a+rX -- {q(partial)} && mv -T -- {q(partial)} {q(upload)} && "
        f"{{ {install}; rc=$?; rm -rf -- {q(upload)}; exit $rc; }}"
    )
    say(f"{host}: installing{' and activating' if activate else ''}")
    res = _run(ssh.ssh(host, script))
    output = (res.stdout + res.stderr).splitlines()
    for line in output:
        say(f"{host}:   {line}")
    if res.returncode != 0:
        return HostResult(host, False, _last(res), output)
    done = [line for line in output if line.startswith("ok:")]
    return HostResult(host, True, done[-1][3:].strip() if done else "installed", output)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)  # fmt: skip


def _last(res: subprocess.CompletedProcess[str]) -> str:
    """The most telling line of a failed command: its last error line."""
    lines = [ln.strip() for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else f"exit status {res.returncode}"


def push(
    bundle: Path,
    hosts: Sequence[str],
    *,
    ssh: SshOptions,
    activate: bool = False,
    incoming: str = DEFAULT_INCOMING,
    remote: str = DEFAULT_REMOTE,
    say: Callable[[str], None] | None = None,
) -> list[HostResult]:
    """Push one bundle to each host in turn; one result per host.

    Raises:
        BundleError: the bundle itself is broken (checked once, before any host).
    """
    bundle = Path(bundle)
    check_hashes(bundle)
    if not (bundle / SIGNATURE_FILE).is_file():
        (say or _stderr)(
            f"warning: {bundle} is not signed; Pis that require signatures will refuse it "
            "(sign it with `leukoscope-tools sign`)"
        )
    results = []
    for host in hosts:
        results.append(
            push_one(
                bundle, host, ssh=ssh, activate=activate, incoming=incoming, remote=remote,
                say=say or _stderr,
            )
        )  # fmt: skip
    return results


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
