#!/usr/bin/env bash
# Builds the relay's Debian package: target/debian/qchat-server_VERSION_ARCH.deb (in the
# workspace's target directory), with qchat-server, qchat-certs, the systemd unit and
# /etc/qchat/server.toml. Installs cargo-deb first if it is missing. No arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi
# cargo-deb builds the package's own binary; qchat-certs comes from its crate.
cargo build --locked --release -p qchat-certs
cargo deb --locked -p qchat-server
ls -l target/debian/qchat-server_*.deb
