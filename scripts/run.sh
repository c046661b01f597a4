#!/bin/sh
# Set up (if needed) and run the bridge in the foreground:
#   sh scripts/run.sh                     # extensions 7777 <-> 8888
#   sh scripts/run.sh --ports 7777,8888 --engines relay --reply-codec slin16
# Extra arguments go to `twistd xlbridge`.  Ctrl-C stops it cleanly.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
[ $# -gt 0 ] || set -- --ports 7777,8888
exec .venv/bin/twistd -n --pidfile= xlbridge "$@"
