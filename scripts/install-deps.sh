#!/usr/bin/env bash
# Installs what building and testing qchat needs on a fresh Debian machine (run as root).
# The Rust toolchain itself is expected to be there (rustup's stable).
set -euo pipefail
need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)     # SQLite (bundled) is C
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v python3 >/dev/null || need+=(python3)
# The relay's package: its unit is checked with systemd-analyze, its install needs adduser.
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v adduser >/dev/null || need+=(adduser)
command -v desktop-file-validate >/dev/null || need+=(desktop-file-utils)   # the window's menu entry
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt || true
