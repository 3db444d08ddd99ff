"""tools/install-pi.sh: shellcheck-clean, a full --dry-run plan, and idempotent, undoable
installs into a temporary root (its --root test mode), never touching this machine."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALLER = REPO / "tools" / "install-pi.sh"

# What a Raspberry Pi OS Bookworm image ships in /boot/firmware/config.txt (abridged).
BOOKWORM_CONFIG_TXT = """\
# For more options and information see
# http://rptl.io/configtxt
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
disable_fw_kms_setup=1
arm_64bit=1
disable_overscan=1
arm_boost=1

[cm4]
otg_mode=1

[all]
"""

# Installed path -> (file in the checkout, mode).
INSTALLED = {
    "etc/systemd/system/leukoscope.service": ("systemd/leukoscope.service", 0o644),
    "etc/sysusers.d/leukoscope.conf": ("systemd/leukoscope.sysusers", 0o644),
    "etc/tmpfiles.d/leukoscope.conf": ("systemd/leukoscope.tmpfiles", 0o644),
    "etc/sudoers.d/leukoscope": ("systemd/leukoscope.sudoers", 0o440),
    "etc/systemd/journald.conf.d/leukoscope.conf": ("firmware_config/journald.conf", 0o644),
    "etc/leukoscope/config.toml": ("device/leukoscope/configs/pi.toml", 0o644),
}
# The command on root's PATH: a link into the venv.
COMMAND_LINK = ("usr/local/bin/leukoscope", "/opt/leukoscope/venv/bin/leukoscope")
# Programs the installer may only list under --root; shims record any call.
SYSTEM_PROGRAMS = (
    "apt-get", "dpkg-query", "systemctl", "systemd-sysusers", "systemd-tmpfiles", "userdel",
    "groupdel", "journalctl", "python3", "pip", "useradd",
)  # fmt: skip


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The checkout to install from: the repo itself once it has the Pi config."""
    if (REPO / "device" / "leukoscope" / "configs" / "pi.toml").is_file():
        return REPO
    # Until the daemon's Pi config lands, a copy of the deployment files with a stand-in.
    src = tmp_path / "src"
    for rel in ["tools/install-pi.sh", "constraints/pi.txt", "pyproject.toml"] + [
        f for f, _ in INSTALLED.values() if f != "device/leukoscope/configs/pi.toml"
    ]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    (src / "device" / "configs").mkdir(parents=True)
    (src / "device" / "configs" / "pi.toml").write_text('[camera]\nbackend = "picamera2"\n')
    return src


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty target root with a stock Bookworm boot partition."""
    target = tmp_path / "root"
    (target / "boot" / "firmware").mkdir(parents=True)
    (target / "boot" / "firmware" / "config.txt").write_text(BOOKWORM_CONFIG_TXT)
    return target


@pytest.fixture
def shims(tmp_path: Path) -> Path:
    """A PATH directory whose system programs log their calls and fail."""
    bindir = tmp_path / "shims"
    bindir.mkdir()
    log = tmp_path / "system-calls.log"
    for name in SYSTEM_PROGRAMS:
        shim = bindir / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 1\n')
        shim.chmod(0o755)
    return bindir


def install(
    source: Path, shims: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(source / "tools" / "install-pi.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    log = shims.parent / "system-calls.log"
    assert not log.exists(), f"installer ran system programs: {log.read_text()}"
    return result


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root: relative path -> (mode, content); a link's content is its target."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            files[str(p.relative_to(root))] = (0, os.readlink(p).encode())
        elif p.is_file():
            files[str(p.relative_to(root))] = (stat.S_IMODE(p.stat().st_mode), p.read_bytes())
    return files


def test_installer_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (tools/install-test-deps.sh installs it; CI has it)")
    result = subprocess.run(
        [shellcheck, str(INSTALLER)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


def test_dry_run_prints_the_full_plan_and_writes_nothing(
    source: Path, root: Path, shims: Path
) -> None:
    before = snapshot(root)
    out = install(source, shims, "--dry-run", "--root", str(root)).stdout
    assert snapshot(root) == before
    plan = [
        "would run: apt-get update",
        "apt-get install -y --no-install-recommends python3-picamera2 python3-lgpio python3-venv "
        "fake-hwclock",
        "would run: systemd-sysusers /etc/sysusers.d/leukoscope.conf",
        "would run: systemd-tmpfiles --create /etc/tmpfiles.d/leukoscope.conf",
        "would run: python3 -m venv --system-site-packages /opt/leukoscope/venv",
        f"-c {source}/constraints/pi.txt {source}[device]",
        "would run: systemctl daemon-reload",
        "would run: systemctl enable leukoscope.service",
        "would run: systemctl restart leukoscope.service",
        "would append to /boot/firmware/config.txt: the settings of firmware_config/config.txt",
        "Self-check",
    ] + [f"would write: /{path} (mode {mode:o})" for path, (_, mode) in INSTALLED.items()]
    plan.append(f"would link: /{COMMAND_LINK[0]} -> {COMMAND_LINK[1]}")
    if (source / "models" / "default" / "manifest.json").is_file():
        plan.append(
            "would run: runuser -u leukoscope -- /opt/leukoscope/venv/bin/leukoscope model "
            f"--config /etc/leukoscope/config.toml install --activate {source}/models/default"
        )
    else:
        plan.append(f"warning: no shipped bundle at {source}/models/default")
    missing = [line for line in plan if line not in out]
    assert missing == [], out
    steps = ("apt-get install", "systemd-sysusers", "python3 -m venv", "systemctl enable")
    positions = [out.index(s) for s in steps]
    assert positions == sorted(positions), "steps out of order"


def test_install_creates_exactly_the_expected_files(source: Path, root: Path, shims: Path) -> None:
    out = install(source, shims, "--root", str(root)).stdout
    files = snapshot(root)
    assert set(files) == set(INSTALLED) | {"boot/firmware/config.txt", COMMAND_LINK[0]}
    for path, (src, mode) in INSTALLED.items():
        assert files[path] == (mode, (source / src).read_bytes()), path
    assert files[COMMAND_LINK[0]] == (0, COMMAND_LINK[1].encode())
    config_txt = files["boot/firmware/config.txt"][1].decode()
    assert config_txt.startswith(BOOKWORM_CONFIG_TXT)
    block = config_txt[len(BOOKWORM_CONFIG_TXT) :].splitlines()
    assert block[0].startswith("# BEGIN Leukoscope camera")
    assert block[-1].startswith("# END Leukoscope camera")
    # The fragment's settings and commented-out choices, without its prose.
    assert block[1:-1] == [
        "[all]",
        "camera_auto_detect=1",
        "#dtoverlay=ov5647",
        "#dtoverlay=imx219",
        "#dtoverlay=imx477",
        "#dtoverlay=imx708",
    ]
    # System commands are listed, not run (the shims would have logged them).
    assert "skipped (--root): systemctl enable leukoscope.service" in out
    assert "All checks passed." in out


def test_second_run_changes_nothing(source: Path, root: Path, shims: Path) -> None:
    install(source, shims, "--root", str(root))
    first = snapshot(root)
    out = install(source, shims, "--root", str(root)).stdout
    assert snapshot(root) == first
    assert "wrote:" not in out
    assert "appended" not in out
    assert "kept (exists): /etc/leukoscope/config.toml" in out


def test_rerun_repairs_a_changed_file_and_keeps_the_users_config(
    source: Path, root: Path, shims: Path
) -> None:
    install(source, shims, "--root", str(root))
    unit = root / "etc/systemd/system/leukoscope.service"
    unit.write_text("[Service]\nExecStart=/bin/false\n")
    config = root / "etc/leukoscope/config.toml"
    config.write_text("# edited on the Pi\n")
    out = install(source, shims, "--root", str(root)).stdout
    assert unit.read_bytes() == (source / "systemd/leukoscope.service").read_bytes()
    assert "wrote: /etc/systemd/system/leukoscope.service" in out
    assert config.read_text() == "# edited on the Pi\n"


def test_uninstall_keeps_records_and_config_and_purge_removes_them(
    source: Path, root: Path, shims: Path
) -> None:
    install(source, shims, "--root", str(root))
    records = root / "var/lib/leukoscope/records.sqlite3"
    records.parent.mkdir(parents=True)
    records.write_bytes(b"records")

    out = install(source, shims, "--uninstall", "--root", str(root)).stdout
    assert set(snapshot(root)) == {
        "boot/firmware/config.txt",
        "etc/leukoscope/config.toml",
        "var/lib/leukoscope/records.sqlite3",
    }
    assert (root / "boot/firmware/config.txt").read_text() == BOOKWORM_CONFIG_TXT
    assert "skipped (--root): systemctl disable --now leukoscope.service" in out

    out = install(source, shims, "--uninstall", "--purge", "--root", str(root)).stdout
    assert set(snapshot(root)) == {"boot/firmware/config.txt"}
    assert "skipped (--root): userdel leukoscope" in out


def test_refuses_the_real_root_as_a_test_root(source: Path, shims: Path) -> None:
    result = install(source, shims, "--root", "/", check=False)
    assert result.returncode == 2
    assert "--root /" in result.stderr
    assert result.stdout == ""


def test_self_check_reports_what_is_missing(source: Path, root: Path, shims: Path) -> None:
    install(source, shims, "--root", str(root))
    assert "All checks passed." in install(source, shims, "--check", "--root", str(root)).stdout
    (root / "etc/sudoers.d/leukoscope").unlink()
    result = install(source, shims, "--check", "--root", str(root), check=False)
    assert result.returncode == 1
    assert "FAIL  /etc/sudoers.d/leukoscope missing" in result.stdout
    assert "ok    /etc/systemd/system/leukoscope.service" in result.stdout


def test_signers_make_a_new_config_require_signatures_and_refuse_an_unsigned_first_model(
    source: Path, root: Path, shims: Path, tmp_path: Path
) -> None:
    signers = tmp_path / "allowed_signers"
    signers.write_text('alice@lab namespaces="leukoscope-bundle" ssh-ed25519 AAAAC3Nza\n')
    bundle = tmp_path / "unsigned"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    out = install(
        source, shims, "--root", str(root), "--allowed-signers", str(signers),
        "--bundle", str(bundle),
    ).stdout  # fmt: skip
    config = (root / "etc/leukoscope/config.toml").read_text()
    assert 'allowed_signers = "/etc/leukoscope/allowed_signers"' in config
    assert (root / "etc/leukoscope/allowed_signers").read_text() == signers.read_text()
    assert f"refused: {bundle} is not signed" in out
    assert "install --activate" not in out, "never a silent bypass"
    assert "ok    model updates must be signed (1 signer(s)" in out

    (bundle / "manifest.json.sig").write_text("signature")
    out = install(source, shims, "--root", str(root), "--bundle", str(bundle)).stdout
    assert f"install --activate {bundle}" in out


def test_a_signers_file_without_a_bundle_line_is_refused(
    source: Path, root: Path, shims: Path, tmp_path: Path
) -> None:
    signers = tmp_path / "allowed_signers"
    signers.write_text("alice@lab ssh-ed25519 AAAAC3Nza\n")
    result = install(source, shims, "--root", str(root), "--allowed-signers", str(signers),
                     check=False)  # fmt: skip
    assert result.returncode == 2 and "namespace leukoscope-bundle" in result.stderr
    assert not (root / "etc").exists()


def _preflight(source: Path, tmp_path: Path, *args: str, **programs: str):
    """A --dry-run whose uname, python3 and df say what `programs` give (name: output)."""
    bindir = tmp_path / "facts"
    bindir.mkdir(exist_ok=True)
    for name, output in programs.items():
        shim = bindir / name
        shim.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\n")
        shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(source / "tools" / "install-pi.sh"), "--dry-run", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        ({"uname": "armv7l"}, "a 32-bit system (armv7l): the model runtime (ai-edge-litert)"),
        ({"uname": "aarch64", "python3": "3.9"}, "python3 is 3.9; the appliance needs 3.11"),
        (
            {
                "uname": "aarch64",
                "df": "Filesystem 1024-blocks Used Available\n/dev/root 1 1 20480",
            },
            "only 20 MB free on /; the install needs 1024 MB",
        ),
    ],
)
def test_preflight_refuses_with_its_reason_before_anything(
    source: Path, tmp_path: Path, facts: dict[str, str], reason: str
) -> None:
    result = _preflight(source, tmp_path, **facts)
    assert result.returncode == 1, result.stdout
    assert f"install-pi: preflight: {reason}" in result.stderr
    assert "nothing was changed" in result.stderr
    assert "would run" not in result.stdout and "would write" not in result.stdout


def test_preflight_reads_the_os_release_of_the_target(
    source: Path, root: Path, tmp_path: Path
) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("ID=debian\nVERSION_CODENAME=bullseye\n")
    result = _preflight(source, tmp_path, "--root", str(root))
    assert result.returncode == 1
    assert "preflight: OS debian bullseye: made for Raspberry Pi OS Bookworm" in result.stderr
    (root / "etc" / "os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    ok = _preflight(source, tmp_path, "--root", str(root))
    assert ok.returncode == 0 and "OS: debian bookworm" in ok.stdout, ok.stderr
