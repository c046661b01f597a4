"""
The process options of ``twistd xlbridge``: ``--workers``, ``--node``,
``--ari-dispatch`` and the supervisor's internal ``--worker K/N``, read
into a :class:`ProcessPlan`.

They are not bridge settings (a worker's bridge settings are derived
from the machine's: :func:`xlbridge.workers.plan.worker_config`), so they
stay out of :func:`xlbridge.config.load_config` and the TOML file.  Every
worker's configuration is derived once here, at option time, so a
machine that cannot be shared out (more workers than pairs, too few RTP
ports) fails with one line before any process starts, instead of as N
workers crash-looping.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import attrs

from xlbridge.config import BridgeConfig
from xlbridge.config_values import parse_bool
from xlbridge.errors import ConfigError
from xlbridge.workers.plan import (
    check_node, cores_for, default_node, parse_worker, parse_workers, usable_cpus, worker_config,
)

__all__ = ["PROCESS_OPTIONS", "ProcessPlan", "pin_worker", "process_plan"]

#: Options read here, not by :func:`xlbridge.config.load_config`.
PROCESS_OPTIONS = ("workers", "node", "ari-dispatch", "worker")


@attrs.frozen
class ProcessPlan:
    """
    What this process is.

    :ivar workers: worker processes of the machine.
    :ivar node: this machine's name in the workers' app names.
    :ivar dispatch: the supervisor runs the ARI dispatcher.
    :ivar worker: ``(K, N)`` in a worker process, else ``None``.
    :ivar config: a worker's own configuration (``None`` otherwise).
    :ivar supervised: ``--workers`` was given; without it xlbridge is one
        process, as before, whose app is the entry app itself.
    """

    workers: int = 1
    node: str = "node"
    dispatch: bool = True
    worker: Optional[tuple[int, int]] = None
    config: Optional[BridgeConfig] = None
    supervised: bool = False

    @property
    def supervises(self) -> bool:
        """
        This process supervises workers: ``--workers`` was given (even 1:
        one worker, restarted when it dies, with its own app), and this
        is not a worker.
        """
        return self.supervised and self.worker is None


def process_plan(options: Mapping[str, Any], config: BridgeConfig) -> ProcessPlan:
    """
    Read the process options (``None`` when not given) against the
    machine's ``config``; :class:`ConfigError` names the option at fault.
    """
    node = check_node(options["node"]) if options.get("node") else default_node()
    dispatch = True
    if options.get("ari-dispatch") is not None:
        if config.ari is None:
            raise ConfigError("ari-dispatch", "needs --ari")
        dispatch = parse_bool("ari-dispatch", options["ari-dispatch"])
    if options.get("worker"):
        k, n = parse_worker(options["worker"])
        return ProcessPlan(n, node, dispatch, (k, n), worker_config(config, k, n, node))
    if options.get("workers") is None:
        return ProcessPlan(1, node, dispatch)
    n = parse_workers(options["workers"])
    for k in range(n):
        worker_config(config, k, n, node)  # fails now, not in N crash-looping workers
    return ProcessPlan(n, node, dispatch, supervised=True)


def pin_worker(k: int, n: int) -> list[int]:
    """
    Pin this process (worker ``k`` of ``n``) to its share of the CPUs it
    may use (:func:`~xlbridge.workers.plan.cores_for`); its local ASR
    processes and threads then size themselves from it.  The CPUs pinned
    to, or ``[]`` where affinity is not supported.
    """
    if not hasattr(os, "sched_setaffinity"):
        return []
    cores = cores_for(k, n, usable_cpus())
    try:
        os.sched_setaffinity(0, cores)
    except OSError:
        return []
    return cores
