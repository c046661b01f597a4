#!/bin/sh
# Install the Debian/Ubuntu packages xlbridge needs, if any are missing.
# Usage: scripts/system-deps.sh [extra-package ...]
# Runs apt-get only when something is missing; uses sudo when not root.
set -eu
# The embedded default engines and the demo need Apertium (MT) and the
# Asterisk recordings the demo plays; pocketsphinx and espeak-ng come from PyPI.
# scripts/test.sh adds chromium, for the monitor page's browser test.
pkgs="python3 python3-venv python3-dev gcc apertium apertium-eng-spa asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 $*"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "xlbridge: please install these system packages:$missing" >&2
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "xlbridge: installing system packages:$missing"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
