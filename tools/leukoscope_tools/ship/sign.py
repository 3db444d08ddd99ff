"""Sign a bundle's manifest with a maintainer's SSH key (`leukoscope-tools sign`).

The manifest lists every file's sha256, so its signature covers the whole bundle. The
signature is OpenSSH's (`ssh-keygen -Y sign`, namespace `leukoscope-bundle`), written to
`manifest.json.sig`; the Pi checks it against its allowed-signers file, whose lines read
`PRINCIPAL namespaces="leukoscope-bundle" ssh-ed25519 AAAA...`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from leukoscope.core.errors import BundleError, LeukoscopeError
from leukoscope.model.manifest import MANIFEST, read_manifest, sha256_file
from leukoscope.model.store import NAMESPACE, SIGNATURE_FILE


class SigningError(LeukoscopeError, RuntimeError):
    """ssh-keygen is missing or could not sign with the given key."""


def _ssh_keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise SigningError("ssh-keygen not found: install OpenSSH (openssh-client)")
    return exe


def check_hashes(bundle: Path) -> None:
    """Refuse to sign a bundle whose files do not match its manifest."""
    manifest = read_manifest(bundle)
    for rel, want in sorted(manifest.files.items()):
        path = bundle / rel
        if not path.is_file():
            raise BundleError(f"{bundle}: missing file {rel}")
        if sha256_file(path) != want:
            raise BundleError(f"{bundle}: {rel}: sha256 does not match the manifest")


def sign_bundle(bundle: Path, key: Path) -> Path:
    """Write `bundle/manifest.json.sig`, signed with `key`; return its path.

    Args:
        bundle: a bundle folder (checked first: schema and every file's hash).
        key: a private key, or a public key whose private half is in ssh-agent.
    """
    bundle = Path(bundle)
    check_hashes(bundle)
    key = Path(key).expanduser()
    if not key.is_file():
        raise SigningError(f"no key file at {key}")
    data = (bundle / MANIFEST).read_bytes()
    # The manifest goes in on stdin and the signature comes out on stdout, so an old
    # signature never makes ssh-keygen stop to ask; a passphrase is asked on the tty.
    res = subprocess.run(
        [_ssh_keygen(), "-q", "-Y", "sign", "-n", NAMESPACE, "-f", str(key)],
        input=data,
        capture_output=True,
        timeout=300,
        check=False,
    )
    if res.returncode != 0 or b"BEGIN SSH SIGNATURE" not in res.stdout:
        detail = res.stderr.decode(errors="replace").strip() or f"exit status {res.returncode}"
        raise SigningError(f"ssh-keygen could not sign with {key}: {detail}")
    out = bundle / SIGNATURE_FILE
    tmp = out.with_name(f".{SIGNATURE_FILE}.tmp")
    tmp.write_bytes(res.stdout)
    os.replace(tmp, out)
    return out


def fingerprint(key: Path) -> str:
    """`SHA256:...` of a key (private or public)."""
    res = subprocess.run(
        [_ssh_keygen(), "-l", "-f", str(Path(key).expanduser())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    parts = res.stdout.split()
    return parts[1] if res.returncode == 0 and len(parts) > 1 else "?"


def allowed_signers_line(key: Path, principal: str) -> str:
    """The line that trusts `key` for bundles in a Pi's allowed-signers file."""
    key = Path(key).expanduser()
    pub = key if key.suffix == ".pub" else key.with_name(key.name + ".pub")
    if pub.is_file():
        text = pub.read_text().split()
    else:
        res = subprocess.run(
            [_ssh_keygen(), "-y", "-f", str(key)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        text = res.stdout.split()
    if len(text) < 2:
        raise SigningError(f"cannot read the public key of {key}")
    return f'{principal} namespaces="{NAMESPACE}" {text[0]} {text[1]}'
