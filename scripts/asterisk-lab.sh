#!/bin/sh
# A real Asterisk on this machine for xlbridge's end-to-end tests.
#
# Debian 12 has no Asterisk package, Debian's testing suite does: this
# script debootstraps it into a folder, installs Asterisk there and runs it
# in that chroot.  The chroot shares the host's network, so Asterisk and
# xlbridge talk over loopback exactly as on one server.  Needs root.
#
#   sh scripts/asterisk-lab.sh install   # once: chroot + Asterisk (~1 min, ~700 MB)
#   sh scripts/asterisk-lab.sh start     # write the configs, start Asterisk
#   sh scripts/asterisk-lab.sh cli 'core show channels'
#   sh scripts/asterisk-lab.sh stop
#   sh scripts/asterisk-lab.sh crash     # kill -9: no hangups, no goodbyes
#   sh scripts/asterisk-lab.sh status    # exit 0 if running
#
# The configs are etc/asterisk/*.conf (the samples users copy) plus
# tests/asterisk/conf/*.conf (lab-only: callers made of Local channels
# that play a prompt and record what they hear; pjsip.conf: endpoint "lab"
# on 127.0.0.1:5160 for the tests' SIP phones).  ARI listens on
# 127.0.0.1:8088 as user xlbridge with the password in $ROOT/lab/ari-password.
#
# Settings (environment):
#   XLBRIDGE_LAB_ROOT   chroot folder [default: /var/tmp/xlbridge-asterisk]
#   XLBRIDGE_LAB_SUITE  Debian suite with Asterisk [default: forky]
#   XLBRIDGE_LAB_MIRROR [default: http://deb.debian.org/debian]
set -eu
cd "$(dirname "$0")/.."
ROOT=${XLBRIDGE_LAB_ROOT:-/var/tmp/xlbridge-asterisk}
SUITE=${XLBRIDGE_LAB_SUITE:-forky}
MIRROR=${XLBRIDGE_LAB_MIRROR:-http://deb.debian.org/debian}
# The registry mirror may serve a Release file past its Valid-Until date.
APT="apt-get -q -o Acquire::Check-Valid-Until=false"

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "asterisk-lab: needs root (chroot, mount)" >&2
        exit 2
    fi
}

mounts() {
    for fs in proc dev; do
        if ! mountpoint -q "$ROOT/$fs"; then
            mount --bind "/$fs" "$ROOT/$fs"
        fi
    done
}

install() {
    need_root
    if [ -x "$ROOT/usr/sbin/asterisk" ]; then
        echo "asterisk-lab: already installed in $ROOT"
        return
    fi
    if ! command -v debootstrap >/dev/null; then
        $APT update
        DEBIAN_FRONTEND=noninteractive $APT install -y debootstrap
    fi
    # bookworm's debootstrap has no script for newer suites; sid's fits.
    mkdir -p "$ROOT"
    debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" /usr/share/debootstrap/scripts/sid
    mounts
    chroot "$ROOT" sh -c "$APT update && DEBIAN_FRONTEND=noninteractive $APT install -y \
        --no-install-recommends asterisk asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722"
    # Debian ships es_MX only; callers with lang=es look in sounds/es.
    ln -sfn es_MX_f_Allison "$ROOT/usr/share/asterisk/sounds/es"
    chroot "$ROOT" asterisk -V
}

configure() {
    mkdir -p "$ROOT/lab/out"
    chmod 777 "$ROOT/lab/out"
    if [ ! -s "$ROOT/lab/ari-password" ]; then
        (umask 077; od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > "$ROOT/lab/ari-password")
    fi
    etc="$ROOT/etc/asterisk"
    chmod 600 "$ROOT/lab/ari-password"  # xlbridge refuses a password file others can read
    sed "s/^password = .*/password = $(cat "$ROOT/lab/ari-password")/" etc/asterisk/ari.conf > "$etc/ari.conf"
    cp etc/asterisk/http.conf etc/asterisk/rtp.conf etc/asterisk/websocket_client.conf "$etc/"
    # The sample dialplan is included as it is, below the lab's own contexts.
    cp etc/asterisk/extensions.conf "$etc/xlbridge-samples.conf"
    for f in tests/asterisk/conf/*.conf; do
        cp "$f" "$etc/"
    done
}

start() {
    need_root
    if [ ! -x "$ROOT/usr/sbin/asterisk" ]; then
        install
    fi
    mounts
    if status >/dev/null 2>&1; then
        stop
    fi
    configure
    rm -f "$ROOT/var/run/asterisk/asterisk.ctl"
    mkdir -p "$ROOT/var/run/asterisk"
    # As root in the chroot: with -U, Asterisk drops the capabilities it
    # needs to read its own configs there.  Descriptors 3-9 are closed:
    # the daemon must not inherit, say, the lab's lock from a caller that
    # holds it (flock lab/lock sh asterisk-lab.sh start), or the lock would
    # stay held for as long as Asterisk runs.
    chroot "$ROOT" asterisk -F 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
    i=0
    while ! chroot "$ROOT" asterisk -rx 'core waitfullybooted' >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 60 ]; then
            echo "asterisk-lab: Asterisk did not boot; see $ROOT/var/log/asterisk/messages" >&2
            exit 1
        fi
        sleep 0.5
    done
    chroot "$ROOT" asterisk -rx 'core show version'
}

cli() {
    chroot "$ROOT" asterisk -rx "$*"
}

status() {
    cli 'core show uptime' >/dev/null 2>&1
}

stop() {
    if status; then
        cli 'core stop now' >/dev/null 2>&1 || true
        i=0
        while status && [ $i -lt 40 ]; do
            i=$((i + 1))
            sleep 0.25
        done
    fi
    pkill -f "^asterisk -F" 2>/dev/null || true
}

crash() {
    pkill -9 -f "^asterisk -F" 2>/dev/null || true
    rm -f "$ROOT/var/run/asterisk/asterisk.ctl"
}

case "${1:-}" in
    install) install ;;
    crash) need_root; crash ;;
    start) start ;;
    stop) need_root; stop ;;
    status) status ;;
    cli) shift; need_root; cli "$@" ;;
    *) echo "usage: $0 install|start|stop|crash|status|cli COMMAND" >&2; exit 2 ;;
esac
