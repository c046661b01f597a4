"""
Tests for the twistd plugin: discovery, options, usage errors, makeService
(with ``--ari``, the ARI controller it adds), start-up failures as one line,
and the codec line of the start-up log.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet.error import CannotListenError
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import password_file
from xlbridge import tap
from xlbridge.ari.controller import ARIController
from xlbridge.bridge import BridgeService
from xlbridge.config import FILE_ONLY, SETTINGS
from xlbridge.errors import ConfigError
from xlbridge.events import TranscriptEvent
from xlbridge.testing import MemoryNetReactor, MemoryUDPReactor


class PluginTests(SynchronousTestCase):
    def test_plugin_is_discovered(self) -> None:
        from twisted import plugins

        makers = {p.tapname: p for p in getPlugins(IServiceMaker, plugins)}
        self.assertIn("xlbridge", makers)
        self.assertEqual(makers["xlbridge"].module, "xlbridge.tap")
        self.assertIs(makers["xlbridge"].options, tap.Options)

    def test_twistd_help_documents_options_from_any_directory(self) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "twisted", "xlbridge", "--help"],
            capture_output=True, text=True, cwd="/", timeout=120,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        for opt in ("--ports", "--langs", "--engines", "--codec", "--reply-codec", "--interface", "--config"):
            self.assertIn(opt, out.stdout)

    def test_usage_error_is_a_clear_message(self) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "twisted", "xlbridge", "--ports", "7777"],
            capture_output=True, text=True, cwd="/", timeout=120,
        )
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("--ports", out.stdout + out.stderr)
        self.assertNotIn("Traceback", out.stdout + out.stderr)


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> tap.Options:
        o = tap.Options()
        o.parseOptions(list(argv))
        return o

    def test_defaults(self) -> None:
        o = self.parse()
        self.assertEqual(o.config.pairs[0].ports, (7777, 8888))
        self.assertEqual(o.config.engines, "auto")

    def test_usage_errors(self) -> None:
        for argv, word in [
            (["--ports", "7777,8888,9999"], "--ports"),
            (["--codec", "opus"], "--codec"),
            (["--engines", "cloud"], "DEEPGRAM_API_KEY"),
            (["--config", "/nonexistent.toml"], "--config"),
            (["--monitor", "bogus"], "--monitor: 'bogus' is not an endpoint"),
            (["--monitor", "tcp:99999"], "--monitor: port 99999 is outside 0..65535"),
            (["--interface", "notanip"], "--interface: 'notanip' is not an IP address"),
            (["--events", "/nonexistent/dir/x"], "--events: cannot write /nonexistent/dir/x"),
            (["--ports", "none"], "--ports: none leaves no source of calls"),
            (["--rtp-ports", "20000-20009"], "--rtp-ports: needs --ari"),
            (["--ari-user", "u"], "--ari-user: needs --ari"),
            (["--monitor-metrics-open", "maybe"], "--monitor-metrics-open: 'maybe' is not yes or no"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(word, str(e))
            self.assertNotIn("\n", str(e))

    def test_every_setting_has_a_flag_but_the_file_only_ones(self) -> None:
        """
        Every option taking a value is a setting (``--config`` aside), and
        every setting but the file-only secrets is an option.  (Flags such
        as ``--list-languages`` are actions, not settings; the process
        options, ``--workers`` and its kin, say what the process is.)
        """
        from xlbridge.workers.options import PROCESS_OPTIONS

        parameters = {p[0] for p in tap.Options.optParameters}
        flags = {f[0] for f in getattr(tap.Options, "optFlags", [])}
        self.assertEqual(parameters - {"config", *PROCESS_OPTIONS}, set(SETTINGS) - set(FILE_ONLY))
        self.assertEqual(set(FILE_ONLY) & (parameters | flags), set())

    def test_ports_none_with_audiosocket(self) -> None:
        o = self.parse("--ports", "none", "--audiosocket", "7000=5050,7001=5052")
        self.assertEqual([p.transports for p in o.config.pairs], [("audiosocket", "audiosocket")])

    def test_metrics_open_flag(self) -> None:
        self.assertIs(self.parse("--monitor-metrics-open", "yes").config.monitor_metrics_open, True)

    def test_make_service(self) -> None:
        o = self.parse("--ports", "20000-20003", "--engines", "relay", "--reply-codec", "slin16")
        reactor = MemoryUDPReactor()
        svc = tap.makeService(o, reactor)
        self.assertIsInstance(svc, BridgeService)
        svc.privilegedStartService()
        svc.startService()
        self.addCleanup(svc.stopService)
        self.assertEqual(sorted(reactor.udp), [20000, 20001, 20002, 20003])
        self.assertEqual([p.config.extensions for p in svc.pairs], [("20000", "20001"), ("20002", "20003")])
        self.assertEqual(reactor.udp[20000].interface, "127.0.0.1")


class ReadmeExampleTests(SynchronousTestCase):
    def test_embedding_example_runs(self) -> None:
        """
        The embedding example in README.rst is a real program: run it.
        """
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.path.join(here, "etc", "embed_example.py")
        out = subprocess.run([sys.executable, path, "--self-test"], capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("relayed", out.stdout)


class ARIOptionsTests(SynchronousTestCase):
    def test_ari_options_add_controller(self) -> None:
        from xlbridge import tap
        from xlbridge.testing import MemoryUDPReactor

        o = tap.Options()
        o.parseOptions(["--ari", "http://127.0.0.1:8088", "--ari-user", "u",
                        "--ari-password-file", password_file(self), "--rtp-ports", "20000-20009",
                        "--engines", "relay", "--monitor", "none"])
        reactor = MemoryUDPReactor()
        svc = tap.makeService(o, reactor)
        assert isinstance(svc, BridgeService)
        ari = svc.getServiceNamed("ari")
        self.assertIsInstance(ari, ARIController)
        self.assertEqual(reactor.udp, {})  # no fixed ports with --ari
        self.assertEqual(ari.settings.rtp_ports, (20000, 20009))  # type: ignore[attr-defined]

    def test_audiosocket_media_listens_on_one_tcp_port(self) -> None:
        from xlbridge import tap
        from xlbridge.testing import MemoryUDPReactor

        o = tap.Options()
        o.parseOptions(["--ari", "http://127.0.0.1:8088", "--ari-user", "u",
                        "--ari-password-file", password_file(self), "--ari-media", "audiosocket",
                        "--ari-audiosocket-port", "9200", "--ari-dial-timeout", "20",
                        "--on-partner-hangup", "prompt", "--engines", "relay", "--monitor", "none"])
        svc = tap.makeService(o, MemoryUDPReactor())
        assert isinstance(svc, BridgeService)
        ari = svc.getServiceNamed("ari")
        assert isinstance(ari, ARIController)
        listener = ari.getServiceNamed("ari-audiosocket")
        self.assertEqual((listener.portNumber, listener.interface), (9200, "127.0.0.1"))  # type: ignore[attr-defined]
        self.assertEqual((ari.settings.dial_timeout, ari.settings.on_partner_hangup), (20, "prompt"))

    def test_websocket_media(self) -> None:
        from xlbridge import tap
        from xlbridge.testing import MemoryUDPReactor

        base = ["--ari", "http://127.0.0.1:8088", "--ari-user", "u", "--ari-password-file", password_file(self),
                "--ari-media", "websocket", "--engines", "relay", "--monitor", "none"]
        for more, listens in [([], False), (["--ari-websocket-connection", "client", "--ari-websocket-client",
                                             "xlbridge-ari", "--ari-websocket-port", "9201"], True)]:
            o = tap.Options()
            o.parseOptions(base + more)
            svc = tap.makeService(o, MemoryUDPReactor())
            assert isinstance(svc, BridgeService)
            ari = svc.getServiceNamed("ari")
            assert isinstance(ari, ARIController) and ari.websocket is not None
            self.assertEqual(ari.websocket.listener is not None, listens)
            if listens:
                listener = ari.getServiceNamed("ari-websocket")
                self.assertEqual((listener.portNumber, listener.interface), (9201, "127.0.0.1"))  # type: ignore[attr-defined]

    def test_sample_config_documents_ari(self) -> None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(here, "etc", "xlbridge.toml")) as f:
            text = f.read()
        self.assertIn("[ari]", text)
        for key in ("url", "user", "password_file", "app", "rtp_ports", "on_partner_hangup", "media",
                    "audiosocket_port", "dial_timeout", "partner_hangup_sound"):
            self.assertIn(f"# {key} = ", text)


class TakenPortsReactor(MemoryNetReactor):
    """
    A memory reactor on which some ports cannot be bound, with ``code`` as
    the socket error, as a real reactor reports it.
    """

    def __init__(self, udp: tuple[int, ...] = (), tcp: tuple[int, ...] = (), code: int = errno.EADDRINUSE) -> None:
        super().__init__()
        self.taken_udp, self.taken_tcp, self.code = udp, tcp, code

    def refuse(self, interface: str, port: int) -> CannotListenError:
        return CannotListenError(interface, port, OSError(self.code, os.strerror(self.code)))

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> Any:
        if port in self.taken_udp:
            raise self.refuse(interface, port)
        return super().listenUDP(port, protocol, interface, maxPacketSize)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port in self.taken_tcp:
            raise self.refuse(interface, port)
        return super().listenTCP(port, factory, backlog, interface)


class StartupFailureTests(SynchronousTestCase):
    """
    A port that cannot be bound, or a transcript that cannot be opened, is
    a :class:`tap.StartupFailed` with one line naming the option.
    """

    def service(self, reactor: TakenPortsReactor, *argv: str) -> BridgeService:
        o = tap.Options()
        o.parseOptions(["--engines", "relay", *argv])
        svc = tap.makeService(o, reactor)
        assert isinstance(svc, BridgeService)
        return svc

    def test_is_an_exception_and_an_exit(self) -> None:
        e = tap.StartupFailed("xlbridge: --ports: x")
        self.assertIsInstance(e, Exception)
        self.assertIsInstance(e, SystemExit)
        self.assertEqual(e.code, "xlbridge: --ports: x")

    def test_rtp_port_in_use(self) -> None:
        svc = self.service(TakenPortsReactor(udp=(8888,)), "--ports", "7777,8888", "--monitor", "none")
        self.assertIsInstance(svc, tap.TwistdBridge)
        e = self.assertRaises(tap.StartupFailed, svc.privilegedStartService)
        self.assertEqual(str(e), "xlbridge: --ports: UDP port 8888 is already in use on 127.0.0.1")
        self.assertFalse(svc.running)

    def test_audiosocket_port_in_use_with_the_same_udp_number_free(self) -> None:
        reactor = TakenPortsReactor(tcp=(5052,))
        svc = self.service(reactor, "--ports", "1=5050,2=5052", "--audiosocket", "7000=5050,7001=5052",
                           "--monitor", "none", "--interface", "0.0.0.0")
        e = self.assertRaises(tap.StartupFailed, svc.privilegedStartService)
        self.assertEqual(str(e), "xlbridge: --audiosocket: TCP port 5052 is already in use on 0.0.0.0")

    def test_ari_audiosocket_port_in_use(self) -> None:
        svc = self.service(
            TakenPortsReactor(tcp=(9200,)), "--ari", "http://127.0.0.1:8088", "--ari-user", "u",
            "--ari-password-file", password_file(self), "--ari-media", "audiosocket",
            "--ari-audiosocket-port", "9200", "--monitor", "none",
        )
        e = self.assertRaises(tap.StartupFailed, svc.privilegedStartService)
        self.assertEqual(str(e), "xlbridge: --ari-audiosocket-port: TCP port 9200 is already in use on 127.0.0.1")

    def test_ari_websocket_port_in_use(self) -> None:
        svc = self.service(
            TakenPortsReactor(tcp=(9201,)), "--ari", "http://127.0.0.1:8088", "--ari-user", "u",
            "--ari-password-file", password_file(self), "--ari-media", "websocket",
            "--ari-websocket-connection", "client", "--ari-websocket-client", "xlbridge-ari",
            "--ari-websocket-port", "9201", "--monitor", "none",
        )
        e = self.assertRaises(tap.StartupFailed, svc.privilegedStartService)
        self.assertEqual(str(e), "xlbridge: --ari-websocket-port: TCP port 9201 is already in use on 127.0.0.1")

    def test_monitor_port_in_use_stops_what_started(self) -> None:
        reactor = TakenPortsReactor(tcp=(3001,))
        svc = self.service(reactor, "--ports", "7777,8888", "--monitor", "tcp:3001:interface=127.0.0.1")
        svc.privilegedStartService()
        e = self.assertRaises(tap.StartupFailed, svc.startService)
        self.assertEqual(str(e), "xlbridge: --monitor: TCP port 3001 is already in use on 127.0.0.1")
        self.assertFalse(svc.running)
        self.assertEqual([s.name for s in svc if s.running], [])
        self.assertFalse(svc.egress.running)
        self.assertEqual([p for p, port in reactor.udp.items() if port.listening], [])

    def test_address_not_on_this_machine_names_the_interface(self) -> None:
        svc = self.service(TakenPortsReactor(udp=(7777,), code=errno.EADDRNOTAVAIL), "--ports", "7777,8888",
                           "--interface", "192.0.2.10", "--monitor", "none")
        e = self.assertRaises(tap.StartupFailed, svc.privilegedStartService)
        self.assertEqual(
            str(e),
            "xlbridge: --interface: 192.0.2.10 is not an address of this machine (cannot listen on UDP port 7777)",
        )

    def test_privileged_port(self) -> None:
        svc = self.service(TakenPortsReactor(udp=(80,), code=errno.EACCES), "--ports", "1=80,2=81", "--monitor", "none")
        e = self.assertRaises(tap.StartupFailed, svc.privilegedStartService)
        self.assertEqual(
            str(e),
            "xlbridge: --ports: cannot listen on UDP port 80 on 127.0.0.1: "
            "Permission denied (ports below 1024 need root)",
        )

    def test_transcript_that_cannot_be_opened(self) -> None:
        folder = self.mktemp()
        os.mkdir(folder)
        path = os.path.join(folder, "events.jsonl")
        svc = self.service(TakenPortsReactor(), "--ports", "7777,8888", "--monitor", "none", "--events", path)
        os.rmdir(folder)  # gone between the check and the start
        svc.privilegedStartService()
        e = self.assertRaises(tap.StartupFailed, svc.startService)
        self.assertEqual(str(e), f"xlbridge: --events: cannot open {path}: No such file or directory")
        self.assertFalse(svc.running)

    def test_other_errors_pass_through(self) -> None:
        svc = self.service(TakenPortsReactor(), "--ports", "7777,8888", "--monitor", "none")
        self.assertIsNone(tap.start_failure(svc, ValueError("x")))
        self.assertIsNone(tap.start_failure(svc, OSError(errno.ENOENT, "No such file", "/elsewhere")))


class ServiceUsageErrorTests(SynchronousTestCase):
    def test_usage_error_while_building_is_one_line_for_twistd(self) -> None:
        """
        A usage error raised while building the service stays a UsageError
        with its own message, and exits twistd with ``xlbridge: message``.
        """
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise ConfigError("langs", "'xx' is not served")

        self.patch(tap, "choose_engines", refuse)
        o = tap.Options()
        o.parseOptions(["--monitor", "none"])
        e = self.assertRaises(usage.UsageError, tap.makeService, o, MemoryNetReactor())
        self.assertIsInstance(e, tap.ServiceUsageError)
        self.assertIsInstance(e, SystemExit)
        self.assertEqual(str(e), "--langs: 'xx' is not served")
        self.assertEqual(e.code, "xlbridge: --langs: 'xx' is not served")


class FreezeTests(SynchronousTestCase):
    def test_start_up_heap_leaves_full_collections(self) -> None:
        """What is alive is frozen: a full collection no longer scans it."""
        import gc

        self.addCleanup(gc.unfreeze)
        before = len(gc.get_objects())
        frozen = tap.freeze_startup_heap()
        self.assertGreaterEqual(frozen, before // 2)
        self.assertLess(len(gc.get_objects()), before // 10)


class StartupLogTests(SynchronousTestCase):
    def lines(self, *argv: str) -> list[str]:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        o = tap.Options()
        o.parseOptions(["--engines", "relay", "--monitor", "none", *argv])
        tap.makeService(o, MemoryNetReactor())
        return [formatEvent(e) for e in events]

    def test_a_settings_file_others_can_read_with_a_key_is_warned_about(self) -> None:
        import os

        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[monitor]\ntoken = "a-view-token-of-ours"\n')
        os.chmod(path, 0o644)
        warned = [line for line in self.lines("--config", path) if "chmod 600" in line]
        self.assertEqual(len(warned), 1, warned)
        self.assertIn(path, warned[0])
        self.assertNotIn("a-view-token-of-ours", warned[0])
        os.chmod(path, 0o640)
        self.assertFalse([line for line in self.lines("--config", path) if "chmod" in line])

    def test_media_admission_is_stated(self) -> None:
        lines = self.lines("--audiosocket", "7000=5050,7001=5052", "--max-new-calls", "5")
        self.assertIn(
            "media connections (AudioSocket, WebSocket) accepted from 127.0.0.0/8, ::1/128; "
            "at most 5 new calls a second per transport",
            lines,
        )
        self.assertFalse([line for line in self.lines("--ports", "7777,8888") if "media connections" in line])

    def test_rtp_legs_log_their_codecs(self) -> None:
        lines = self.lines("--ports", "7777,8888")
        self.assertIn("codec slin16 in, g722 back, on 127.0.0.1", lines)
        self.assertFalse([line for line in lines if line.startswith("AudioSocket")])

    def test_audiosocket_legs_say_what_they_send(self) -> None:
        lines = self.lines("--audiosocket", "7000=5050,7001=5052")
        self.assertFalse([line for line in lines if "g722" in line or line.startswith("codec")], lines)
        self.assertIn(
            "AudioSocket: signed linear, little-endian, both ways, at the rate Asterisk sends "
            "(8 kHz from AudioSocket(), 16 kHz with slin16), on 127.0.0.1",
            lines,
        )

    def test_both(self) -> None:
        lines = self.lines("--ports", "7777,8888", "--audiosocket", "7000=5050,7001=5052")
        self.assertEqual(len([line for line in lines if line.startswith(("codec", "AudioSocket:"))]), 2)

    def test_ari_audiosocket_media(self) -> None:
        lines = self.lines("--ari", "http://127.0.0.1:8088", "--ari-user", "u", "--ari-password-file",
                           password_file(self), "--ari-media", "audiosocket")
        self.assertFalse([line for line in lines if line.startswith("codec")], lines)
        [ari] = [line for line in lines if line.startswith("ARI ")]
        self.assertIn("AudioSocket (slin16, little-endian, both ways) on TCP port 9092", ari)

    def test_ari_websocket_media(self) -> None:
        base = ["--ari", "http://127.0.0.1:8088", "--ari-user", "u", "--ari-password-file", password_file(self),
                "--ari-media", "websocket"]
        [ari] = [line for line in self.lines(*base) if line.startswith("ARI ")]
        self.assertIn("WebSocket media (chan_websocket, slin16 little-endian both ways): xlbridge connects to "
                      "ws://127.0.0.1:8088/media/<id> for each caller", ari)
        [ari] = [line for line in self.lines(*base, "--ari-websocket-connection", "client",
                                             "--ari-websocket-client", "xlbridge-ari") if line.startswith("ARI ")]
        self.assertIn("Asterisk dials TCP port 9093 through its websocket_client.conf entry xlbridge-ari", ari)


def twistd_command() -> list[str]:
    """The ``twistd`` script of this Python (``python -m twisted`` is ``twist``)."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]


