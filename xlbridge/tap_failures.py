"""
Start-up failures of ``twistd xlbridge`` as one line naming the option
responsible (``xlbridge: --ports: UDP port 7777 is already in use on
0.0.0.0``), exit status 1, instead of a traceback.

twistd reports a usage error from ``Options.postOptions`` as one line, but
prints anything raised later (building the service, binding its ports,
opening its files) as a traceback.  :class:`StartupFailed` is both a
``SystemExit`` (printed as its message alone) and an ``Exception`` (so
twistd still cleans up); :class:`TwistdBridge` raises it for the ports and
files it cannot open, with the message :func:`start_failure` words.
Importable from :mod:`xlbridge.tap` too.
"""

from __future__ import annotations

import errno
from typing import Iterator, Optional

from twisted.application.service import IService, MultiService
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage

from xlbridge.bridge import BridgeService
from xlbridge.listeners import ListenerService, UDPListenerService

log = Logger()


class StartupFailed(SystemExit, Exception):
    """
    A start-up failure that twistd should report as one line, exiting 1.

    twistd catches an ``Exception`` raised while starting the application
    to remove its pid file and tell a daemon's parent, then raises it again,
    and Python prints an uncaught exception as a traceback, but a
    ``SystemExit`` as its message alone, with exit status 1.  This is both.
    """


class ServiceUsageError(StartupFailed, usage.UsageError):
    """
    A usage error found while building the service: ``str()`` is the
    message, as for any ``UsageError``; twistd prints ``xlbridge: message``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = f"xlbridge: {message}"


class TwistdBridge(BridgeService):
    """
    The bridge as ``twistd xlbridge`` runs it: a port that cannot be bound
    (taken, not an address of this machine, privileged) or a transcript
    file that cannot be opened stops start-up with :class:`StartupFailed`,
    one line naming the option (:func:`start_failure`), not a traceback.

    Ports are bound in :meth:`privilegedStartService`, before anything runs.
    The monitor and the transcript are opened in :meth:`startService`, after
    the engines have started: on a failure there, whatever started is
    stopped before the error goes up.
    """

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            message = start_failure(self, e)
            if message is None:
                raise
            raise StartupFailed(message) from None

    def startService(self) -> None:
        try:
            super().startService()
        except (CannotListenError, OSError) as e:
            message = start_failure(self, e)
            if message is None:
                raise
            self._stop_started()
            raise StartupFailed(message) from None

    def _stop_started(self) -> None:
        """
        Stop every child that started (their Deferreds are not waited for:
        the reactor never runs), so no worker thread or process outlives a
        refused start.
        """
        for service in reversed(list(self)):
            if service.running:
                try:
                    service.stopService()
                except Exception:
                    log.failure("stopping {name} after a failed start", name=service.name)
        self.running = False


def _listeners(service: IService) -> Iterator[ListenerService]:
    """Listener services under ``service``, in start order."""
    if isinstance(service, ListenerService):
        yield service
    if isinstance(service, MultiService):
        for child in service:
            yield from _listeners(child)


def start_failure(bridge: BridgeService, error: Exception) -> Optional[str]:
    """
    The one-line message (``xlbridge: --ports: UDP port 7777 is already in
    use on 0.0.0.0``) for ``error`` raised while starting ``bridge``, naming
    the option responsible, or ``None`` for an error this does not know.

    Services start in order and stop at the first failure, so the listener
    that failed is the first one still without a port; when every listener
    has its port, a listening failure is the monitor's (it listens last).
    """
    config = bridge.config
    if isinstance(error, CannotListenError):
        failed = next((ls for ls in _listeners(bridge) if ls.port is None), None)
        if failed is None:
            if config.monitor.strip().lower() == "none":
                return None
            option, proto = "monitor", "TCP"
        elif isinstance(failed, UDPListenerService):
            option, proto = "ports", "UDP"
        elif failed.parent is bridge:
            # Listeners are named "<kind>-<extension>".
            kind = (failed.name or "").partition("-")[0]
            option, proto = ("websocket" if kind == "websocket" else "audiosocket"), "TCP"
        elif failed.name == "ari-websocket":
            option, proto = "ari-websocket-port", "TCP"
        else:
            option, proto = "ari-audiosocket-port", "TCP"
        return f"xlbridge: {_listen_failure(option, proto, error)}"
    if isinstance(error, OSError) and config.events and error.filename == config.events:
        return f"xlbridge: --events: cannot open {config.events}: {error.strerror or error}"
    return None


def _listen_failure(option: str, proto: str, error: CannotListenError) -> str:
    """
    Say why ``option``'s ``proto`` port could not be listened on: in use,
    an address not of this machine, or the system's reason (with a hint
    for privileged ports, below 1024).
    """
    iface = error.interface or "0.0.0.0"
    code = getattr(error.socketError, "errno", None)
    where = f"{proto} port {error.port} on {iface}"
    if code == errno.EADDRINUSE:
        return f"--{option}: {proto} port {error.port} is already in use on {iface}"
    if code == errno.EADDRNOTAVAIL and option != "monitor":
        return f"--interface: {iface} is not an address of this machine (cannot listen on {proto} port {error.port})"
    reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
    if code == errno.EACCES and isinstance(error.port, int) and 0 < error.port < 1024:
        reason += " (ports below 1024 need root)"
    return f"--{option}: cannot listen on {where}: {reason}"
