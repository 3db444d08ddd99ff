#!/usr/bin/env bash
# Installs the system packages the test suite needs (Debian/Ubuntu, as root), once.
# `make test` runs this; as a non-root user it only reports what is missing, and the
# tests that need a missing program skip and say so.
set -euo pipefail

# command -> Debian package that provides it
declare -A NEEDS=(
  [shellcheck]=shellcheck
  [sshd]=openssh-server
  [ssh]=openssh-client
  [ssh-keygen]=openssh-client
  [systemd-analyze]=systemd
  [chromium]=chromium
  [visudo]=sudo
  [strace]=strace
)

missing=()
for cmd in "${!NEEDS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDS[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing system packages (need root to install): ${missing[*]}" >&2
  exit 0
fi
echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
