#!/bin/sh
# Set up (if needed) and run the whole test suite (trial) and the type check.
#   sh scripts/test.sh                  # everything
#   sh scripts/test.sh tests.test_rtp_packet   # one module
#
# As root, the tests against a real Asterisk (tests/asterisk) get one:
# scripts/asterisk-lab.sh installs it in a chroot the first time (~1 min)
# and runs it for the duration.  Without root, or with
# XLBRIDGE_ASTERISK_LAB=no, those tests are skipped and say why.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh chromium  # chromium: the monitor page's browser test
lab_wanted() {
    [ "$(id -u)" = 0 ] && [ "${XLBRIDGE_ASTERISK_LAB:-yes}" != no ] || return 1
    [ $# -eq 0 ] && return 0
    case "$*" in *asterisk*) return 0 ;; esac
    return 1
}
if lab_wanted "$@"; then
    if sh scripts/asterisk-lab.sh start; then
        trap 'sh scripts/asterisk-lab.sh stop' EXIT
    else
        echo "xlbridge: the Asterisk lab did not start; tests/asterisk will be skipped" >&2
    fi
fi
if [ $# -gt 0 ]; then
    .venv/bin/python -m twisted.trial "$@"
    exit
fi
.venv/bin/python -m twisted.trial tests
.venv/bin/mypy
