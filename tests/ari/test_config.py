"""
The ARI settings: command-line options, the ``[ari]`` TOML section, and
their errors.
"""

from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import PASSWORD, password_file
from xlbridge.config import load_config
from xlbridge.errors import ConfigError


class ConfigTests(SynchronousTestCase):
    def test_ari_options(self) -> None:
        cfg = load_config({"ari": "http://127.0.0.1:8088/", "ari-user": "u",
                           "ari-password-file": password_file(self), "rtp-ports": "30000-30009"})
        assert cfg.ari is not None
        self.assertEqual(cfg.ari.url, "http://127.0.0.1:8088")
        self.assertEqual(cfg.ari.password, PASSWORD)
        self.assertEqual(cfg.ari.rtp_ports, (30000, 30009))
        self.assertEqual(cfg.ari.app, "xlbridge")
        self.assertEqual(cfg.pairs, ())  # no static ports with --ari
        self.assertNotIn(PASSWORD, repr(cfg))
        self.assertEqual(
            (cfg.ari.media, cfg.ari.audiosocket_port, cfg.ari.dial_timeout, cfg.ari.on_partner_hangup,
             cfg.ari.partner_hangup_sound),
            ("rtp", 9092, 30, "hangup", "sound:vm-goodbye"),
        )

    def test_media_prompt_and_dial_options(self) -> None:
        cfg = load_config({"ari": "http://h:8088", "ari-user": "u", "ari-password-file": password_file(self),
                           "ari-media": "AudioSocket", "ari-audiosocket-port": "9100", "ari-dial-timeout": "45",
                           "on-partner-hangup": "prompt", "partner-hangup-sound": "sound:bye, tone:busy"})
        assert cfg.ari is not None
        self.assertEqual(
            (cfg.ari.media, cfg.ari.audiosocket_port, cfg.ari.dial_timeout, cfg.ari.on_partner_hangup,
             cfg.ari.partner_hangup_sound),
            ("audiosocket", 9100, 45, "prompt", "sound:bye,tone:busy"),
        )

    def test_websocket_media_options(self) -> None:
        base = {"ari": "http://h:8088", "ari-user": "u", "ari-password-file": password_file(self)}
        cfg = load_config({**base, "ari-media": "websocket"})
        assert cfg.ari is not None
        self.assertEqual((cfg.ari.media, cfg.ari.websocket_connection, cfg.ari.websocket_client,
                          cfg.ari.websocket_port), ("websocket", "server", None, 9093))
        cfg = load_config({**base, "ari-media": "websocket", "ari-websocket-connection": "Client",
                           "ari-websocket-client": "xlbridge-ari", "ari-websocket-port": "9100"})
        assert cfg.ari is not None
        self.assertEqual((cfg.ari.websocket_connection, cfg.ari.websocket_client, cfg.ari.websocket_port),
                         ("client", "xlbridge-ari", 9100))

    def test_toml_section(self) -> None:
        fd, path = tempfile.mkstemp(suffix=".toml")
        pw = password_file(self)
        os.write(fd, f'[ari]\nurl = "http://h:8088"\nuser = "u"\npassword_file = "{pw}"\n'
                     f'app = "xl"\nrtp_ports = "20000-20099"\non_partner_hangup = "keep"\n'
                     f'media = "audiosocket"\naudiosocket_port = 9093\ndial_timeout = 20\n'
                     f'partner_hangup_sound = "sound:goodbye"\nwebsocket_connection = "client"\n'
                     f'websocket_client = "xl-ari"\nwebsocket_port = 9094\n'.encode())
        os.close(fd)
        self.addCleanup(os.unlink, path)
        cfg = load_config({}, path)
        assert cfg.ari is not None
        self.assertEqual((cfg.ari.app, cfg.ari.on_partner_hangup), ("xl", "keep"))
        self.assertEqual((cfg.ari.media, cfg.ari.audiosocket_port, cfg.ari.dial_timeout,
                          cfg.ari.partner_hangup_sound), ("audiosocket", 9093, 20, "sound:goodbye"))
        self.assertEqual((cfg.ari.websocket_connection, cfg.ari.websocket_client, cfg.ari.websocket_port),
                         ("client", "xl-ari", 9094))

    def test_errors(self) -> None:
        base = {"ari": "http://h:8088", "ari-user": "u", "ari-password-file": password_file(self)}
        for bad, word in [
            ({"ari-user": None}, "ari-user"),
            ({"ari-password-file": "/nonexistent"}, "ari-password-file"),
            ({"rtp-ports": "300"}, "rtp-ports"),
            ({"ari": "h:8088"}, "ari"),
            ({"on-partner-hangup": "maybe"}, "on-partner-hangup"),
            ({"ari-media": "sip"}, "ari-media"),
            ({"ari-audiosocket-port": "70000"}, "ari-audiosocket-port"),
            ({"ari-audiosocket-port": "x"}, "ari-audiosocket-port"),
            ({"ari-dial-timeout": "0"}, "ari-dial-timeout"),
            ({"ari-dial-timeout": "1.5"}, "ari-dial-timeout"),
            ({"partner-hangup-sound": "vm-goodbye"}, "partner-hangup-sound"),
            ({"partner-hangup-sound": "sound:"}, "partner-hangup-sound"),
            ({"ari-media": "audiosocket", "ari-audiosocket-port": "5050", "audiosocket": "7000=5050,7001=5052"},
             "ari-audiosocket-port"),
            ({"ari-websocket-connection": "both"}, "ari-websocket-connection"),
            ({"ari-websocket-port": "65536"}, "ari-websocket-port"),
            ({"ari-media": "websocket", "ari-websocket-connection": "client"}, "ari-websocket-client"),
            ({"ari-websocket-client": "xl ari"}, "ari-websocket-client"),
            ({"ari-websocket-client": "WebSocket/xl"}, "ari-websocket-client"),
            ({"ari-media": "websocket", "ari-websocket-connection": "client", "ari-websocket-client": "x",
              "websocket": "7002=9093,7003=8703"}, "ari-websocket-port"),
        ]:
            e = self.assertRaises(ConfigError, load_config, {**base, **bad})
            self.assertIn(word, str(e))
