"""
The supervisor process of ``--workers N``: what ``twistd xlbridge
--workers N`` runs instead of a bridge.

- a :class:`~xlbridge.workers.supervisor.WorkerSupervisor` keeps the N
  worker processes running (each an ordinary xlbridge with ``--worker
  K/N``: :mod:`xlbridge.workers.plan`);
- with ``--ari`` (and ``--ari-dispatch yes``, the default), an
  :class:`~xlbridge.ari.dispatcher.ARIDispatcher` moves the callers of the
  entry app to the workers' apps, and rescues the callers of a worker
  whose process ended;
- the machine monitor (:mod:`xlbridge.monitor.machine`) serves one page,
  one ``/metrics`` and one ``/api/calls`` for all of them.

The supervisor holds no call, so it never needs restarting for one; a
worker that dies costs its callers under 2 s of audio (rescue) and the
other workers nothing.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from xlbridge.ari.client import ARIClient, ARIError, describe_failure
from xlbridge.ari.dispatcher import ARIDispatcher
from xlbridge.ari.rescue import rescue
from xlbridge.config import BridgeConfig
from xlbridge.monitor.auth import resolve_listen_token, resolve_token
from xlbridge.workers.options import ProcessPlan
from xlbridge.workers.plan import monitor_port, worker_app, worker_argv
from xlbridge.workers.supervisor import WorkerSupervisor

__all__ = ["Machine", "build_machine", "worker_env"]

log = Logger()


def worker_env(base: dict[str, str], token: str, listen_token: Optional[str]) -> dict[str, str]:
    """
    A worker's environment: ours, with the monitor tokens every worker
    shares with the machine monitor, and the directory holding this
    ``xlbridge`` package first on ``PYTHONPATH`` so the worker runs the
    same code even when we found it through our working directory.
    """
    import xlbridge

    env = dict(base)
    env["XLBRIDGE_MONITOR_TOKEN"] = token
    if listen_token:
        env["XLBRIDGE_MONITOR_LISTEN_TOKEN"] = listen_token
    here = os.path.dirname(os.path.dirname(os.path.abspath(xlbridge.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    return env


class _Closing(Service):
    """Closes a REST client's kept-alive connections on shutdown."""

    def __init__(self, client: ARIClient) -> None:
        self.client = client

    def stopService(self) -> "Deferred[Any]":
        super().stopService()
        return self.client.close()


class Machine(MultiService):
    """
    The supervisor's services; knows when it is stopping, so a worker
    that exits then is not rescued (its callers wait in Stasis for the
    next start, which takes them back).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stopping = False
        self.supervisor: Optional[WorkerSupervisor] = None
        self.dispatcher: Optional[ARIDispatcher] = None
        #: a media node's REST client and entry app, for rescues
        self.rescuer: Optional[tuple[ARIClient, str]] = None
        self.apps: list[str] = []
        #: worker k's monitor base URL (``None``: no monitor)
        self.urls: list[Optional[str]] = []

    def startService(self) -> None:
        self.stopping = False
        super().startService()

    def stopService(self) -> "Deferred[None]":
        self.stopping = True
        return super().stopService()

    def worker_exited(self, k: int, why: str) -> None:
        """
        Worker ``k``'s process ended (the supervisor restarts it): its
        callers are rescued, by our dispatcher, or (a media node) moved
        back to the entry app for the dispatching node's.
        """
        if self.stopping or not self.apps:
            return
        if self.dispatcher is not None:
            self.dispatcher.worker_died(self.apps[k])
        elif self.rescuer is not None:
            client, entry = self.rescuer
            d = rescue(client, self.apps[k], entry, self._quietly)
            d.addErrback(lambda f: log.error("rescuing the callers of {app} failed: {why}", app=self.apps[k],
                                             why=describe_failure(f)))

    @staticmethod
    def _quietly(d: "Deferred[Any]") -> "Deferred[Any]":
        def failed(f: Failure) -> None:
            if not (isinstance(f.value, ARIError) and f.value.status in (404, 409)):
                log.warn("ARI request failed: {why}", why=describe_failure(f))

        return d.addErrback(failed)

    def views(self) -> list[Any]:
        """The supervisor's workers as the machine monitor sees them."""
        from xlbridge.monitor.machine_metrics import WorkerView

        assert self.supervisor is not None
        return [
            WorkerView(
                index=s["worker"], url=self.urls[s["worker"]] if s["up"] else None, pid=s["pid"], up=s["up"],
                restarts=s["restarts"], crash_loop=s["crash_looping"],
            )
            for s in self.supervisor.status()
        ]


def build_machine(options: Any, plan: ProcessPlan, reactor: Any) -> IService:
    """
    The supervisor for ``plan.workers`` workers started with the same
    arguments as this process (``options.argv``).
    """
    config: BridgeConfig = options.config
    n = plan.workers
    machine = Machine()
    env_in = dict(os.environ)
    token, token_source = resolve_token(config.monitor_token, env_in)
    listen_token, _ = resolve_listen_token(config.monitor_listen_token, env_in)
    env = worker_env(env_in, token, listen_token)
    argv = list(getattr(options, "argv", []))

    def command(k: int) -> tuple[str, list[str], dict[str, str]]:
        executable, args = worker_argv(argv, k, n)
        return executable, args, env

    ari = config.ari
    if ari is not None:
        machine.apps = [worker_app(ari.app, plan.node, k) for k in range(n)]
        if plan.dispatch:
            machine.dispatcher = ARIDispatcher(ari, reactor)
            machine.dispatcher.setServiceParent(machine)
            log.info("ARI dispatcher: callers of {app} go to the least loaded worker app ({apps}, and any other "
                     "{app}-<node>-<k> on this Asterisk)", app=ari.app, apps=", ".join(machine.apps))
        else:
            client = ARIClient(ari.url, ari.user, ari.password, reactor, timeout=10.0)
            machine.rescuer = (client, ari.app)
            machine.addService(_Closing(client))
            log.info("ARI: workers {apps}; another node dispatches to them (--ari-dispatch no)",
                     apps=", ".join(machine.apps))
    supervisor = WorkerSupervisor(reactor, n, command, on_exited=machine.worker_exited)
    machine.supervisor = supervisor
    supervisor.setServiceParent(machine)
    port = monitor_port(config.monitor)
    machine.urls = [f"http://127.0.0.1:{port + 1 + k}/" if port is not None else None for k in range(n)]
    if port is not None:
        from xlbridge.ari.dispatch_metrics import DispatcherCollector
        from xlbridge.monitor.machine import make_machine_monitor

        try:
            monitor = make_machine_monitor(
                reactor, config.monitor, machine.views, token, config.monitor_metrics_open,
                listen_token=listen_token, token_source=token_source, configured=n,
                collectors=[DispatcherCollector(machine.dispatcher)] if machine.dispatcher is not None else [],
            )
        except ValueError as e:
            raise usage.UsageError(f"--monitor: {e}") from None
        monitor.setServiceParent(machine)
    pairs = len(config.pairs)
    log.info("supervising {n} worker(s) on node {node}: {pairs} fixed pair(s) spread over them{ari}",
             n=n, node=plan.node, pairs=pairs, ari=", ARI apps " + ", ".join(machine.apps) if machine.apps else "")
    return machine
