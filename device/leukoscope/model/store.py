"""The device's model store: install signed bundles, switch atomically, roll back, verify.

Layout of the store folder (config `model.store_dir`, default `STATE_DIR/models`):

    versions/<name>-<version>-<manifest sha256[:12]>/   complete, verified bundles
    active   -> versions/...   the bundle the daemon loads (`paths.bundle` points here)
    previous -> versions/...   what `leukoscope model rollback` returns to
    .lock                      held by the one command changing the store
    .tmp-*, .trash-*, .*.link  work in progress, removed by the next command

Every change is a single rename: a bundle appears in versions/ whole (copied to a
`.tmp-` folder, fsynced, renamed), a link is switched by `os.replace` of a new link,
and a bundle is deleted by renaming it to `.trash-` first. So a crash or power cut at
any moment leaves `active` naming a complete, verified bundle, old or new.

Signatures: `manifest.json.sig` is an OpenSSH signature (`ssh-keygen -Y sign`) of the
manifest in namespace `leukoscope-bundle`. The manifest lists every file's sha256, so
it covers the whole bundle. The signer is whoever `ssh-keygen -Y find-principals` names
for the signing key in the allowed-signers file; that principal then must verify.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leukoscope.config import Config
from leukoscope.core.errors import BundleError, LeukoscopeError
from leukoscope.core.fsutil import (
    LinkInBundleError,
    fsync_dir,
    mkdir_durable,
    open_regular,
    refuse_links,
)
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import MANIFEST, Manifest, read_manifest, sha256_file

logger = logging.getLogger(__name__)

NAMESPACE = "leukoscope-bundle"
SIGNATURE_FILE = "manifest.json.sig"
#: Written into each version folder at install (not part of the bundle's hashed files).
INSTALL_RECORD = "installed.json"
VERSIONS = "versions"
ACTIVE = "active"
PREVIOUS = "previous"
RELOAD_METHODS = ("signal", "systemctl", "none")
#: The points an install may be killed at, in order: half the files copied; checked but
#: not yet in versions/; in versions/; `previous` updated; the new `active` link made
#: under its temporary name; `active` switched, daemon not yet confirmed; an old version
#: moved to the trash, not yet deleted.
STEPS = ("copy", "verify", "commit", "switch", "link", "reload", "prune")

Reporter = Callable[[str], None]
#: struct ucred: pid, uid, gid.
_CREDS = struct.Struct("3i")


class ModelStoreError(LeukoscopeError, RuntimeError):
    """A store command refused (bad signature, busy store, unknown version, ...)."""


class RolledBackError(ModelStoreError):
    """The daemon did not take the new model; the previous one is active again."""


@dataclass(frozen=True)
class StoreSettings:
    """What the model commands need from the config."""

    store_dir: Path
    keep: int = 3
    allowed_signers: Path | None = None
    require_signature: bool = False
    reload: str = "signal"
    reload_timeout_s: float = 60.0
    control_socket: Path | None = None
    systemd_unit: str = "leukoscope.service"


@dataclass(frozen=True)
class Version:
    """One installed bundle."""

    id: str
    path: Path
    name: str
    version: str
    model_sha256: str
    installed_at: str
    signer: str | None
    active: bool
    previous: bool

    def as_json(self) -> dict[str, Any]:
        """Plain data for `leukoscope model list --json`."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "model_sha256": self.model_sha256,
            "installed_at": self.installed_at,
            "signer": self.signer,
            "active": self.active,
            "previous": self.previous,
        }


def _copy_file(src_root: Path, rel: str, dst: Path) -> None:
    """Copy one regular file of a bundle (never a pipe, never through a link) and fsync it."""
    src = src_root / rel
    try:
        fd = open_regular(refuse_links(src_root, rel), follow=False)
    except FileNotFoundError:
        raise BundleError(f"{src_root}: missing file {rel}") from None
    except LinkInBundleError as exc:
        link = Path(exc.filename).relative_to(src_root)
        raise BundleError(
            f"{src_root}: {link} is a symbolic link: a bundle holds its own files"
        ) from None
    except OSError as exc:
        raise BundleError(f"{src}: cannot read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fin:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with dst.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())


def version_id(manifest: Manifest, manifest_sha256: str) -> str:
    """The version folder's name: `name-version-` and the manifest's sha256 prefix."""
    return f"{manifest.name}-{manifest.version}-{manifest_sha256[:12]}"


def _ssh_keygen(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise ModelStoreError(
            "ssh-keygen not found: install openssh-client to check bundle signatures"
        )
    return subprocess.run([exe, *args], input=stdin, capture_output=True, timeout=60, check=False)


def _signing_key(sig: Path, data: bytes) -> str:
    """The signing key's fingerprint, for messages (the signature is not trusted here)."""
    res = _ssh_keygen(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig)], data)
    out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
    for word in out.split():
        if word.startswith("SHA256:"):
            return word
    return "an unknown key"


