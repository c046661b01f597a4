#!/bin/sh
# Set up (if needed) and run the whole test suite (trial) and the type check.
#   sh scripts/test.sh                  # everything
#   sh scripts/test.sh tests.rtp.test_packet   # one module
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
# The unit suite first, on its own, so its time is plain to see (it runs
# on fake clocks and memory reactors: seconds, not minutes); then the tests
# with real sockets, processes, a browser and Asterisk.
unit=$(cd tests && for f in *; do
    case $f in
        integration|asterisk|browser|fakes|__*) ;;
        test_*.py) echo "tests.${f%.py}" ;;
        *) [ -d "$f" ] && echo "tests.$f" ;;
    esac
done)
rc=0
start=$(date +%s)
# shellcheck disable=SC2086
.venv/bin/python -m twisted.trial $unit || rc=1
echo "unit suite: $(( $(date +%s) - start )) s wall"
start=$(date +%s)
.venv/bin/python -m twisted.trial tests.integration tests.browser tests.asterisk || rc=1
echo "integration, browser and Asterisk lab suites: $(( $(date +%s) - start )) s wall"
.venv/bin/mypy || rc=1
.venv/bin/python scripts/import_cycles.py xlbridge || rc=1
exit $rc
