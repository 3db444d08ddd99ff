#!/usr/bin/env bash
# `make pi-check`: the device as on a Raspberry Pi, in an arm64 Debian Bookworm root run
# under qemu user emulation, then the device tests there (`pytest -m "not host"`).
#
#   sudo tools/pi-check.sh                  the whole check (long: every process is emulated)
#   tools/pi-check.sh --dry-run             only the steps that need no emulation and no
#                                           root (qemu's version, the wheel, the test
#                                           bundles); print the rest
#   options: --qemu PATH (a qemu-aarch64 10 or newer; default: qemu-aarch64-static or
#            qemu-aarch64 on PATH), --mirror URL, --keep (keep the root for another run),
#            --pytest-args "ARGS" (instead of the whole device suite, e.g. "tests/test_bundle.py"),
#            --native (a rehearsal on this machine's own architecture, without qemu: checks
#            the steps, not arm64)
#
# Everything it makes is under build/pi-check/: the root (build/pi-check/root), the wheel,
# the test bundles. The only change outside it, and only as root: a binfmt_misc
# entry for aarch64 (named leukoscope-pi-check), removed again on exit; mounts (/proc, /dev,
# /sys, /tmp) live in a private mount namespace and vanish with it.
#
# qemu 10 or newer is required: Debian 12's qemu 7.2 crashes when LiteRT loads a model.
# The device is installed exactly as tools/install-pi.sh installs it: a venv with
# --system-site-packages over Debian's numpy 1.24, the package from a built wheel (not
# editable) under constraints/pi.txt. The tests run from a copy of the checkout whose
# device/ and tools/ are not on the import path, so they test the installed wheel.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$SRC/build/pi-check
ROOT=$WORK/root
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
MIN_QEMU_MAJOR=10
BINFMT_NAME=leukoscope-pi-check
BINFMT_DIR=/proc/sys/fs/binfmt_misc
# What a Pi OS Lite has that the device needs (python3-numpy is the 1.24 picamera2 uses),
# plus ssh-keygen for the model store's signature tests.
ROOT_PACKAGES=python3,python3-venv,python3-numpy,ca-certificates,openssh-client
# The venv inside the root, where tools/install-pi.sh puts it on a Pi.
VENV=/opt/leukoscope/venv
HOST_CA=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
QEMU=""
DRY_RUN=0
KEEP=0
NATIVE=0
ARCH=arm64
PYTEST_ARGS=""

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-0}"
}

say() { printf 'pi-check: %s\n' "$*"; }
die() {
  printf 'pi-check: %s\n' "$*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --keep) KEEP=1 ;;
    --qemu) QEMU=${2:?--qemu needs a path}; shift ;;
    --mirror) MIRROR=${2:?--mirror needs a URL}; shift ;;
    --pytest-args) PYTEST_ARGS=${2?--pytest-args needs a value}; shift ;;
    --native) NATIVE=1; ARCH=$(dpkg --print-architecture); ROOT=$WORK/root-$ARCH ;;
    -h | --help) usage 0 ;;
    *) printf 'pi-check: unknown option %s\n' "$1" >&2; usage 2 ;;
  esac
  shift
done

# Run a command, or only print it in a dry run.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf 'pi-check: would run: %s\n' "$*"
  else
    "$@"
  fi
}

# 1. qemu: found, and 10 or newer.
qemu_version() {
  # "qemu-aarch64 version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u18)" -> 7.2.15
  "$1" --version 2>/dev/null | sed -n 's/^qemu-aarch64 version \([0-9][0-9.]*\).*/\1/p' | head -n 1
}

check_qemu() {
  if [ -z "$QEMU" ]; then
    QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
  fi
  if [ -z "$QEMU" ] || [ ! -x "$QEMU" ]; then
    local msg="no qemu-aarch64 found: install qemu ${MIN_QEMU_MAJOR} or newer (user mode, static) and pass --qemu PATH"
    [ "$DRY_RUN" = 1 ] || die "$msg"
    say "$msg (dry run: going on with the steps that need no emulation)"
    QEMU=/usr/bin/qemu-aarch64-static
    return
  fi
  local version major
  version=$(qemu_version "$QEMU")
  [ -n "$version" ] || die "$QEMU --version does not say which qemu it is"
  major=${version%%.*}
  if [ "$major" -lt "$MIN_QEMU_MAJOR" ]; then
    local msg="$QEMU is qemu $version; the check needs ${MIN_QEMU_MAJOR} or newer (Debian 12's 7.2 crashes when LiteRT loads a model, so the device tests would fail for qemu's sake). Install qemu-user-static ${MIN_QEMU_MAJOR}+ (Debian 13 has it) or build qemu, then pass --qemu PATH."
    [ "$DRY_RUN" = 1 ] || die "$msg"
    say "$msg (dry run: going on with the steps that need no emulation)"
  else
    say "qemu $version at $QEMU"
  fi
}