def verify_signature(root: Path, allowed_signers: Path) -> str:
    """Check `root/manifest.json.sig` against the allowed signers; return the signer.

    Raises:
        ModelStoreError: unsigned, signed by a key not allowed, or a bad signature.
    """
    sig = root / SIGNATURE_FILE
    if not allowed_signers.is_file():
        raise ModelStoreError(f"allowed signers file {allowed_signers} does not exist")
    if not sig.is_file():
        raise ModelStoreError(
            f"bundle is not signed (no {SIGNATURE_FILE}) and this device requires a "
            f"signature by a key in {allowed_signers}; sign it with `leukoscope-tools sign`"
        )
    data = (root / MANIFEST).read_bytes()
    found = _ssh_keygen(["-Y", "find-principals", "-s", str(sig), "-f", str(allowed_signers)], b"")
    principals = found.stdout.decode(errors="replace").split()
    if found.returncode != 0 or not principals:
        raise ModelStoreError(
            f"bundle is signed by {_signing_key(sig, data)}, which is not in the allowed "
            f"signers file {allowed_signers}"
        )
    errors = []
    for principal in principals:
        res = _ssh_keygen(
            [
                "-Y", "verify", "-f", str(allowed_signers), "-I", principal,
                "-n", NAMESPACE, "-s", str(sig),
            ],
            data,
        )  # fmt: skip
        if res.returncode == 0:
            return principal
        errors.append(res.stderr.decode(errors="replace").strip())
    detail = "; ".join(e for e in errors if e) or "verification failed"
    raise ModelStoreError(
        f"bad signature on {MANIFEST} (the manifest was changed after signing, or the "
        f"signature is not for namespace {NAMESPACE}): {detail}"
    )


class DaemonLink:
    """Talks to the running daemon: what model it runs, and asking it to reload."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings

    def status(self) -> dict[str, Any] | None:
        """The daemon's state (plus its `pid`), or None when no daemon answers.

        The pid comes from the socket itself (SO_PEERCRED: the process that listens), so
        the signal goes to the process that serves this config's control socket.
        """
        path = self.settings.control_socket
        if path is None:
            return None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5.0)
                sock.connect(str(path))
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
                sock.sendall(b'{"cmd": "status"}\n')
                with sock.makefile("rb") as f:
                    line = f.readline()
            reply = json.loads(line)
        except (OSError, ValueError):
            return None
        state = reply.get("state") if isinstance(reply, dict) else None
        if not isinstance(state, dict):
            return None
        return {**state, "pid": _CREDS.unpack(creds)[0]}

    def reload(self, status: dict[str, Any] | None) -> None:
        """Ask the daemon to reload its bundle (SIGHUP or `systemctl reload`)."""
        method = self.settings.reload
        if method == "systemctl":
            res = subprocess.run(
                ["systemctl", "reload", self.settings.systemd_unit],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if res.returncode != 0:
                raise ModelStoreError(
                    f"systemctl reload {self.settings.systemd_unit} failed: {res.stderr.strip()}"
                )
        elif method == "signal":
            pid = (status or {}).get("pid")
            if not isinstance(pid, int) or pid <= 1:
                raise ModelStoreError("the daemon's status does not give its pid to signal")
            try:
                os.kill(pid, signal.SIGHUP)
            except OSError as exc:
                raise ModelStoreError(f"cannot signal the daemon (pid {pid}): {exc}") from None

    def wait_for(self, model_sha256: str, before: dict[str, Any]) -> str | None:
        """Wait until the daemon has reloaded (or restarted) and runs the model; else say why.

        Args:
            model_sha256: the new model's sha256, which the daemon's status must report.
            before: the daemon's status from before it was asked to reload.
        """
        deadline = time.monotonic() + self.settings.reload_timeout_s
        pid0, reloads0 = before.get("pid"), int(before.get("reloads") or 0)
        error0 = _model_error(before)
        last = "the daemon did not reload"
        while time.monotonic() < deadline:
            status = self.status()
            if status is None:
                last = "the daemon stopped answering"
            else:
                model = status.get("model") or {}
                error = _model_error(status)
                restarted = status.get("pid") != pid0
                reloaded = restarted or int(status.get("reloads") or 0) > reloads0
                if reloaded and model.get("sha256") == model_sha256 and not error:
                    return None
                if error and error != error0 and not restarted:
                    return f"the daemon refused the new model ({error})"
                if reloaded and not restarted:
                    kept = f"{model.get('name')} {model.get('version')}"
                    return f"the daemon reloaded but runs {kept}, not the new model"
                if restarted:
                    last = f"the restarted daemon is {status.get('phase')} without the new model"
            time.sleep(0.2)
        return f"{last} within {self.settings.reload_timeout_s:.0f} s"


def _model_error(status: dict[str, Any]) -> str | None:
    """Why the daemon's model is not healthy (a failed reload, a model fault), or None."""
    error = status.get("model_error") or (status.get("faults") or {}).get("model")
    return str(error) if error else None


