#!/usr/bin/env bash
# Checks the package scripts/build-deb.sh wrote: its contents and control files, the
# systemd unit (`systemd-analyze verify`, and its exposure score, offline), and, as root
# on a machine without qchat-server installed, an install, a start as the qchat user, a
# removal that keeps the data and a purge that removes it. No arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(ls -t target/debian/qchat-server_*.deb | head -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-deb: $*" >&2; exit 1; }

echo "== contents of $deb"
dpkg-deb -c "$deb" | awk '{print $1, $2, $6}'
for path in ./usr/bin/qchat-server ./usr/bin/qchat-certs ./etc/qchat/server.toml \
        ./usr/lib/systemd/system/qchat-server.service ./usr/share/doc/qchat-server/README.md; do
    dpkg-deb -c "$deb" | awk '{print $6}' | grep -qx "$path" || fail "$path is missing"
done
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/qchat/server.toml "$work/control/conffiles" || fail "server.toml is not a conffile"
dpkg-deb -f "$deb" Depends | grep -q adduser || fail "the package must depend on adduser"
for script in postinst prerm postrm; do
    [ -x "$work/control/$script" ] || fail "no $script"
    sh -n "$work/control/$script" || fail "$script is not valid sh"
done

echo "== the packaged relay reads the packaged config"
dpkg-deb -x "$deb" "$work/root"
"$work/root/usr/bin/qchat-server" --version
"$work/root/usr/bin/qchat-server" check-config --config "$work/root/etc/qchat/server.toml"

unit=/usr/lib/systemd/system/qchat-server.service
if command -v systemd-analyze >/dev/null; then
    echo "== systemd-analyze verify"
    # The unit's dependencies (sysinit.target, …) come from this machine's systemd.
    cp -rn /usr/lib/systemd/system/. "$work/root/usr/lib/systemd/system/" 2>/dev/null || true
    systemd-analyze verify --root="$work/root" "$unit"
    echo "== systemd-analyze security --offline=yes"
    systemd-analyze security --offline=yes --threshold=20 "$work/root$unit" | tail -1
else
    echo "== systemd-analyze is not installed here: the unit is not verified"
fi

if [ "$(id -u)" != 0 ] || ! command -v adduser >/dev/null; then
    echo "== not root, or no adduser: the install is not tried"
    exit 0
fi
if dpkg-query -W -f='${Status}' qchat-server 2>/dev/null | grep -q "ok installed"; then
    echo "== qchat-server is installed on this machine: the install is not tried"
    exit 0
fi
echo "== install"
dpkg -i "$deb"
# Whatever fails from here, the machine is left as it was: no relay, no package.
relay=
trap 'if [ -n "$relay" ]; then pkill -TERM -u qchat -x qchat-server || true; fi; dpkg -P qchat-server >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
getent passwd qchat >/dev/null || fail "no qchat user"
[ "$(stat -c '%U %a' /var/lib/qchat)" = "qchat 700" ] || fail "/var/lib/qchat: $(stat -c '%U %a' /var/lib/qchat)"
[ "$(stat -c '%U:%G %a' /etc/qchat/server.toml)" = "root:qchat 640" ] || fail "server.toml: $(stat -c '%U:%G %a' /etc/qchat/server.toml)"
echo "== the relay runs as qchat from the packaged config"
runuser -u qchat -- qchat-certs init --dir /var/lib/qchat/pki --host localhost
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u qchat -- qchat-server --config /etc/qchat/server.toml --listen "127.0.0.1:$port" >"$work/relay.out" 2>&1 &
relay=$!
for _ in $(seq 50); do grep -q "listening on" "$work/relay.out" && break; sleep 0.2; done
grep -q "listening on udp 127.0.0.1:$port" "$work/relay.out" || { cat "$work/relay.out"; fail "the relay did not start"; }
runuser -u qchat -- qchat-server invite carol --config /etc/qchat/server.toml --server "localhost:$port" | tail -1 | grep -q '^qchat-invite:' \
    || fail "no invite"
pid=$(qchat-server status --config /etc/qchat/server.toml --json | python3 -c '
import json, sys
status = json.load(sys.stdin)
assert status["relay"]["running"], status["relay"]
assert [u["name"] for u in status["users"]] == [], status["users"]
print(status["relay"]["pid"])')
echo "status: running, pid $pid"
kill -TERM "$pid"
wait "$relay" || fail "the relay did not stop cleanly on SIGTERM"
relay=
echo "== remove keeps the data"
dpkg -r qchat-server
[ -e /var/lib/qchat/relay.db ] || fail "removal deleted the database"
[ -e /var/lib/qchat/pki/ca.pem ] || fail "removal deleted the PKI"
[ ! -e /usr/bin/qchat-server ] || fail "removal left the binary"
echo "== purge removes it"
dpkg -P qchat-server
[ ! -e /var/lib/qchat ] || fail "purge left /var/lib/qchat"
[ ! -e /etc/qchat ] || fail "purge left /etc/qchat"
! getent passwd qchat >/dev/null || fail "purge left the qchat user"
echo "check-deb: ok"
