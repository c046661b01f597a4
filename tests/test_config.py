"""
Tests for xlbridge.config: extension lists, languages, TOML merge and errors.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.config import load_config, parse_langs, parse_payload_types, parse_ports
from xlbridge.errors import ConfigError


class PortsTests(SynchronousTestCase):
    def test_plain_mapped_and_range(self) -> None:
        self.assertEqual(parse_ports("7777,8888"), [("7777", 7777), ("8888", 8888)])
        self.assertEqual(parse_ports("7777=17777, 8888=18888"), [("7777", 17777), ("8888", 18888)])
        r = parse_ports("20000-20399")
        self.assertEqual((len(r), r[0], r[-1]), (400, ("20000", 20000), ("20399", 20399)))

    def assertBad(self, spec: str, words: str) -> None:
        e = self.assertRaises(ConfigError, parse_ports, spec)
        self.assertEqual(e.option, "ports")
        self.assertIn(words, str(e))

    def test_errors(self) -> None:
        self.assertBad("7777", "must be even")
        self.assertBad("7777,8888,9999", "must be even")
        self.assertBad("", "no extensions")
        self.assertBad("7777,abc", "not a port")
        self.assertBad("7777,70000", "outside")
        self.assertBad("7777,7777", "listed twice")
        self.assertBad("1=5000,2=5000", "share one UDP port")
        self.assertBad("9-1", "backwards")
        self.assertBad("x=1,2", "not a number")


class LoadTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_defaults(self) -> None:
        c = load_config({})
        self.assertEqual([p.extensions for p in c.pairs], [("7777", "8888")])
        self.assertEqual(c.pairs[0].languages, ("en", "es"))
        self.assertEqual((c.codec, c.reply_codec, c.interface), ("slin16", "g722", "127.0.0.1"))
        self.assertEqual(c.codec_out().payload_type, 9)

    def test_reply_defaults_to_same_codec_except_slin16(self) -> None:
        self.assertEqual(load_config({"codec": "ulaw"}).reply_codec, "ulaw")
        self.assertEqual(load_config({"codec": "slin"}).reply_codec, "slin")
        self.assertEqual(load_config({"codec": "slin16", "reply-codec": "slin16"}).reply_codec, "slin16")

    def test_langs_repeat_per_pair(self) -> None:
        c = load_config({"ports": "1-6", "langs": "en,es"})
        self.assertEqual([p.languages for p in c.pairs], [("en", "es")] * 3)
        c = load_config({"ports": "1-4", "langs": "en,es,de,fr"})
        self.assertEqual([p.languages for p in c.pairs], [("en", "es"), ("de", "fr")])

    def test_toml_then_cli(self) -> None:
        path = self.write(
            '[bridge]\nports = "1000,1002"\nlangs = "de,fr"\n'
            '[media]\nreply_codec = "ulaw"\nlatch_timeout = 2.5\npayload_types = { slin16 = 96 }\n'
            "[calls]\ninactivity_timeout = 30\n"
        )
        c = load_config({"langs": "en,es", "reply-codec": None}, path)
        self.assertEqual(c.pairs[0].extensions, ("1000", "1002"))
        self.assertEqual(c.pairs[0].languages, ("en", "es"))
        self.assertEqual((c.reply_codec, c.latch_timeout, c.call_timeout), ("ulaw", 2.5, 30.0))
        self.assertEqual(c.codec_in().payload_type, 96)

    def test_sample_config_loads(self) -> None:
        import os

        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        c = load_config({}, os.path.join(here, "etc", "xlbridge.toml"))
        self.assertEqual(c.pairs[0].extensions, ("7777", "8888"))

    def test_file_errors_name_the_problem(self) -> None:
        e = self.assertRaises(ConfigError, load_config, {}, self.write("[media]\nreply_codek = 'g722'\n"))
        self.assertIn("reply_codek", str(e))
        e = self.assertRaises(ConfigError, load_config, {}, self.write("[medya]\n"))
        self.assertIn("[medya]", str(e))
        e = self.assertRaises(ConfigError, load_config, {}, self.write("not toml = = \n"))
        self.assertIn("not valid TOML", str(e))
        e = self.assertRaises(ConfigError, load_config, {}, "/nonexistent/x.toml")
        self.assertIn("cannot read", str(e))

    def test_value_errors_name_the_option(self) -> None:
        for opt, value in [
            ("codec", "opus"),
            ("reply-codec", "mp3"),
            ("engines", "magic"),
            ("latch-timeout", "soon"),
            ("reorder-depth", "-1"),
            ("max-burst", "0"),
            ("relay-buffer-ms", "5"),
            ("call-timeout", "0"),
        ]:
            e = self.assertRaises(ConfigError, load_config, {opt: value})
            self.assertEqual(e.option, opt)
            self.assertIn(f"--{opt}", str(e))

    def test_payload_types(self) -> None:
        self.assertEqual(parse_payload_types("slin16=96, g722=9"), {"slin16": 96, "g722": 9})
        self.assertRaises(ConfigError, parse_payload_types, "opus=96")
        self.assertRaises(ConfigError, parse_payload_types, "slin16=200")
        self.assertRaises(ConfigError, parse_payload_types, "slin16=x")

    def test_langs(self) -> None:
        self.assertEqual(parse_langs("EN, es"), ["en", "es"])
        self.assertRaises(ConfigError, parse_langs, "")
        self.assertRaises(ConfigError, parse_langs, "en,e5")
