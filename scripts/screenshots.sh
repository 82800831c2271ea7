#!/usr/bin/env bash
# Takes the README's screenshots of the real window under Xvfb: a room of three with a
# conversation and files offered, light and dark, in English and in Chinese
# (docs/qchat-{light,dark}-{en,zh}.png). Needs xvfb, xdotool and imagemagick (apt),
# and the debug builds of qchat-server, qchat-certs, qchat-cli and qchat. No arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export DISPLAY=:99 ICED_BACKEND=tiny-skia
pgrep -f "Xvfb :99" >/dev/null || { Xvfb :99 -screen 0 1280x760x24 & sleep 1; }

port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin/qchat-server" --data "$work/relay" --listen "127.0.0.1:$port" >"$work/relay.log" 2>&1 &
for _ in $(seq 50); do grep -q "listening on" "$work/relay.log" && break; sleep 0.2; done
pki="$work/relay/pki"
"$bin/qchat-certs" user carol --dir "$pki" --server "127.0.0.1:$port" >/dev/null
cli() { local who=$1; shift; "$bin/qchat-cli" --identity "$pki/$who.qchat" --data-dir "$work/$who" "$@" >/dev/null; }

cli alice rooms create trip --members bob,carol
cli bob send --room trip "Tickets are booked: Friday 07:40 from the central station."
cli carol send --room trip "Great! I'll bring the map and the snacks 🙂"
cli alice send --room trip "I uploaded the photos from last year, have a look."
head -c 3000000 /dev/urandom >"$work/photos-2025.zip"
head -c 800000 /dev/urandom >"$work/route.pdf"
cli alice send-file --room trip "$work/photos-2025.zip"
cli bob send-file --room trip "$work/route.pdf"
cli carol send --room trip "中文也可以：周五见！"
cli bob send --room trip "민수도 와요 👍🎉 — and Noa wrote: שלום, نراكم يوم الجمعة"

for look in light-en dark-en light-zh dark-zh; do
    theme=${look%-*} lang=${look#*-}
    "$bin/qchat" --identity "$pki/alice.qchat" --data-dir "$work/alice" --download-dir "$work/alice-dl" \
        --theme "$theme" --lang "$lang" >"$work/window-$look.log" 2>&1 &
    window=$!
    sleep 6
    wid=$(xdotool search --sync --pid "$window" | tail -1)
    xdotool windowsize "$wid" 1240 720 windowmove "$wid" 0 0 windowfocus --sync "$wid"
    sleep 1
    import -window root -crop 1240x720+0+0 "docs/qchat-$look.png"
    kill "$window"
    wait "$window" 2>/dev/null || true
done
echo "wrote docs/qchat-{light,dark}-{en,zh}.png"
