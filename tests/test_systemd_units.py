"""The systemd files shipped for the Pi: they parse, they sandbox, they agree with the installer.

These run the real `systemd-analyze`, `systemd-sysusers`, `systemd-tmpfiles` and `visudo`
(`tools/install-test-deps.sh` installs them) and skip, saying why, where one is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "leukoscope.service"
INSTALLER = REPO / "tools" / "install-pi.sh"
INSTALLED_EXEC = "/opt/leukoscope/venv/bin/leukoscope"
MAX_EXPOSURE = 4.0


def need(program: str) -> str:
    """The program's path, or a loud skip naming the package that provides it."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} not installed (tools/install-test-deps.sh installs it; CI has it)")
    return path


def unit_entries(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> values in order; repeated keys accumulate, as systemd reads them."""
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


def render(tmp_path: Path, exec_path: str) -> Path:
    """The unit as the installer writes it, with ExecStart pointing at `exec_path`."""
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={INSTALLED_EXEC} " in text
    out = tmp_path / "leukoscope.service"
    out.write_text(text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={exec_path} "))
    return out


@pytest.fixture
def rendered_unit(tmp_path: Path) -> Path:
    """The unit with a real executable: this environment's `leukoscope` console script."""
    exe = Path(sys.prefix) / "bin" / "leukoscope"
    if not exe.is_file():
        pytest.fail(f"{exe} missing: install the package into this venv (make test does)")
    return render(tmp_path, str(exe))


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("systemd-analyze"), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unit_verifies_cleanly(rendered_unit: Path) -> None:
    result = verify(rendered_unit)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on many problems (unknown keys, bad values): stderr must be empty.
    assert result.stderr == "", result.stderr


def test_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    """The check above can fail: the unrendered path does not exist on this machine."""
    missing = tmp_path / "no-such-venv" / "bin" / "leukoscope"
    result = verify(render(tmp_path, str(missing)))
    assert str(missing) in result.stderr


def test_verify_catches_an_unknown_key(rendered_unit: Path) -> None:
    text = rendered_unit.read_text(encoding="utf-8")
    rendered_unit.write_text(text.replace("[Service]\n", "[Service]\nProtectEverything=yes\n"))
    result = verify(rendered_unit)
    assert "ProtectEverything" in result.stderr


def test_security_exposure_is_at_most_4(rendered_unit: Path, capsys: pytest.CaptureFixture) -> None:
    result = subprocess.run(
        [need("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(rendered_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security: leukoscope.service exposure {exposure} {match[2]}")
    assert exposure <= MAX_EXPOSURE, result.stdout


def test_unit_has_the_promised_lifecycle_and_sandbox() -> None:
    entries = unit_entries(UNIT.read_text(encoding="utf-8"))

    def one(key: str) -> str:
        assert key in entries, f"{key} missing from {UNIT.name}"
        return entries[key][-1]

    assert one("Service.Type") == "notify"
    assert one("Service.Restart") == "on-failure"
    assert int(one("Unit.StartLimitBurst")) > 1
    assert one("Service.ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Service.WatchdogSec")
    assert one("Service.User") == "leukoscope"
    assert set(one("Service.SupplementaryGroups").split()) == {"video", "gpio"}
    assert one("Service.ProtectSystem") == "strict"
    assert one("Service.DevicePolicy") == "closed"
    assert one("Service.CapabilityBoundingSet") == ""
    assert one("Service.MemoryMax")
    allowed = {value.split()[0] for value in entries["Service.DeviceAllow"]}
    assert allowed == {"char-video4linux", "char-media", "char-dma_heap", "char-gpiochip"}
    # The lgpio notification pipes need a writable working directory.
    assert one("Service.WorkingDirectory") == "/run/" + one("Service.RuntimeDirectory")


def test_unit_paths_match_the_installer_and_the_daemon() -> None:
    from leukoscope.config import DEFAULT_CONFIG_PATH

    exec_start = unit_entries(UNIT.read_text(encoding="utf-8"))["Service.ExecStart"][-1]
    assert exec_start == f"{INSTALLED_EXEC} run --config {DEFAULT_CONFIG_PATH}"
    installer = INSTALLER.read_text(encoding="utf-8")
    assert f"VENV={Path(INSTALLED_EXEC).parent.parent}\n" in installer
    assert f"CONFIG={DEFAULT_CONFIG_PATH}\n" in installer


def read_db(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles needs root to chown (CI is root)")
def test_sysusers_and_tmpfiles_create_the_user_groups_and_directories(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "sysusers.d").mkdir(parents=True)
    (root / "etc" / "tmpfiles.d").mkdir(parents=True)
    sysusers = root / "etc" / "sysusers.d" / "leukoscope.conf"
    tmpfiles = root / "etc" / "tmpfiles.d" / "leukoscope.conf"
    shutil.copy(SYSTEMD / "leukoscope.sysusers", sysusers)
    shutil.copy(SYSTEMD / "leukoscope.tmpfiles", tmpfiles)
    for cmd in (
        [need("systemd-sysusers"), f"--root={root}", str(sysusers)],
        [need("systemd-tmpfiles"), f"--root={root}", "--create", str(tmpfiles)],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr

    passwd = read_db(root / "etc" / "passwd")
    groups = read_db(root / "etc" / "group")
    assert passwd["leukoscope"][6] == "/usr/sbin/nologin"
    assert "leukoscope" in groups["video"][3].split(",")
    assert "leukoscope" in groups["gpio"][3].split(",")
    assert groups["leukoscope-maint"][3] == ""  # maintainers are added by hand

    state = (root / "var" / "lib" / "leukoscope").stat()
    assert oct(state.st_mode & 0o7777) == "0o750"
    assert (state.st_uid, state.st_gid) == (
        int(passwd["leukoscope"][2]),
        int(passwd["leukoscope"][3]),
    )
    incoming = (root / "var" / "lib" / "leukoscope-incoming").stat()
    assert oct(incoming.st_mode & 0o7777) == "0o2775"
    assert incoming.st_uid == int(passwd["leukoscope"][2])
    assert incoming.st_gid == int(groups["leukoscope-maint"][2])


def test_sudoers_rule_parses_and_is_narrow() -> None:
    rule = SYSTEMD / "leukoscope.sudoers"
    result = subprocess.run(
        [need("visudo"), "-c", "-f", str(rule)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    grants = [
        line for line in rule.read_text(encoding="utf-8").splitlines() if line.startswith("%")
    ]
    # One grant: the model commands, as the appliance user, never as root.
    assert grants == ["%leukoscope-maint ALL=(leukoscope) NOPASSWD: LEUKOSCOPE_MODEL"]
    assert f"Cmnd_Alias LEUKOSCOPE_MODEL = {INSTALLED_EXEC} model *" in rule.read_text()


# Runs inside `unshare --mount`: fake users, the rule and a stand-in leukoscope command
# are bind-mounted over /etc and /opt in that private namespace only, then real sudo is
# asked what each user may do. It refuses to mount anything unless it is in a new mount
# namespace and its work folder is the test's own.
SUDO_PROBE = r"""
set -eu
fake=$1 rule=$2 host_ns=$3
[ "$(readlink /proc/self/ns/mnt)" != "$host_ns" ] || { echo "not in a private namespace"; exit 97; }
case "$fake" in /tmp/*|/var/tmp/*) ;; *) echo "refusing work folder $fake"; exit 97 ;; esac
mkdir -p "$fake/etc" "$fake/sudoers.d" "$fake/opt/leukoscope/venv/bin"
cp /etc/passwd /etc/group "$fake/etc/"
if [ -r /etc/shadow ]; then cp /etc/shadow "$fake/etc/shadow"; else : >"$fake/etc/shadow"; fi
printf '%s\n' 'leukoscope:x:64990:64990::/nonexistent:/usr/sbin/nologin' \
  'maint:x:64991:64991::/tmp:/bin/sh' 'outsider:x:64992:64992::/tmp:/bin/sh' >>"$fake/etc/passwd"
printf '%s\n' 'leukoscope:x:64990:' 'maint:x:64991:' 'outsider:x:64992:' \
  'leukoscope-maint:x:64993:maint' >>"$fake/etc/group"
printf '%s\n' 'leukoscope:!:19000::::::' 'maint:!:19000::::::' \
  'outsider:!:19000::::::' >>"$fake/etc/shadow"
install -m 0440 "$rule" "$fake/sudoers.d/leukoscope"
printf '#!/bin/sh\necho "ran as $(id -un): $*"\n' >"$fake/opt/leukoscope/venv/bin/leukoscope"
chmod 755 "$fake/opt/leukoscope/venv/bin/leukoscope"
for f in passwd group shadow; do mount --bind "$fake/etc/$f" "/etc/$f"; done
mount --bind "$fake/sudoers.d" /etc/sudoers.d
mount --bind "$fake/opt" /opt
set +e
exe=/opt/leukoscope/venv/bin/leukoscope
try() { echo "== $*"; runuser -u "$1" -- sudo -n "${@:2}" 2>&1; echo "rc=$?"; }
try maint -u leukoscope "$exe" model install /var/lib/leukoscope-incoming/b
try maint -u leukoscope "$exe" export --out /var/lib/leukoscope-incoming/x.tar
try maint "$exe" model install /x
try maint -u leukoscope "$exe" run
try maint -u leukoscope /bin/sh -c id
try outsider -u leukoscope "$exe" model list
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private mount namespace")
def test_sudoers_rule_grants_only_the_model_commands_as_leukoscope(tmp_path: Path) -> None:
    """Real sudo: a maintainer may run `leukoscope model|export ...` as leukoscope, nothing more."""
    need("sudo")
    need("runuser")
    unshare = need("unshare")
    if not str(tmp_path).startswith(("/tmp/", "/var/tmp/")):
        pytest.skip(f"the probe only works under /tmp, not {tmp_path}")
    script = tmp_path / "probe.sh"
    script.write_text(SUDO_PROBE)
    host_ns = os.readlink("/proc/self/ns/mnt")
    result = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "bash", str(script),
         str(tmp_path / "fake"), str(SYSTEMD / "leukoscope.sudoers"), host_ns],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    if result.returncode != 0 and "== " not in result.stdout:
        pytest.skip(f"no private mount namespace here: {result.stdout}{result.stderr}".strip())
    runs = result.stdout.split("== ")[1:]
    assert len(runs) == 6, result.stdout + result.stderr
    allowed, export, as_root, other_command, shell, outsider = runs
    assert "ran as leukoscope: model install /var/lib/leukoscope-incoming/b" in allowed
    assert allowed.rstrip().endswith("rc=0")
    assert "ran as leukoscope: export --out /var/lib/leukoscope-incoming/x.tar" in export
    for refused in (as_root, other_command, shell, outsider):
        assert "ran as" not in refused, refused
        assert not refused.rstrip().endswith("rc=0"), refused
