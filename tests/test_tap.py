"""
Tests for the twistd plugin: discovery, options, usage errors, makeService
(with ``--ari``, the ARI controller it adds).
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import password_file
from xlbridge import tap
from xlbridge.ari.controller import ARIController
from xlbridge.bridge import BridgeService
from xlbridge.testing import MemoryUDPReactor


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
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(word, str(e))

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

    def test_sample_config_documents_ari(self) -> None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(here, "etc", "xlbridge.toml")) as f:
            text = f.read()
        self.assertIn("[ari]", text)
        for key in ("url", "user", "password_file", "app", "rtp_ports", "on_partner_hangup", "media",
                    "audiosocket_port", "dial_timeout", "partner_hangup_sound"):
            self.assertIn(f"# {key} = ", text)
