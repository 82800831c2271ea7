#!/usr/bin/env bash
# Installs the desktop client for this user on Linux: `qchat` and `qchat-cli` into
# ~/.cargo/bin (cargo install), and the window's menu entry and icon into
# ~/.local/share (XDG). Then qchat is in the desktop's menu; started from there with no
# arguments, it opens the identity it opened last, or the join screen. No arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo install --locked --path client/gui
cargo install --locked --path client
data="${XDG_DATA_HOME:-$HOME/.local/share}"
install -Dm644 client/gui/assets/qchat.desktop "$data/applications/qchat.desktop"
install -Dm644 client/gui/assets/qchat.svg "$data/icons/hicolor/scalable/apps/qchat.svg"
# The menu entry runs `qchat` from PATH; say where it is if PATH lacks it.
bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v qchat >/dev/null; then
    sed -i "s|^Exec=qchat$|Exec=$bin/qchat|" "$data/applications/qchat.desktop"
fi
command -v update-desktop-database >/dev/null && update-desktop-database "$data/applications" || true
echo "qchat is in the desktop's menu ($data/applications/qchat.desktop)"
