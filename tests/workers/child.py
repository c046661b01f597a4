"""
A stand-in worker for the supervisor's real-process tests: logs a few
events through :func:`xlbridge.workers.childlog.observer` (as a worker under
``twistd --logger`` does), writes a raw stderr line, then waits; SIGTERM
makes it exit 0, as twistd would.

Usage: ``python child.py K``.
"""

import signal
import sys
import time

from twisted.logger import Logger

from xlbridge.workers.childlog import observer

signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
log = Logger(namespace="child.test", observer=observer())
log.info("hello from {k}", k=sys.argv[1])
log.warn("careful in {k}", k=sys.argv[1])
try:
    1 / 0
except ZeroDivisionError:
    log.failure("boom in {k}", k=sys.argv[1])
sys.stderr.write(f"raw stderr line from {sys.argv[1]}\n")
sys.stderr.flush()
log.info("ready {k}", k=sys.argv[1])
time.sleep(30)
