"""
``--audiosocket``: parsing, its independence from ``--ports``, and the tap.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from xlbridge import tap
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.errors import ConfigError
from xlbridge.testing import MemoryNetReactor


class AudioSocketConfigTests(SynchronousTestCase):
    def test_alone_opens_no_rtp_ports(self) -> None:
        c = load_config({"audiosocket": "7000=5050,7001=5052"})
        self.assertEqual([(p.extensions, p.ports, p.transports) for p in c.pairs],
                         [(("7000", "7001"), (5050, 5052), ("audiosocket", "audiosocket"))])

    def test_with_ports_pairs_are_independent(self) -> None:
        c = load_config({"ports": "7777,8888", "audiosocket": "7000=5050,7001=5052", "langs": "en,es,de,fr"})
        self.assertEqual([p.transports for p in c.pairs], [("rtp", "rtp"), ("audiosocket", "audiosocket")])
        self.assertEqual([p.languages for p in c.pairs], [("en", "es"), ("de", "fr")])
        self.assertEqual((c.port_of("7001"), c.transport_of("7001")), (5052, "audiosocket"))

    def test_format_states_the_rate(self) -> None:
        """
        ``EXT=PORT:FORMAT`` (or ``EXT:FORMAT``) tells the leg's rate, so
        replies need not start in 8 kHz; others stay unknown.
        """
        c = load_config({"audiosocket": "7000=5050:slin16,7001=5052,7002:slin,7003=5056:slin48"})
        self.assertEqual([p.rates for p in c.pairs], [(16000, None), (8000, 48000)])
        self.assertEqual([p.ports for p in c.pairs], [(5050, 5052), (7002, 5056)])
        self.assertEqual((c.rate_of("7000"), c.rate_of("7001")), (16000, None))

    def test_bad_formats_are_refused(self) -> None:
        for spec, text in [
            ("7000=5050:ulaw,7001=5052", "unknown format 'ulaw' in '7000=5050:ulaw': one of slin, slin12"),
            ("7000-7001:slin16", "a format applies to one extension"),
        ]:
            e = self.assertRaises(ConfigError, load_config, {"audiosocket": spec})
            self.assertEqual(e.option, "audiosocket")
            self.assertIn(text, str(e))

    def test_stated_rate_answers_in_kind_from_the_first_frame(self) -> None:
        reactor = MemoryNetReactor()
        bridge = BridgeService(load_config({"audiosocket": "7000=5050:slin16,7001=5052"}), reactor)
        bridge.privilegedStartService()
        bridge.startService()
        self.addCleanup(bridge.stopService)
        self.assertEqual(bridge.endpoints["7000"].first_reply_rate, 16000)
        self.assertEqual(bridge.endpoints["7001"].first_reply_rate, 8000)

    def test_errors_name_the_option(self) -> None:
        for cli, text in [
            ({"audiosocket": "7000=5050"}, "must be even"),
            ({"audiosocket": "7000=5050,7001=5050"}, "share one TCP port"),
            ({"ports": "7777,8888", "audiosocket": "7777=5050,7001=5052"}, "both --ports and --audiosocket"),
        ]:
            e = self.assertRaises(ConfigError, load_config, cli)
            self.assertEqual(e.option, "audiosocket")
            self.assertIn(text, str(e))

    def test_toml(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[bridge]\naudiosocket = "7000=5050,7001=5052"\n')
        c = load_config({}, path)
        self.assertEqual(c.pairs[0].transports, ("audiosocket", "audiosocket"))


class AudioSocketTapTests(SynchronousTestCase):
    def test_make_service_listens_tcp_and_udp(self) -> None:
        o = tap.Options()
        o.parseOptions(["--ports", "7777,8888", "--audiosocket", "7000=5050,7001=5052",
                        "--engines", "relay", "--monitor", "none", "--interface", "127.0.0.2"])
        reactor = MemoryNetReactor()
        svc = tap.makeService(o, reactor)
        assert isinstance(svc, BridgeService)
        svc.privilegedStartService()
        svc.startService()
        self.addCleanup(svc.stopService)
        self.assertEqual(sorted(reactor.udp), [7777, 8888])
        self.assertEqual(sorted(reactor.tcp), [5050, 5052])
        self.assertEqual(reactor.tcp[5050].interface, "127.0.0.2")
        self.assertEqual(svc.getServiceNamed("audiosocket-7000").parent, svc)

    def test_usage_error(self) -> None:
        e = self.assertRaises(usage.UsageError, tap.Options().parseOptions, ["--audiosocket", "7000"])
        self.assertIn("--audiosocket", str(e))
