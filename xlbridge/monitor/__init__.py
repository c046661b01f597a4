"""
The monitor: a small web site that shows what the bridge is doing.

- ``/``: the operator's page (``static/``);
- ``/ws``: a WebSocket with live events, captions, status snapshots, level
  meters and listen-in audio (:mod:`xlbridge.monitor.live`);
- ``/api/calls``: JSON of active and recent calls (:mod:`xlbridge.monitor.api`);
- ``/metrics``: Prometheus exposition (:mod:`xlbridge.monitor.metrics`),
  engine usage included (:mod:`xlbridge.monitor.usage`);
- ``/readyz``, ``/livez``: health checks (:mod:`xlbridge.monitor.health`).

The WebSocket and ``/api`` need the monitor's view token, listen-in its
listen token (:mod:`xlbridge.monitor.auth`); the health checks need none.
Nothing here runs per packet unless someone listens in: counters are read
from the bridge when scraped, and viewers each get a bounded queue, so a slow
browser loses frames itself instead of slowing the egress clock.
:func:`xlbridge.monitor.service.make_monitor` builds the whole thing.
"""
