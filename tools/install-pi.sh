#!/usr/bin/env bash
# Installs the Leukoscope appliance on Raspberry Pi OS Bookworm (Pi 4 or Pi 5), or
# removes it again. Idempotent: a second run changes nothing that is already right.
#
#   sudo tools/install-pi.sh                 install (or update), enable, start, self-check
#   tools/install-pi.sh --dry-run            print every step without doing any
#   sudo tools/install-pi.sh --check         only the self-check
#   sudo tools/install-pi.sh --uninstall     remove it; keep records and config
#   sudo tools/install-pi.sh --uninstall --purge   also delete records, config and user
#   tools/install-pi.sh --root DIR           test mode: write files under DIR, run no
#                                            system command (apt, systemctl, ...), only list it
# Options for an install (tools/ansible/install.yml passes them for a fleet):
#   --allowed-signers FILE   trust these bundle signers: /etc/leukoscope/allowed_signers,
#                            named by a new config, so the Pi installs signed bundles only
#   --bundle DIR             the first model (default models/default); sign it first
#                            (leukoscope-tools sign) when the Pi requires signatures
#   --web-password-hash FILE the status page's password hash (leukoscope set-password's)
set -euo pipefail

# Where things go on the Pi (the unit in systemd/ names the same paths).
PREFIX=/opt/leukoscope
VENV=/opt/leukoscope/venv
CONFIG=/etc/leukoscope/config.toml
STATE=/var/lib/leukoscope
INCOMING=/var/lib/leukoscope-incoming
UNIT=/etc/systemd/system/leukoscope.service
SYSUSERS=/etc/sysusers.d/leukoscope.conf
TMPFILES=/etc/tmpfiles.d/leukoscope.conf
SUDOERS=/etc/sudoers.d/leukoscope
SIGNERS=/etc/leukoscope/allowed_signers
WEB_PASSWORD=/var/lib/leukoscope/web-password
BIN_LINK=/usr/local/bin/leukoscope
JOURNALD=/etc/systemd/journald.conf.d/leukoscope.conf
BOOT_CONFIG=/boot/firmware/config.txt
# The camera settings go into config.txt itself, between these lines (an `include`
# is not read by every Pi's bootloader, and the Pi 5 refuses an oversized file).
BOOT_BEGIN="# BEGIN Leukoscope camera: choices explained in firmware_config/config.txt"
BOOT_END="# END Leukoscope camera (tools/install-pi.sh --uninstall removes this block)"
SERVICE=leukoscope.service
STATUS_URL=http://127.0.0.1:8080/
# fake-hwclock: a Pi has no real-time clock; it restores the last saved time at boot
# (Raspberry Pi OS ships it; a minimal image may not). The daemon trusts the clock only
# once it is synchronised (or a person confirms it on the status page): see core/clock.py.
APT_PACKAGES=(python3-picamera2 python3-lgpio python3-venv fake-hwclock)

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=""
DRY_RUN=0
ACTION=install
PURGE=0
ALLOWED_SIGNERS=""
BUNDLE=""
PASSWORD_HASH=""

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --uninstall) ACTION=uninstall ;;
    --check) ACTION=check ;;
    --purge) PURGE=1 ;;
    --root)
      [ $# -ge 2 ] || { echo "--root needs a directory" >&2; exit 2; }
      ROOT=$(cd "$2" && pwd -P) || exit 2
      shift
      ;;
    --root=*) ROOT=$(cd "${1#--root=}" && pwd -P) || exit 2 ;;
    --allowed-signers | --bundle | --web-password-hash)
      [ $# -ge 2 ] || { echo "$1 needs a path" >&2; exit 2; }
      case "$1" in
        --allowed-signers) ALLOWED_SIGNERS=$(realpath -e "$2") || exit 2 ;;
        --bundle) BUNDLE=$(realpath -e "$2") || exit 2 ;;
        --web-password-hash) PASSWORD_HASH=$(realpath -e "$2") || exit 2 ;;
      esac
      shift
      ;;
    -h | --help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 >&2 ;;
  esac
  shift
done
[ "$PURGE" -eq 0 ] || [ "$ACTION" = uninstall ] || { echo "--purge goes with --uninstall" >&2; exit 2; }
[ "$ROOT" != / ] || { echo "--root / would be the real system: leave --root out" >&2; exit 2; }
if [ -n "$ALLOWED_SIGNERS" ] && ! grep -q 'namespaces="leukoscope-bundle"' "$ALLOWED_SIGNERS"; then
  echo "--allowed-signers $ALLOWED_SIGNERS: no line for namespace leukoscope-bundle" >&2
  echo "(leukoscope-tools sign prints the line)" >&2
  exit 2
