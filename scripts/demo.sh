#!/bin/sh
# Set up (if needed) and run the demo conversation: the bridge with local
# engines (no keys, this CPU) and two simulated phones, English <-> Spanish.
# Extra arguments go to xlbridge-demo (--engines auto|local|cloud, --out DIR).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
exec .venv/bin/xlbridge-demo "$@"