# 2. binfmt: the kernel must hand arm64 programs to qemu. Registered with the F flag (the
# interpreter is opened now, so it works inside the root too) and removed on exit.
REGISTERED=0
register_binfmt() {
  if [ "$(id -u)" -ne 0 ]; then
    [ "$DRY_RUN" = 1 ] && { say "not root: would register binfmt for aarch64 as $BINFMT_NAME"; return; }
    die "needs root: the arm64 root is entered with chroot, and the kernel must be told to run arm64 programs with qemu (binfmt_misc). Run: sudo make pi-check (or --dry-run without root)"
  fi
  [ "$DRY_RUN" = 1 ] && { say "would register binfmt for aarch64 as $BINFMT_NAME"; return; }
  if [ ! -e "$BINFMT_DIR/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT_DIR" ||
      die "cannot mount binfmt_misc (in a container, the host must register qemu-aarch64 with the F flag)"
  fi
  [ -e "$BINFMT_DIR/$BINFMT_NAME" ] && printf -- '-1' >"$BINFMT_DIR/$BINFMT_NAME"
  local magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  local mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  printf ':%s:M::%s:%s:%s:FOC\n' "$BINFMT_NAME" "$magic" "$mask" "$QEMU" >"$BINFMT_DIR/register" ||
    die "cannot register qemu with binfmt_misc"
  REGISTERED=1
  say "binfmt: aarch64 programs run with $QEMU (until this check ends)"
}

cleanup() {
  if [ "$REGISTERED" = 1 ] && [ -e "$BINFMT_DIR/$BINFMT_NAME" ]; then
    printf -- '-1' >"$BINFMT_DIR/$BINFMT_NAME" || true
  fi
  if [ "$KEEP" = 0 ] && [ "$DRY_RUN" = 0 ] && [ -d "$ROOT" ]; then
    rm -rf --one-file-system "$ROOT"
  fi
}
trap cleanup EXIT

# 3. What needs no emulation: the wheel (pure Python, as the installer builds it) and the
# tiny test bundles (TensorFlow, on this machine, as `make test-np124` builds them).
build_wheel() {
  local py=$SRC/.venv/bin/python
  [ -x "$py" ] || die "no .venv: run make test (or make run) once first"
  rm -rf "$WORK/wheel"
  mkdir -p "$WORK/wheel"
  "$py" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/wheel" "$SRC" \
    >"$WORK/wheel.log" 2>&1 || { cat "$WORK/wheel.log" >&2; die "cannot build the wheel"; }
  WHEEL=$(find "$WORK/wheel" -name 'leukoscope-*.whl' | head -n 1)
  [ -n "$WHEEL" ] || die "no wheel was built"
  say "wheel: ${WHEEL#"$SRC"/}"
  if [ -e "$WORK/bundles/test-cells-bundle/manifest.json" ]; then
    say "test bundles: reusing build/pi-check/bundles/"
    return
  fi
  rm -rf "$WORK/bundles"
  mkdir -p "$WORK/bundles"
  (cd "$SRC" && "$py" -c 'import sys; from pathlib import Path
from tests.helpers import build_tiny_bundle, build_tiny_cells_bundle
build_tiny_bundle(Path(sys.argv[1])); build_tiny_cells_bundle(Path(sys.argv[2]))' \
    "$WORK/bundles/test-bundle" "$WORK/bundles/test-cells-bundle") >/dev/null 2>&1 ||
    die "cannot build the test bundles (needs TensorFlow in .venv)"
  say "test bundles: build/pi-check/bundles/"
}

# 4. The arm64 Bookworm root: debootstrap's first stage here, the second under qemu.
make_root() {
  if [ -x "$ROOT/usr/bin/python3" ] && [ -e "$ROOT/.pi-check-complete" ]; then
    say "root: reusing $ROOT"
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    [ "$DRY_RUN" = 1 ] || die "debootstrap is not installed (apt-get install debootstrap)"
    say "debootstrap is not installed (apt-get install debootstrap): the root cannot be made"
  fi
  run rm -rf --one-file-system "$ROOT"
  run mkdir -p "$ROOT"
  say "root: debootstrap $SUITE $ARCH into ${ROOT#"$SRC"/} (first stage: download and unpack)"
  run debootstrap --foreign --arch="$ARCH" --variant=minbase --include="$ROOT_PACKAGES" \
    "$SUITE" "$ROOT" "$MIRROR"
  # The interpreter inside the root as well, for a kernel whose binfmt entry lacks F.
  [ "$NATIVE" = 1 ] || run install -D -m 0755 "$QEMU" "$ROOT/usr/bin/qemu-aarch64-static"
  say "root: second stage"
  in_root /debootstrap/debootstrap --second-stage
  run touch "$ROOT/.pi-check-complete"
}

# Run a command inside the root: a private mount namespace with /proc, /dev, /sys, a tmpfs
# /tmp and the host's resolver (pip downloads the arm64 wheels).
in_root() {
  if [ "$DRY_RUN" = 1 ]; then
    say "would run in the root: $*"
    return
  fi
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  # This machine's CA bundle and proxy settings, so pip reaches the index as it does here
  # (behind a proxy that inspects TLS, the Debian root's own CAs would not do).
  local pass=()
  if [ -r "$HOST_CA" ]; then
    cp -L "$HOST_CA" "$ROOT/etc/pi-check-host-ca.crt"
    pass+=(PIP_CERT=/etc/pi-check-host-ca.crt)
  fi
  local var
  for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL \
    PIP_EXTRA_INDEX_URL PIP_DEFAULT_TIMEOUT; do
    if [ -n "${!var:-}" ]; then pass+=("$var=${!var}"); fi
  done
  # shellcheck disable=SC2016  # expanded by the inner shell, from its arguments
  unshare --mount --propagation private -- /bin/sh -ec '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --rbind /sys "$root/sys"
    mount -t tmpfs tmpfs "$root/tmp"
    exec chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 "$@"
  ' sh "$ROOT" "${pass[@]}" "$@"
}

# 5. The device install as tools/install-pi.sh does it, from the wheel; the tests' tools
# pinned as in `make test-np124`.
install_device() {
  run rm -rf "$ROOT/src"
  run mkdir -p "$ROOT/src"
  # The checkout's tracked files (tests, models, constraints, systemd, ...): the tests read
  # them by path. device/ and tools/ come too but are not importable from /src.
  if [ "$DRY_RUN" = 1 ]; then
    say "would copy the checkout's tracked files to /src in the root"
  else
    (cd "$SRC" && git ls-files -z | tar --null -T - -cf -) | tar -C "$ROOT/src" -xf -
    mkdir -p "$ROOT/src/build-pi-check"
    cp -r "$WORK/bundles" "$WORK/wheel"/*.whl "$ROOT/src/build-pi-check/"
  fi
  local wheel
  wheel=/src/build-pi-check/$(basename "${WHEEL:-leukoscope.whl}")
  in_root python3 -m venv --system-site-packages "$VENV"
  in_root "$VENV/bin/pip" install --disable-pip-version-check --quiet \
    -c /src/constraints/pi.txt "${wheel}[device]"
  in_root "$VENV/bin/pip" install --disable-pip-version-check --quiet \
    -c /src/constraints/np124.txt pytest pytest-timeout hypothesis
  in_root /bin/sh -c "cd /tmp && $VENV/bin/python -c 'import leukoscope, numpy, sys
where = leukoscope.__file__
assert \"/site-packages/\" in where, where
print(\"pi-check: installed\", where, \"numpy\", numpy.__version__, sys.platform)'"
}

# 6. The device tests, against the installed wheel.
run_tests() {
  if [ "$NATIVE" = 1 ]; then
    say "device tests"
  else
    say "device tests under emulation (slow: every process starts under qemu)"
  fi
  in_root /bin/sh -c "cd /src && LEUKOSCOPE_TEST_BUNDLE=/src/build-pi-check/bundles/test-bundle \
    LEUKOSCOPE_TEST_CELLS_BUNDLE=/src/build-pi-check/bundles/test-cells-bundle \
    $VENV/bin/python -m pytest -m 'not host' -p no:cacheprovider -q $PYTEST_ARGS"
}

main() {
  mkdir -p "$WORK"
  if [ "$NATIVE" = 1 ]; then
    say "native rehearsal on $ARCH: no qemu, so this checks the steps, not arm64"
    [ "$(id -u)" -eq 0 ] || [ "$DRY_RUN" = 1 ] || die "needs root (debootstrap, chroot)"
  else
    check_qemu
    register_binfmt
  fi
  build_wheel
  make_root
  install_device
  run_tests
  if [ "$NATIVE" = 1 ]; then
    say "native rehearsal passed on $ARCH (not an arm64 result)"
  elif [ "$DRY_RUN" = 1 ]; then
    say "dry run done: qemu checked, wheel and test bundles built; nothing ran under emulation"
  else
    say "passed: the device installs from its wheel on arm64 Bookworm and its tests pass"
  fi
}

main