fi
if [ -n "$BUNDLE" ] && [ ! -f "$BUNDLE/manifest.json" ]; then
  echo "--bundle $BUNDLE: not a model bundle (no manifest.json)" >&2
  exit 2
fi
if [ -n "$PASSWORD_HASH" ] && ! grep -qE '^scrypt\$[0-9]+\$[0-9]+\$[0-9]+\$[^$]+\$[^$]+$' "$PASSWORD_HASH"; then
  echo "--web-password-hash $PASSWORD_HASH: not one line made by leukoscope set-password" >&2
  exit 2
fi

# --- output and the three ways of acting: real, --dry-run, --root ---------------------

step() { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }

# run CMD...: a system command. Never runs under --root (it would act on this host,
# not on DIR) nor with --dry-run; both print it instead.
run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    note "would run: $*"
  elif [ -n "$ROOT" ]; then
    note "skipped (--root): $*"
  else
    note "run: $*"
    "$@"
  fi
}

# put SRC DEST MODE: write a file if its content or mode differ. Sets CHANGED=1 when it
# writes (or would). The new file is renamed into place, so a power cut leaves the old
# or the new one, never half of one.
put() {
  local src=$1 dest=$ROOT$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "$mode" ]; then
    note "unchanged: $2"
    return 0
  fi
  CHANGED=1
  if [ "$DRY_RUN" -eq 1 ]; then
    note "would write: $2 (mode $mode)"
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest.leukoscope-new"
  sync -f "$dest.leukoscope-new" 2>/dev/null || true
  mv -f "$dest.leukoscope-new" "$dest"
  note "wrote: $2"
}

# keep SRC DEST MODE: like put, but never replaces a file that exists (the user's edits).
keep() {
  if [ -e "$ROOT$2" ]; then
    note "kept (exists): $2"
  else
    put "$@"
  fi
}

# symlink TARGET LINK: make LINK point at TARGET, replacing whatever is there.
symlink() {
  local target=$1 link=$ROOT$2
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then
    note "unchanged: $2 -> $target"
  elif [ "$DRY_RUN" -eq 1 ]; then
    note "would link: $2 -> $target"
  else
    mkdir -p "$(dirname "$link")"
    ln -sfn "$target" "$link"
    note "linked: $2 -> $target"
  fi
}

# remove PATH: delete a file or a directory tree if it exists.
remove() {
  local path=$ROOT$1
  if [ ! -e "$path" ] && [ ! -L "$path" ]; then
    note "absent: $1"
  elif [ "$DRY_RUN" -eq 1 ]; then
    note "would remove: $1"
  else
    rm -rf -- "$path"
    note "removed: $1"
  fi
}

# --- install steps ----------------------------------------------------------------------

