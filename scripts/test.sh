#!/bin/sh
# Set up (if needed) and run the whole test suite (trial) and the type check.
#   sh scripts/test.sh                  # everything
#   sh scripts/test.sh tests.test_rtp_packet   # one module
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh chromium  # chromium: the monitor page's browser test
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m twisted.trial "$@"
fi
.venv/bin/python -m twisted.trial tests
.venv/bin/mypy