def twistd(*argv: str, cwd: str = "/", pidfile: str = "") -> "subprocess.Popen[str]":
    """``twistd -n --pidfile= xlbridge ARGV`` as an operator runs it."""
    return subprocess.Popen(
        [*twistd_command(), "-n", f"--pidfile={pidfile}", "xlbridge", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
    )


def finish(proc: "subprocess.Popen[str]") -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"twistd did not exit:\n{out}")
    return proc.returncode, out


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EndToEndTests(SynchronousTestCase):
    """
    ``twistd -n --pidfile= xlbridge <bad option>`` as a subprocess: exit
    status 1, the message once on one line, no traceback, nothing started.
    """

    def assertOneLine(self, code: int, out: str, message: str) -> None:
        self.assertEqual(code, 1, out)
        self.assertNotIn("Traceback", out)
        self.assertEqual([line for line in out.splitlines() if message in line], [out.rstrip().splitlines()[-1]], out)
        self.assertTrue(out.rstrip().endswith(message), out)

    def test_bad_values_are_usage_errors(self) -> None:
        cases = [
            (["--monitor", "bogus"], "--monitor: 'bogus' is not an endpoint like tcp:3001:interface=127.0.0.1, "
             "or none (Unknown endpoint type: 'bogus')"),
            (["--monitor", "tcp:99999"], "--monitor: port 99999 is outside 0..65535"),
            (["--interface", "notanip"], "--interface: 'notanip' is not an IP address like 127.0.0.1, 0.0.0.0 or ::"),
            (["--events", "/nonexistent/dir/x"],
             "--events: cannot write /nonexistent/dir/x: directory /nonexistent/dir does not exist"),
            (["--ports", "none"], "--ports: none leaves no source of calls: give extensions here, or --audiosocket, "
             "--websocket or --ari"),
            (["--rtp-ports", "20000-20009", "--ari-user", "u"],
             "--ari-user: needs --ari (Asterisk's ARI URL), which is not set; so do --rtp-ports"),
        ]
        procs = [(twistd(*argv), message) for argv, message in cases]
        for proc, message in procs:
            code, out = finish(proc)
            self.assertOneLine(code, out, message)
            self.assertNotIn("starting up", out)

    def test_password_file_readable_by_others(self) -> None:
        path = password_file(self)
        os.chmod(path, 0o644)
        code, out = finish(twistd("--ari", "http://127.0.0.1:8088", "--ari-user", "u", "--ari-password-file", path))
        self.assertOneLine(code, out, f"--ari-password-file: {path} is readable by its group and other users "
                                      f"(mode 644); run: chmod 600 {path}")

    def test_udp_port_in_use(self) -> None:
        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        other = free_port(socket.SOCK_DGRAM)
        code, out = finish(twistd("--ports", f"1000={other},1001={port}", "--engines", "relay", "--monitor", "none"))
        self.assertOneLine(code, out, f"xlbridge: --ports: UDP port {port} is already in use on 127.0.0.1")

    def test_monitor_port_in_use(self) -> None:
        """
        The monitor listens last, after the engines started: the process
        still exits at once, and with a pid file, removes it.
        """
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        proc = twistd(
            "--engines", "relay", "--events", "events.jsonl",
            "--ports", f"1000={free_port(socket.SOCK_DGRAM)},1001={free_port(socket.SOCK_DGRAM)}",
            "--monitor", f"tcp:{port}:interface=127.0.0.1", cwd=folder, pidfile="x.pid",
        )
        code, out = finish(proc)
        self.assertOneLine(code, out, f"xlbridge: --monitor: TCP port {port} is already in use on 127.0.0.1")
        self.assertFalse(os.path.exists(os.path.join(folder, "x.pid")))

    def test_bad_engine_setting_found_while_building(self) -> None:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("[apertium]\nbogus = 1\n")
        code, out = finish(twistd("--config", path, "--engines", "relay", "--monitor", "none"))
        self.assertEqual(code, 1, out)
        self.assertNotIn("Traceback", out)
        [line] = [line for line in out.splitlines() if "bogus" in line]
        self.assertTrue(line.startswith("xlbridge: --config: "), out)


class LogEventTests(SynchronousTestCase):
    """What twistd's log says of an event, with and without the words."""

    def logged(self, event: Any, *argv: str) -> list[str]:
        o = tap.Options()
        o.parseOptions(["--engines", "relay", "--monitor", "none", *argv])
        bridge = tap.makeService(o, MemoryNetReactor())
        assert isinstance(bridge, BridgeService)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for observer in bridge.observers:
            observer(event)
        return [formatEvent(e) for e in events]

    def said(self) -> TranscriptEvent:
        return TranscriptEvent("call-1", "7777", "en", "my card number is 4111", True, 1.0)

    def test_words_logged_by_default(self) -> None:
        self.assertIn("7777 said: my card number is 4111", self.logged(self.said()))

    def test_events_text_no_logs_lengths_only(self) -> None:
        lines = self.logged(self.said(), "--events-text", "no")
        self.assertIn("7777 said: <22 characters>", lines)
        self.assertFalse([line for line in lines if "4111" in line], lines)