preflight() {
  step "Preflight"
  local missing=()
  for f in systemd/leukoscope.service systemd/leukoscope.sysusers systemd/leukoscope.tmpfiles \
    systemd/leukoscope.sudoers firmware_config/config.txt firmware_config/journald.conf \
    device/leukoscope/configs/pi.toml constraints/pi.txt pyproject.toml; do
    [ -f "$SRC/$f" ] || missing+=("$f")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-pi: not a complete Leukoscope checkout at $SRC (missing: ${missing[*]})" >&2
    exit 1
  fi
  note "source: $SRC"
  if [ -n "$ROOT" ]; then
    note "test mode: files go under $ROOT; system commands are listed, not run"
  elif [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "install-pi: needs root; run it with sudo (or try --dry-run)" >&2
    exit 1
  fi
  preflight_system
}

# The target's architecture, OS release, Python and free space, each refused with its
# reason before anything is changed (also under --dry-run, whose plan would be a lie).
# Under --root the OS release is DIR's own /etc/os-release, when it has one, and the
# free space is DIR's; the architecture and Python are this host's, so not checked.
MIN_FREE_MB=1024
preflight_system() {
  local fails=() arch release id codename py free_kb
  if [ -z "$ROOT" ]; then
    arch=$(uname -m)
    case "$arch" in
      aarch64 | arm64) note "architecture: $arch" ;;
      x86_64) note "architecture: $arch (not a Raspberry Pi: for tests and emulation only)" ;;
      armv6l | armv7l | armhf | i?86)
        fails+=("a 32-bit system ($arch): the model runtime (ai-edge-litert) has no 32-bit build; install the 64-bit Raspberry Pi OS (Bookworm, arm64)") ;;
      *) fails+=("unsupported architecture $arch: install the 64-bit Raspberry Pi OS (Bookworm, arm64)") ;;
    esac
    if py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
      case "$py" in
        3.11 | 3.1[2-9]) note "python3: $py" ;;
        *) fails+=("python3 is $py; the appliance needs 3.11 or newer (Bookworm's)") ;;
      esac
    else
      fails+=("no working python3: install python3 (Bookworm ships 3.11)")
    fi
  fi
  release="$ROOT/etc/os-release"
  if [ -r "$release" ]; then
    # shellcheck source=/dev/null
    id=$(. "$release" && echo "${ID:-unknown}")
    # shellcheck source=/dev/null
    codename=$(. "$release" && echo "${VERSION_CODENAME:-unknown}")
    case "$id/$codename" in
      debian/bookworm | raspbian/bookworm) note "OS: $id $codename" ;;
      *) fails+=("OS $id $codename: made for Raspberry Pi OS Bookworm (64-bit); its Python, picamera2 and lgpio are what the constraints pin") ;;
    esac
  elif [ -z "$ROOT" ]; then
    fails+=("no /etc/os-release: cannot tell which OS this is")
  fi
  free_kb=$(df -Pk "${ROOT:-/}" 2>/dev/null | awk 'NR == 2 { print $4 }')
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((MIN_FREE_MB * 1024)) ]; then
    fails+=("only $((free_kb / 1024)) MB free on ${ROOT:-/}; the install needs ${MIN_FREE_MB} MB (the venv, the runtime and the first records)")
  fi
  if [ ${#fails[@]} -gt 0 ]; then
    local f
    for f in "${fails[@]}"; do echo "install-pi: preflight: $f" >&2; done
    echo "install-pi: nothing was changed" >&2
    exit 1
  fi
}

missing_apt_packages() {
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    # Under --root this host's dpkg says nothing about DIR: list them all.
    if [ -n "$ROOT" ] || ! dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
      echo "$pkg"
    fi
  done
}

install_packages() {
  step "System packages: ${APT_PACKAGES[*]}"
  local missing
  mapfile -t missing < <(missing_apt_packages)
  if [ ${#missing[@]} -eq 0 ]; then
    note "all installed"
    return 0
  fi
  # picamera2 without recommends: those pull in the desktop preview stack (Qt, OpenGL).
  run apt-get update
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

install_user() {
  step "System user leukoscope (groups video, gpio) and group leukoscope-maint"
  put "$SRC/systemd/leukoscope.sysusers" "$SYSUSERS" 644
  put "$SRC/systemd/leukoscope.tmpfiles" "$TMPFILES" 644
  # Both are declarative and idempotent: they create what is missing, nothing else.
  run systemd-sysusers "$SYSUSERS"
  run systemd-tmpfiles --create "$TMPFILES"
  step "Model maintainers: sudo rule for the model commands (as leukoscope, not root)"
  put "$SRC/systemd/leukoscope.sudoers" "$SUDOERS" 440
}

install_venv() {
  step "Python environment $VENV (with the system's picamera2, lgpio and numpy)"
  if [ -x "$ROOT$VENV/bin/python" ]; then
    note "exists: $VENV"
  else
    run python3 -m venv --system-site-packages "$VENV"
  fi
  # The constraints hold numpy below 2: the apt picamera2 is built against numpy 1.24.
  # --upgrade reinstalls this checkout's version; dependencies change only if they must.
  local pip=("$VENV/bin/pip" install --disable-pip-version-check --quiet --upgrade)
  if [ "$DRY_RUN" -eq 1 ] || [ -n "$ROOT" ]; then
    run "${pip[@]}" -c "$SRC/constraints/pi.txt" "${SRC}[device]"
    return 0
  fi
  # Built from a copy so that pip's build files do not land, root-owned, in the checkout.
  local copy
  copy=$(mktemp -d)
  tar -C "$SRC" --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude='*.egg-info' \
    --exclude=./.run -cf - . | tar -C "$copy" -xf -
  run "${pip[@]}" -c "$SRC/constraints/pi.txt" "${copy}[device]"
  rm -rf -- "$copy"
}

install_command() {
  step "Command: $BIN_LINK (leukoscope capture, check-config, model ...)"
  symlink "$VENV/bin/leukoscope" "$BIN_LINK"
}

# signatures_required: the installed (or about to be installed) config names allowed signers.
signatures_required() {
  [ -f "$ROOT$CONFIG" ] && grep -qE '^[[:space:]]*allowed_signers[[:space:]]*=' "$ROOT$CONFIG"
}

install_config() {
  step "Config $CONFIG (an existing one is kept)"
  if [ -z "$ALLOWED_SIGNERS" ]; then
    keep "$SRC/device/leukoscope/configs/pi.toml" "$CONFIG" 644
    return 0
  fi
  # The shipped config with its allowed_signers line switched on.
  local fresh
  fresh=$(mktemp)
  sed "s|^# allowed_signers = \"$SIGNERS\"|allowed_signers = \"$SIGNERS\"|" \
    "$SRC/device/leukoscope/configs/pi.toml" >"$fresh"
  grep -qx "allowed_signers = \"$SIGNERS\"" "$fresh" || {
    rm -f "$fresh"
    echo "install-pi: configs/pi.toml lost its allowed_signers line" >&2
    exit 1
  }
  keep "$fresh" "$CONFIG" 644
  rm -f "$fresh"
  if [ -f "$ROOT$CONFIG" ] && ! signatures_required; then
    note "warning: the kept $CONFIG names no allowed_signers: this Pi installs unsigned"
    note "bundles; add allowed_signers = \"$SIGNERS\" under [model] (the self-check fails)"
  fi
}

install_signers() {
  [ -n "$ALLOWED_SIGNERS" ] || return 0
  step "Bundle signers $SIGNERS (model updates must be signed by one of them)"
  put "$ALLOWED_SIGNERS" "$SIGNERS" 644
}

install_web_password() {
  [ -n "$PASSWORD_HASH" ] || return 0
  step "Status page password hash $WEB_PASSWORD (read by the daemon's user only)"
  CHANGED=0
  put "$PASSWORD_HASH" "$WEB_PASSWORD" 600
  [ "$CHANGED" -eq 0 ] || run chown leukoscope:leukoscope "$WEB_PASSWORD"
}

install_model() {
  local bundle=${BUNDLE:-$SRC/models/default} active=$STATE/models/active
  step "Model: $bundle, unless a model is already active"
  if [ -e "$ROOT$active" ] || [ -L "$ROOT$active" ]; then
    note "kept (exists): $active (update models with leukoscope-tools push)"
    return 0
  fi
  if [ ! -f "$bundle/manifest.json" ]; then
    note "warning: no shipped bundle at $bundle; the service will show the model fault"
    note "until one is installed: leukoscope-tools push BUNDLE HOST --activate"
    return 0
  fi
  # Never a silent bypass: a Pi that requires signatures gets a signed first model or none.
  if signatures_required && [ ! -f "$bundle/manifest.json.sig" ]; then
    note "refused: $bundle is not signed and this Pi requires signatures ($CONFIG);"
    note "sign it (leukoscope-tools sign $bundle --key KEY) or pass a signed one with --bundle"
    return 0
  fi
  # As the appliance user, through the model store (checked, then switched atomically).
  local cmd=(runuser -u leukoscope -- "$VENV/bin/leukoscope" model --config "$CONFIG" install
    --activate)
  if [ "$DRY_RUN" -eq 1 ] || [ -n "$ROOT" ]; then
    run "${cmd[@]}" "$bundle"
    return 0
  fi
  # That user cannot read a checkout in a private home directory: hand it a copy.
  local copy
  copy=$(mktemp -d "$INCOMING/.shipped.XXXXXX")
  cp -R "$bundle/." "$copy/"
  chmod -R a+rX "$copy"
  run "${cmd[@]}" "$copy" || note "model install failed (above); the service will show the model fault"
  rm -rf -- "$copy"
}

install_sd_card_settings() {
  step "SD card: journal in RAM, capped (firmware_config/journald.conf)"
  CHANGED=0
  put "$SRC/firmware_config/journald.conf" "$JOURNALD" 644
  [ "$CHANGED" -eq 0 ] || run systemctl restart systemd-journald
}

install_camera_settings() {
  step "Camera firmware settings: a block at the end of $BOOT_CONFIG"
  if [ ! -f "$ROOT$BOOT_CONFIG" ]; then
    note "no $BOOT_CONFIG here (not Raspberry Pi OS Bookworm?): camera settings skipped"
    return 0
  fi
  if grep -qxF "$BOOT_BEGIN" "$ROOT$BOOT_CONFIG"; then
    note "kept (exists): the Leukoscope block in $BOOT_CONFIG (it may hold your camera choice)"
  elif [ "$DRY_RUN" -eq 1 ]; then
    note "would append to $BOOT_CONFIG: the settings of firmware_config/config.txt"
  else
    # The fragment's settings and commented-out choices, without its prose. Written to a
    # new file renamed over the old, so a power cut cannot leave a half-written config.txt.
    local tmp=$ROOT$BOOT_CONFIG.leukoscope-new
    {
      cat "$ROOT$BOOT_CONFIG"
      [ -z "$(tail -c 1 "$ROOT$BOOT_CONFIG")" ] || echo
      echo "$BOOT_BEGIN"
      grep -E '^(\[[a-z0-9+]+\]|#?[a-z_0-9]+=.*)$' "$SRC/firmware_config/config.txt"
      echo "$BOOT_END"
    } >"$tmp"
    sync -f "$tmp" 2>/dev/null || true
    mv -f "$tmp" "$ROOT$BOOT_CONFIG"
    note "appended to $BOOT_CONFIG: camera auto-detect and the overlay choices (next boot)"
  fi
}

install_service() {
  step "Service $SERVICE: install, enable at boot, (re)start"
  put "$SRC/systemd/leukoscope.service" "$UNIT" 644
  run systemctl daemon-reload
  run systemctl enable "$SERVICE"
  # Always restart: the package was just reinstalled. With Type=notify this waits for
  # READY=1 (camera, model and store up) or fails.
  run systemctl restart "$SERVICE" || note "start failed: see the self-check below"
}

# --- self-check ------------------------------------------------------------------------

FAILS=0
ok() { printf '   ok    %s\n' "$*"; }
bad() { printf '   FAIL  %s\n' "$*"; FAILS=$((FAILS + 1)); }
skip() { printf '   skip  %s\n' "$*"; }

check_file() {
  if [ -f "$ROOT$1" ]; then ok "$1"; else bad "$1 missing"; fi
}

self_check() {
  step "Self-check"
  if [ "$DRY_RUN" -eq 1 ]; then
    note "would check: the installed files, user and groups, config, numpy, model, camera, GPIO,"
    note "the service running and the status page answering"
    return 0
  fi
  local f
  for f in "$UNIT" "$SYSUSERS" "$TMPFILES" "$SUDOERS" "$JOURNALD" "$CONFIG"; do
    check_file "$f"
  done
  if [ -f "$ROOT$SIGNERS" ]; then
    if signatures_required; then
      ok "model updates must be signed ($(grep -c 'leukoscope-bundle' "$ROOT$SIGNERS") signer(s) in $SIGNERS)"
    else
      bad "$SIGNERS exists but $CONFIG does not name it: unsigned bundles are accepted"
    fi
  fi
  if [ -f "$ROOT$BOOT_CONFIG" ]; then
    if grep -qxF "$BOOT_BEGIN" "$ROOT$BOOT_CONFIG" && grep -qxF "$BOOT_END" "$ROOT$BOOT_CONFIG"; then
      ok "$BOOT_CONFIG has the Leukoscope camera block"
    else
      bad "$BOOT_CONFIG lacks the Leukoscope camera block"
    fi
  fi
  if [ -n "$ROOT" ]; then
    skip "runtime checks (user, config, camera, GPIO, service, status page): not on a real install"
    return 0
  fi

  if id -nG leukoscope 2>/dev/null | tr ' ' '\n' | grep -qx video \
    && id -nG leukoscope | tr ' ' '\n' | grep -qx gpio; then
    ok "user leukoscope in groups video and gpio"
  else
    bad "user leukoscope missing or not in groups video and gpio"
  fi
  if "$VENV/bin/leukoscope" check-config "$CONFIG" >/dev/null 2>&1; then
    ok "config valid: $CONFIG"
  else
    bad "config invalid: run $VENV/bin/leukoscope check-config $CONFIG"
  fi
  if "$VENV/bin/python" -c 'import numpy, sys; sys.exit(int(numpy.__version__.split(".")[0]) >= 2)'; then
    ok "numpy below 2 in the venv (matches the system's picamera2)"
  else
    bad "numpy 2 in $VENV: reinstall with -c constraints/pi.txt"
  fi
  if [ -e "$STATE/models/active/manifest.json" ]; then
    ok "model: $(readlink "$STATE/models/active")"
  else
    bad "model: none active in $STATE/models (leukoscope-tools push BUNDLE HOST --activate)"
  fi
  local cams
  if cams=$("$VENV/bin/python" -c 'from picamera2 import Picamera2; print(len(Picamera2.global_camera_info()))' 2>/dev/null) \
    && [ "$cams" -ge 1 ]; then
    ok "camera: $cams detected"
  else
    bad "camera: none detected (cable; the camera block in $BOOT_CONFIG; rpicam-hello --list-cameras)"
  fi
  if compgen -G '/dev/gpiochip*' >/dev/null; then
    ok "GPIO chips present"
  else
    bad "no /dev/gpiochip*"
  fi
  if systemctl is-enabled --quiet "$SERVICE"; then ok "$SERVICE enabled at boot"; else bad "$SERVICE not enabled"; fi
  if systemctl is-active --quiet "$SERVICE"; then
    ok "$SERVICE running"
  else
    bad "$SERVICE not running; last log lines:"
    journalctl -u "$SERVICE" -n 15 --no-pager 2>/dev/null | sed 's/^/         /' || true
  fi
  # Any HTTP answer counts (a login page too); no answer is the failure.
  if "$VENV/bin/python" - "$STATUS_URL" 2>/dev/null <<'EOF'; then
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=5)
except urllib.error.HTTPError:
    pass
EOF
    ok "status page answers at $STATUS_URL (from the LAN: http://$(hostname).local:8080/)"
  else
    bad "status page does not answer at $STATUS_URL"
  fi
}

# --- uninstall --------------------------------------------------------------------------

uninstall() {
  step "Stop and disable $SERVICE"
  if [ -e "$ROOT$UNIT" ]; then
    run systemctl disable --now "$SERVICE"
  else
    note "not installed"
  fi
  step "Remove the installed files"
  remove "$UNIT"
  run systemctl daemon-reload
  remove "$SUDOERS"
  remove "$TMPFILES"
  remove "$SYSUSERS"
  CHANGED=0
  if [ -e "$ROOT$JOURNALD" ]; then CHANGED=1; fi
  remove "$JOURNALD"
  [ "$CHANGED" -eq 0 ] || run systemctl restart systemd-journald
  remove "$BIN_LINK"
  remove "$PREFIX"
  if [ -f "$ROOT$BOOT_CONFIG" ] && grep -qxF "$BOOT_BEGIN" "$ROOT$BOOT_CONFIG"; then
    if [ "$DRY_RUN" -eq 1 ]; then
      note "would remove the Leukoscope block from $BOOT_CONFIG"
    else
      local tmp=$ROOT$BOOT_CONFIG.leukoscope-new
      awk -v begin="$BOOT_BEGIN" -v end="$BOOT_END" \
        '$0 == begin { skip = 1 } !skip { print } skip && $0 == end { skip = 0 }' \
        "$ROOT$BOOT_CONFIG" >"$tmp"
      sync -f "$tmp" 2>/dev/null || true
      mv -f "$tmp" "$ROOT$BOOT_CONFIG"
      note "removed the Leukoscope block from $BOOT_CONFIG"
    fi
  fi

  if [ "$PURGE" -eq 1 ]; then
    step "Purge: records, images, models, config and the user"
    remove "$STATE"
    remove "$INCOMING"
    remove "$(dirname "$CONFIG")"
    if [ -n "$ROOT" ] || [ "$DRY_RUN" -eq 1 ] || id leukoscope >/dev/null 2>&1; then
      run userdel leukoscope
    fi
    if [ -n "$ROOT" ] || [ "$DRY_RUN" -eq 1 ] || getent group leukoscope-maint >/dev/null; then
      run groupdel leukoscope-maint
    fi
  else
    step "Kept (remove with --uninstall --purge)"
    note "records and images: $STATE"
    note "config: $CONFIG"
    note "user leukoscope and group leukoscope-maint"
  fi
  note "apt packages (${APT_PACKAGES[*]}) stay installed: other software may use them"
}

# --- main -------------------------------------------------------------------------------

case "$ACTION" in
  install)
    preflight
    install_packages
    install_user
    install_venv
    install_command
    install_config
    install_signers
    install_web_password
    install_model
    install_sd_card_settings
    install_camera_settings
    install_service
    self_check
    ;;
  uninstall)
    preflight
    uninstall
    ;;
  check)
    self_check
    ;;
esac

if [ "$ACTION" != uninstall ]; then
  if [ "$FAILS" -eq 0 ]; then
    printf '\nAll checks passed.\n'
  else
    printf '\n%d check(s) failed; logs: journalctl -u %s -e\n' "$FAILS" "$SERVICE"
    exit 1
  fi
fi