class ModelStore:
    """The versioned bundles in one folder, and the links that pick the active one."""

    def __init__(
        self,
        settings: StoreSettings,
        daemon: DaemonLink | None = None,
        *,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        """Args:
        settings: the store's folder, signers and how to reach the daemon.
        daemon: the running daemon's link (default: from the settings).
        on_step: called with each of `STEPS` as an install or prune reaches it (the
            crash tests kill or damage the install there).
        """
        self.settings = settings
        self.root = Path(settings.store_dir)
        self.versions = self.root / VERSIONS
        self.daemon = daemon if daemon is not None else DaemonLink(settings)
        self._on_step = on_step

    def _step(self, step: str) -> None:
        if self._on_step is not None:
            self._on_step(step)

    # -- reading ------------------------------------------------------------------------

    def link(self, name: str) -> str | None:
        """The version id a link (`active` or `previous`) names, or None."""
        try:
            target = os.readlink(self.root / name)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ModelStoreError(f"{self.root / name}: not a link ({exc.strerror})") from None
        return Path(target).name

    def list(self) -> list[Version]:
        """Every installed version, newest first (the `.tmp-`/`.trash-` folders excluded)."""
        active, previous = self.link(ACTIVE), self.link(PREVIOUS)
        out = []
        if self.versions.is_dir():
            for path in self.versions.iterdir():
                if path.name.startswith(".") or not path.is_dir():
                    continue
                out.append(self._describe(path, active, previous))
        return sorted(out, key=lambda v: (v.installed_at, v.id), reverse=True)

    def _describe(self, path: Path, active: str | None, previous: str | None) -> Version:
        record: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            record = json.loads((path / INSTALL_RECORD).read_text())
        name = version = sha = "?"
        with contextlib.suppress(BundleError):
            m = read_manifest(path)
            name, version, sha = m.name, m.version, m.model_sha256
        return Version(
            id=path.name,
            path=path,
            name=name,
            version=version,
            model_sha256=sha,
            installed_at=str(record.get("installed_at", "")),
            signer=record.get("signer"),
            active=path.name == active,
            previous=path.name == previous,
        )

    def find(self, ident: str) -> Version:
        """An installed version by id, id prefix, `name-version`, or `active`/`previous`."""
        versions = self.list()
        if ident in (ACTIVE, PREVIOUS):
            target = self.link(ident)
            if target is None:
                raise ModelStoreError(f"no {ident} model in {self.root}")
            ident = target
        exact = [v for v in versions if v.id == ident]
        matches = exact or [
            v
            for v in versions
            if (ident and v.id.startswith(ident)) or f"{v.name}-{v.version}" == ident
        ]  # an empty prefix would match whatever happens to be installed
        if len(matches) != 1:
            known = ", ".join(v.id for v in versions) or "none"
            what = "no installed model" if not matches else "more than one installed model"
            raise ModelStoreError(f"{what} matches {ident!r} (installed: {known})")
        return matches[0]

    def verify(self, ident: str) -> tuple[Version, str]:
        """Re-check an installed version: hashes, signature, golden; return it and a summary."""
        v = self.find(ident)
        signer = self.check_signature(v.path)
        bundle = load_bundle(v.path)
        by = f", signed by {signer}" if signer else ""
        return v, f"{bundle.label} ok (sha256 {bundle.manifest.model_sha256[:12]}...{by})"

    # -- changing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        mkdir_durable(self.versions)  # a first install must not vanish with its folder
        with (self.root / ".lock").open("a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ModelStoreError(
                    f"another model command is changing {self.root}; try again when it is done"
                ) from None
            self._clean_leftovers()
            yield

    def _clean_leftovers(self) -> None:
        """Remove what a killed command left: half copies, half deletions, unused links."""
        for parent in (self.root, self.versions):
            for path in parent.iterdir():
                name = path.name
                if name.startswith((".tmp-", ".trash-")) and path.is_dir():
                    logger.info("removing leftover %s", path)
                    shutil.rmtree(path, ignore_errors=True)
                elif name.endswith(".link") and name.startswith("."):
                    path.unlink(missing_ok=True)

    def check_signature(self, root: Path) -> str | None:
        """The signer of a bundle folder, None if unsigned and allowed; else raise.

        Raises:
            ModelStoreError: a signature is required and missing, or it does not verify.
        """
        allowed = self.settings.allowed_signers
        if allowed is None:
            if self.settings.require_signature:
                raise ModelStoreError(
                    "signatures are required but no allowed signers file is configured"
                )
            return None
        if not (root / SIGNATURE_FILE).exists() and not self.settings.require_signature:
            return None
        return verify_signature(root, allowed)

    def install(self, src: Path, *, activate: bool, report: Reporter) -> Version:
        """Check a bundle and add it to the store; with `activate`, switch the daemon to it.

        Raises:
            BundleError: the bundle is malformed, tampered with, or fails its golden check.
            ModelStoreError: bad or missing signature, busy store; RolledBackError if the
                daemon did not take it (the previous model is active again).
        """
        src = Path(src)
        manifest = read_manifest(src)
        with self._locked():
            manifest_sha = sha256_file(src / MANIFEST)
            vid = version_id(manifest, manifest_sha)
            dest = self.versions / vid
            if dest.is_dir() and self._intact(dest, report):
                report(f"{vid} is already installed")
            else:
                self._add(src, manifest_sha, vid, report)
            version = self._describe(dest, self.link(ACTIVE), self.link(PREVIOUS))
            if activate:
                version = self._switch(version, report)
            self._prune(report)
        return version

    def _intact(self, path: Path, report: Reporter) -> bool:
        """Whether an installed copy still passes its checks; a damaged one is removed.

        Raises:
            ModelStoreError: the damaged copy is the active one (it cannot be replaced in
                one step; activating another version first frees it).
        """
        try:
            self.check_signature(path)
            load_bundle(path)
        except (BundleError, ModelStoreError) as exc:
            if self.link(ACTIVE) == path.name:
                raise ModelStoreError(
                    f"the installed copy of {path.name} is damaged and active ({exc}); "
                    "activate another version, then install this one again"
                ) from None
            report(f"the installed copy of {path.name} is damaged ({exc}); replacing it")
            self._delete(path)
            return False
        return True

    def _delete(self, path: Path) -> None:
        """Remove an installed version: one rename out of versions/, then the deletion."""
        trash = self.versions / f".trash-{path.name}"
        os.rename(path, trash)
        fsync_dir(self.versions)
        self._step("prune")
        shutil.rmtree(trash, ignore_errors=True)

    def _add(self, src: Path, manifest_sha: str, vid: str, report: Reporter) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.versions))
        try:
            _copy_file(src, MANIFEST, tmp / MANIFEST)
            if sha256_file(tmp / MANIFEST) != manifest_sha:
                raise BundleError(f"{src}: {MANIFEST} changed while it was being installed")
            names = sorted(read_manifest(tmp).files)
            if (src / SIGNATURE_FILE).exists():
                names.append(SIGNATURE_FILE)
            report(f"copying {len(names)} files into the store")
            for i, rel in enumerate(names):
                _copy_file(src, rel, tmp / rel)
                if i == len(names) // 2:
                    self._step("copy")
            # Everything below checks the copy, so what was checked is what is installed.
            try:
                signer = self.check_signature(tmp)
            except ModelStoreError as exc:
                raise ModelStoreError(str(exc).replace(str(tmp), str(src))) from None
            report(
                f"signature ok: signed by {signer}"
                if signer
                else "signature not checked (no model.allowed_signers in the config)"
            )
            try:
                bundle = load_bundle(tmp)
            except BundleError as exc:  # name the bundle as the maintainer gave it
                raise BundleError(str(exc).replace(str(tmp), str(src))) from None
            report(f"verified {bundle.label}: hashes, input size and golden outputs ok")
            record = {
                "installed_at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
                "signer": signer,
                "source": str(src),
            }
            with (tmp / INSTALL_RECORD).open("w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            for sub in sorted({p.parent for p in tmp.rglob("*")}, reverse=True):
                fsync_dir(sub)
            os.chmod(tmp, 0o755)
            self._step("verify")
            os.rename(tmp, self.versions / vid)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.versions)
        self._step("commit")
        report(f"installed {vid}")

    def _set_link(self, name: str, vid: str | None) -> None:
        """Point link `name` at a version (or remove it) in one rename, then fsync."""
        path = self.root / name
        if vid is None:
            path.unlink(missing_ok=True)
        else:
            tmp = self.root / f".{name}.{os.getpid()}.link"
            tmp.unlink(missing_ok=True)
            os.symlink(f"{VERSIONS}/{vid}", tmp)
            if name == ACTIVE:
                self._step("link")
            os.replace(tmp, path)
        fsync_dir(self.root)

    def activate(self, ident: str, *, report: Reporter) -> Version:
        """Make an installed version active (after re-checking it) and reload the daemon."""
        with self._locked():
            version = self.find(ident)
            self.check_signature(version.path)
            load_bundle(version.path)
            version = self._switch(version, report)
            self._prune(report)
            return version

    def rollback(self, *, report: Reporter) -> Version:
        """Go back to the previous version (the current one becomes `previous`)."""
        if self.link(PREVIOUS) is None:
            raise ModelStoreError(f"no previous model to roll back to in {self.root}")
        return self.activate(PREVIOUS, report=report)

    def _switch(self, version: Version, report: Reporter) -> Version:
        old_active, old_previous = self.link(ACTIVE), self.link(PREVIOUS)
        status = self.daemon.status()
        if old_active == version.id:
            report(f"{version.id} is already active")
            running = ((status or {}).get("model") or {}).get("sha256")
            if status is not None and running != version.model_sha256:
                # A switch whose reload never happened (the command was killed): finish it.
                why = self._reload(version, status, report)
                if why is not None:
                    raise ModelStoreError(
                        f"{why}; `leukoscope model rollback` returns to {old_previous}"
                    )
            return self._describe(version.path, version.id, old_previous)
        if old_active is not None:
            self._set_link(PREVIOUS, old_active)
        self._step("switch")
        self._set_link(ACTIVE, version.id)
        report(f"switched active model to {version.id}")
        self._step("reload")
        why = self._reload(version, status, report)
        if why is not None:
            self._set_link(ACTIVE, old_active)
            self._set_link(PREVIOUS, old_previous)
            back = old_active or "no model"
            if old_active is not None and status is not None:
                with contextlib.suppress(ModelStoreError):
                    self.daemon.reload(self.daemon.status())
            raise RolledBackError(f"{why}; rolled back to {back}")
        return self._describe(version.path, version.id, old_active)

    def _reload(
        self, version: Version, status: dict[str, Any] | None, report: Reporter
    ) -> str | None:
        """Ask the daemon to load the new active bundle; None if it runs it, else why not."""
        if self.settings.reload == "none":
            report("daemon reload disabled in config: it will load the new model on restart")
            return None
        if status is None:
            report("no daemon running: it will load the new model when it starts")
            return None
        try:
            self.daemon.reload(status)
        except ModelStoreError as exc:
            return str(exc)
        report(f"asked the daemon to reload; waiting up to {self.settings.reload_timeout_s:.0f} s")
        why = self.daemon.wait_for(version.model_sha256, status)
        if why is None:
            report(f"the daemon runs {version.name} {version.version} and reports it healthy")
        return why

    def _prune(self, report: Reporter) -> None:
        """Keep `keep` versions, newest first; never delete the active, previous or newest."""
        versions = self.list()
        kept = [v for i, v in enumerate(versions) if v.active or v.previous or i == 0]
        for v in versions:
            if len(kept) >= self.settings.keep:
                break
            if v not in kept:
                kept.append(v)
        for v in versions:
            if v in kept:
                continue
            self._delete(v.path)
            report(f"removed old model {v.id}")


def settings_from_config(cfg: Config) -> StoreSettings:
    """The store's settings from the appliance config (its `[model]` and `[paths]`).

    Raises:
        ModelStoreError: `paths.bundle` is not the store's `active` link, so the daemon
            would never load what the model commands install.
    """
    model, paths = cfg.model, cfg.paths
    settings = StoreSettings(
        store_dir=Path(model.store_dir or paths.state_dir / "models"),
        keep=model.keep,
        allowed_signers=model.allowed_signers,
        require_signature=model.require_signature,
        reload=model.reload,
        reload_timeout_s=model.reload_timeout_s,
        control_socket=paths.control_socket,
    )
    want = settings.store_dir / ACTIVE
    if os.path.abspath(paths.bundle) != os.path.abspath(want):
        raise ModelStoreError(
            f"{cfg.source}: paths.bundle is {paths.bundle}, but the model store switches "
            f'{want}: set paths.bundle = "{want}" so the daemon loads installed models'
        )
    return settings
