"""
What each worker process of ``--workers N`` is given: pure functions
from the machine's configuration to worker K's (0-based).

One xlbridge process can only ever use one core (one reactor thread).
``--workers N`` runs N of them under a supervisor
(:mod:`xlbridge.workers.supervisor`), and each worker is an ordinary
xlbridge given a disjoint share of the machine:

- **Fixed pairs** (``--ports``, ``--audiosocket``, ``--websocket``): pair
  *i* goes to worker ``i % N``, which binds only its own ports.
- **ARI**: worker K registers its own Stasis app ``<app>-<node>-<K>``
  (:func:`worker_app`); callers enter ``<app>`` and the dispatcher
  (:mod:`xlbridge.ari.dispatcher`) moves each to a worker's app.  Its
  ExternalMedia RTP ports are the K-th of N equal slices of
  ``--rtp-ports``; its AudioSocket and WebSocket listeners are the
  configured ports + K, and with ``--ari-websocket-connection client`` it
  has Asterisk dial the websocket_client.conf entry ``<entry>-<K>``.
- **Monitor**: the supervisor serves the machine's monitor on the
  configured ``tcp:PORT``; worker K serves its own on loopback port
  ``PORT + 1 + K`` (:func:`worker_monitor`), which the machine monitor
  reads.
- **Events file**: one per worker, ``calls.jsonl`` -> ``calls.w0.jsonl``
  (:func:`events_path`): one writer per file, nothing interleaved.
- **Cores**: the process's CPUs are split among the workers
  (:func:`cores_for`); each worker pins itself to its share, and its local
  ASR processes and decode threads size themselves from that affinity, so
  N workers never oversubscribe the machine.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from typing import Optional, Sequence

import attrs

from xlbridge.config import BridgeConfig, PairConfig
from xlbridge.errors import ConfigError

__all__ = [
    "MAX_WORKERS", "check_node", "cores_for", "default_node", "events_path", "monitor_port", "pairs_for",
    "parse_worker", "parse_workers", "split_range", "usable_cpus", "worker_app", "worker_argv", "worker_config",
    "worker_monitor",
]

#: More worker processes than this is a typo, not a machine.
MAX_WORKERS = 256

_NODE = re.compile(r"^[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*$")


def usable_cpus() -> list[int]:
    """
    The CPUs this process may run on (its affinity: ``taskset``, a
    container's cpuset), sorted.
    """
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        return list(range(os.cpu_count() or 1))


def parse_workers(value: object, cpus: Optional[int] = None) -> int:
    """
    ``--workers``: ``"auto"`` (one per usable CPU) or a count from 1 to
    :data:`MAX_WORKERS`.
    """
    text = str(value).strip().lower()
    if text == "auto":
        return max(1, cpus if cpus is not None else len(usable_cpus()))
    try:
        n = int(text)
    except ValueError:
        raise ConfigError("workers", f"{value!r} is not a number of processes or 'auto'") from None
    if not 1 <= n <= MAX_WORKERS:
        raise ConfigError("workers", f"{n} is out of range: 1 to {MAX_WORKERS}, or 'auto'")
    return n


def parse_worker(value: str) -> tuple[int, int]:
    """
    ``--worker K/N`` (set by the supervisor): ``(K, N)``, ``0 <= K < N``.
    """
    k_text, sep, n_text = str(value).partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k, n = -1, 0
    if not sep or not 0 <= k < n <= MAX_WORKERS:
        raise ConfigError("worker", f"{value!r} is not K/N with 0 <= K < N (the supervisor sets it)")
    return k, n


def default_node() -> str:
    """
    This machine's short host name, made fit for an app name (letters,
    digits, ``_`` and single dashes).
    """
    name = socket.gethostname().split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_]+", "-", name).strip("-")
    return name or "node"


def check_node(value: str) -> str:
    """
    ``--node``: letters, digits, ``_`` and single inner dashes, at most
    40 characters (it becomes part of ARI app names).
    """
    text = str(value).strip()
    if not _NODE.match(text) or len(text) > 40:
        raise ConfigError("node", f"{value!r}: use letters, digits, '_' and single dashes, at most 40 characters")
    return text


def worker_app(entry: str, node: str, k: int) -> str:
    """
    Worker ``k``'s Stasis app on ``node``: ``xlbridge-pbx1-0``.
    """
    return f"{entry}-{node}-{k}"


def split_range(low: int, high: int, k: int, n: int, option: str = "rtp-ports") -> tuple[int, int]:
    """
    The ``k``-th of ``n`` equal slices of the inclusive range
    ``low..high`` (the last ones one shorter when it does not divide).
    Each worker needs at least 2 ports (a room's two callers).
    """
    size = high - low + 1
    if size < 2 * n:
        raise ConfigError(option, f"{low}-{high} has {size} ports: {n} workers need at least {2 * n}")
    start = low + (size * k) // n
    end = low + (size * (k + 1)) // n - 1
    return start, end


def pairs_for(pairs: Sequence[PairConfig], k: int, n: int) -> tuple[PairConfig, ...]:
    """Pair *i* goes to worker ``i % n``."""
    return tuple(p for i, p in enumerate(pairs) if i % n == k)


def events_path(path: str, k: int) -> str:
    """
    Worker ``k``'s events file: ``calls.jsonl`` -> ``calls.w0.jsonl``,
    ``calls`` -> ``calls.w0``.
    """
    head, tail = os.path.split(path)
    stem, dot, suffix = tail.rpartition(".")
    if not dot or not stem:
        return os.path.join(head, f"{tail}.w{k}")
    return os.path.join(head, f"{stem}.w{k}.{suffix}")


def monitor_port(description: str) -> Optional[int]:
    """
    The TCP port of a ``tcp:PORT[:interface=...]`` (or ``tcp:port=PORT``)
    monitor endpoint; ``None`` for ``none``.  Any other endpoint (or port 0)
    cannot be shared out among workers: :class:`ConfigError`.
    """
    text = description.strip()
    if text.lower() == "none":
        return None
    parts = text.split(":")
    port: Optional[str] = None
    if parts[0].lower() == "tcp":
        for i, part in enumerate(parts[1:]):
            key, eq, val = part.partition("=")
            if eq and key == "port":
                port = val
            elif not eq and i == 0:
                port = part
    if port is None or not port.isdigit() or not 0 < int(port) < 65535:
        raise ConfigError(
            "monitor", f"{description!r}: with --workers give tcp:PORT (workers use PORT+1, PORT+2... on "
            "127.0.0.1) or none",
        )
    return int(port)


def worker_monitor(description: str, k: int) -> str:
    """
    Worker ``k``'s own monitor endpoint: loopback port ``PORT + 1 + k``
    (``none`` if the machine has no monitor).
    """
    port = monitor_port(description)
    if port is None:
        return "none"
    if port + 1 + k > 65535:
        raise ConfigError("monitor", f"port {port} leaves no room for worker {k}'s monitor on {port + 1 + k}")
    return f"tcp:{port + 1 + k}:interface=127.0.0.1"


def cores_for(k: int, n: int, cpus: Sequence[int]) -> list[int]:
    """
    Worker ``k``'s share of ``cpus``: consecutive equal slices when there
    are at least ``n``, else one CPU each, shared round-robin.
    """
    cpus = sorted(cpus) or [0]
    if n <= len(cpus):
        return list(cpus[(len(cpus) * k) // n:(len(cpus) * (k + 1)) // n])
    return [cpus[k % len(cpus)]]


def worker_config(config: BridgeConfig, k: int, n: int, node: str) -> BridgeConfig:
    """
    Worker ``k`` of ``n``'s configuration, derived from the machine's
    (see the module's notes).  A worker left with nothing to serve (more
    workers than pairs, and no ``--ari``) is a :class:`ConfigError`.
    """
    pairs = pairs_for(config.pairs, k, n)
    if not pairs and config.ari is None:
        raise ConfigError(
            "workers", f"{n} workers for {len(config.pairs)} pair(s) and no --ari: worker {k} would have "
            "nothing to serve; use at most as many workers as pairs",
        )
    ari = config.ari
    if ari is not None:
        ari = attrs.evolve(
            ari, app=worker_app(ari.app, node, k), entry_app=ari.app,
            rtp_ports=split_range(*ari.rtp_ports, k, n),
            audiosocket_port=ari.audiosocket_port + k if ari.audiosocket_port else 0,
            websocket_port=ari.websocket_port + k if ari.websocket_port else 0,
            # Asterisk dials a websocket_client.conf entry's one URI: each
            # worker needs its own entry, <entry>-<K>, with its own port.
            websocket_client=f"{ari.websocket_client}-{k}" if ari.websocket_client else None,
        )
    return attrs.evolve(
        config, pairs=pairs, ari=ari, monitor=worker_monitor(config.monitor, k),
        events=events_path(config.events, k) if config.events else None,
    )


def worker_argv(args: Sequence[str], k: int, n: int) -> tuple[str, list[str]]:
    """
    The executable and argv that start worker ``k`` of ``n`` under
    twistd, with the same plugin arguments as the supervisor's: in the
    foreground, no pid file, logging one line per event for the
    supervisor to forward (:mod:`xlbridge.workers.childlog`).
    """
    argv = [
        sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
        "--nodaemon", "--pidfile=", "--logger", "xlbridge.workers.childlog.observer",
        "xlbridge", *args, "--worker", f"{k}/{n}",
    ]
    return sys.executable, argv
