"""
Tests for xlbridge.config: extension lists, languages, TOML merge and errors;
``--ports none``, the ARI options without ``--ari``, the ARI password
file's mode, and the monitor token's precedence.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import password_file
from xlbridge.config import ARI_ONLY, SETTINGS, load_config
from xlbridge.config_values import parse_langs, parse_payload_types, parse_ports
from xlbridge.errors import ConfigError

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(HERE, "etc", "xlbridge.toml")


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
        c = load_config({}, SAMPLE)
        self.assertEqual(c.pairs[0].extensions, ("7777", "8888"))  # the default, not the file's

    def test_sample_config_opens_no_rtp_ports_of_its_own(self) -> None:
        """
        With the sample and --audiosocket (or --ari), only what the command
        line asks for is opened: the sample does not switch ports on.
        """
        c = load_config({"audiosocket": "7000=5050,7001=5052"}, SAMPLE)
        self.assertEqual([p.transports for p in c.pairs], [("audiosocket", "audiosocket")])
        c = load_config(
            {"ari": "http://127.0.0.1:8088", "ari-user": "u", "ari-password-file": password_file(self)}, SAMPLE
        )
        self.assertEqual(c.pairs, ())

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


class PortsNoneTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_none_with_audiosocket_opens_no_rtp_ports(self) -> None:
        for none in ("none", "", " NONE "):
            c = load_config({"ports": none, "audiosocket": "7000=5050,7001=5052"})
            self.assertEqual([p.transports for p in c.pairs], [("audiosocket", "audiosocket")], none)

    def test_none_with_ari(self) -> None:
        c = load_config({"ports": "none", "ari": "http://127.0.0.1:8088", "ari-user": "u",
                         "ari-password-file": password_file(self)})
        self.assertEqual(c.pairs, ())
        self.assertIsNotNone(c.ari)

    def test_command_line_none_overrides_the_file(self) -> None:
        path = self.write('[bridge]\nports = "7777,8888"\naudiosocket = "7000=5050,7001=5052"\n')
        self.assertEqual(len(load_config({}, path).pairs), 2)
        c = load_config({"ports": "none"}, path)
        self.assertEqual([p.extensions for p in c.pairs], [("7000", "7001")])

    def test_file_none_and_empty_list(self) -> None:
        for value in ('"none"', '""', "[]"):
            path = self.write(f'[bridge]\nports = {value}\naudiosocket = "7000=5050,7001=5052"\n')
            self.assertEqual([p.transports for p in load_config({}, path).pairs],
                             [("audiosocket", "audiosocket")], value)

    def test_none_without_another_source_is_an_error(self) -> None:
        for none in ("none", ""):
            e = self.assertRaises(ConfigError, load_config, {"ports": none})
            self.assertEqual(e.option, "ports")
            self.assertEqual(
                str(e), "--ports: none leaves no source of calls: give extensions here, or --audiosocket, --websocket or --ari"
            )


class BadValueTests(SynchronousTestCase):
    """
    Values that used to pass parsing and fail at start-up with a traceback
    are now refused up front, naming the option.
    """

    def test_wrong_types_found_by_the_fuzzer_are_config_errors(self) -> None:
        for cli in ({"ports": "7777,8888", "langs": 1e-9}, {"ports": "7777,8888", "langs": 3},
                    {"ari": "http://127.0.0.1:8088", "ari-user": "u", "ari-password-file": "\x00"}):
            with self.assertRaises(ConfigError):
                load_config(cli)

    def assertRefused(self, option: str, value: Any, words: str) -> ConfigError:
        e = self.assertRaises(ConfigError, load_config, {option: value})
        self.assertEqual(e.option, option)
        self.assertTrue(str(e).startswith(f"--{option}: "), str(e))
        self.assertIn(words, str(e))
        self.assertNotIn("\n", str(e))
        return e

    def test_interface_must_be_an_ip_address(self) -> None:
        self.assertRefused("interface", "notanip", "'notanip' is not an IP address like 127.0.0.1, 0.0.0.0 or ::")
        self.assertRefused("interface", "localhost", "not an IP address")
        self.assertRefused("interface", "", "empty bind address")
        for good in ("0.0.0.0", "::", "::1", "192.0.2.10"):
            self.assertEqual(load_config({"interface": good}).interface, good)

    def test_monitor_must_be_an_endpoint(self) -> None:
        self.assertRefused("monitor", "bogus", "'bogus' is not an endpoint like tcp:3001:interface=127.0.0.1, or none")
        self.assertRefused("monitor", "tcp:99999", "port 99999 is outside 0..65535")
        self.assertRefused("monitor", "tcp:port=70000:interface=127.0.0.1", "port 70000 is outside")
        self.assertRefused("monitor", "tcp:abc", "is not an endpoint")
        self.assertRefused("monitor", "", "empty")
        self.assertEqual(load_config({"monitor": "None"}).monitor, "none")
        self.assertEqual(load_config({"monitor": "tcp:0:interface=127.0.0.1"}).monitor, "tcp:0:interface=127.0.0.1")

    def test_events_directory_must_exist(self) -> None:
        self.assertRefused(
            "events", "/nonexistent/dir/x", "cannot write /nonexistent/dir/x: directory /nonexistent/dir does not exist"
        )
        folder = self.mktemp()
        os.mkdir(folder)
        self.assertRefused("events", folder, "is a directory")
        path = os.path.join(folder, "events.jsonl")
        self.assertEqual(load_config({"events": path}).events, path)
        self.assertFalse(os.path.exists(path))  # checked, not created

    def test_events_file_not_writable(self) -> None:
        if os.geteuid() == 0:
            self.skipTest("root may write anywhere")
        folder = self.mktemp()
        os.mkdir(folder)
        os.chmod(folder, 0o500)
        self.addCleanup(os.chmod, folder, 0o700)
        self.assertRefused("events", os.path.join(folder, "x"), "is not writable")


class ARIOnlyOptionsTests(SynchronousTestCase):
    def test_each_ari_option_without_ari_is_an_error(self) -> None:
        values = {"ari-user": "u", "ari-password-file": "/etc/xlbridge/ari-password", "ari-app": "a",
                  "rtp-ports": "20000-20009", "ari-external-host": "127.0.0.1", "on-partner-hangup": "keep",
                  "partner-hangup-sound": "sound:beep", "ari-media": "rtp", "ari-audiosocket-port": "9092",
                  "ari-websocket-connection": "client", "ari-websocket-client": "xlbridge-ari",
                  "ari-websocket-port": "9093", "ari-dial-timeout": "20"}
        self.assertEqual(sorted(values), sorted(ARI_ONLY))
        for option, value in values.items():
            e = self.assertRaises(ConfigError, load_config, {option: value})
            self.assertEqual(e.option, option)
            self.assertEqual(str(e), f"--{option}: needs --ari (Asterisk's ARI URL), which is not set")

    def test_several_are_all_named(self) -> None:
        e = self.assertRaises(ConfigError, load_config, {"rtp-ports": "20000-20009", "ari-user": "u", "ari": ""})
        self.assertEqual(str(e), "--ari-user: needs --ari (Asterisk's ARI URL), which is not set; so do --rtp-ports")

    def test_from_the_file_too(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[ari]\nuser = "u"\n')
        e = self.assertRaises(ConfigError, load_config, {}, path)
        self.assertEqual(e.option, "ari-user")

    def test_ari_only_is_the_ari_section(self) -> None:
        self.assertEqual(set(ARI_ONLY), {o for o, (sec, _, _) in SETTINGS.items() if sec == "ari"} - {"ari"})


class PasswordFileTests(SynchronousTestCase):
    def ari(self, path: str) -> Any:
        return load_config({"ari": "http://127.0.0.1:8088", "ari-user": "u", "ari-password-file": path}).ari

    def test_owner_only_is_accepted(self) -> None:
        path = password_file(self, "pw")
        for mode in (0o600, 0o400, 0o700):
            os.chmod(path, mode)
            self.assertEqual(self.ari(path).password, "pw")

    def test_readable_by_others_is_refused(self) -> None:
        path = password_file(self, "pw")
        for mode, who in [(0o644, "its group and other users"), (0o640, "its group"), (0o604, "other users")]:
            os.chmod(path, mode)
            e = self.assertRaises(ConfigError, self.ari, path)
            self.assertEqual(e.option, "ari-password-file")
            self.assertEqual(
                str(e), f"--ari-password-file: {path} is readable by {who} (mode {mode:03o}); run: chmod 600 {path}"
            )
            self.assertNotIn("pw", str(e).replace(path, ""))

    def test_unreadable_and_empty(self) -> None:
        e = self.assertRaises(ConfigError, self.ari, "/nonexistent/pw")
        self.assertIn("--ari-password-file: cannot read /nonexistent/pw", str(e))
        e = self.assertRaises(ConfigError, self.ari, password_file(self, "  "))
        self.assertIn("is empty", str(e))


class MonitorTokenTests(SynchronousTestCase):
    """
    The environment wins over the file: ``monitor_token`` is then None and
    the monitor reads ``XLBRIDGE_MONITOR_TOKEN`` itself.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        with open(self.path, "w") as f:
            f.write('[monitor]\ntoken = "from-file"\n')

    def test_file_alone(self) -> None:
        self.assertEqual(load_config({}, self.path, environ={}).monitor_token, "from-file")

    def test_environment_wins_over_the_file(self) -> None:
        c = load_config({}, self.path, environ={"XLBRIDGE_MONITOR_TOKEN": "from-env"})
        self.assertIsNone(c.monitor_token)

    def test_blank_environment_does_not_count(self) -> None:
        c = load_config({}, self.path, environ={"XLBRIDGE_MONITOR_TOKEN": "  "})
        self.assertEqual(c.monitor_token, "from-file")

    def test_the_monitor_then_uses_the_environment(self) -> None:
        from xlbridge.monitor.auth import TokenSource, resolve_token

        environ = {"XLBRIDGE_MONITOR_TOKEN": "from-env"}
        c = load_config({}, self.path, environ=environ)
        self.assertEqual(resolve_token(c.monitor_token, environ)[:2], ("from-env", TokenSource.ENV))

    def test_no_command_line_twin(self) -> None:
        from xlbridge.tap import Options

        self.assertNotIn("monitor-token", {p[0] for p in Options.optParameters})
        self.assertNotIn("from-file", repr(load_config({}, self.path, environ={})))

    def test_metrics_open_from_the_command_line(self) -> None:
        self.assertIs(load_config({"monitor-metrics-open": "yes"}).monitor_metrics_open, True)
        self.assertIs(load_config({"monitor-metrics-open": "no"}, SAMPLE).monitor_metrics_open, False)


class LanguageCountTests(SynchronousTestCase):
    """``--langs`` must tile the extensions: never wrap across pairs."""

    def test_odd_count_is_refused(self) -> None:
        with self.assertRaises(ConfigError) as e:
            load_config({"ports": "7777,8888,7778,8889", "langs": "en,es,fr"})
        self.assertIn("--langs", str(e.exception))
        self.assertIn("3 languages for 4 extensions", str(e.exception))

    def test_one_pair_is_used_for_every_pair(self) -> None:
        c = load_config({"ports": "7777,8888,7778,8889", "langs": "en,es"})
        self.assertEqual([p.languages for p in c.pairs], [("en", "es"), ("en", "es")])

    def test_one_per_extension(self) -> None:
        c = load_config({"ports": "7777,8888,7778,8889", "langs": "en,es,fr,en"})
        self.assertEqual([p.languages for p in c.pairs], [("en", "es"), ("fr", "en")])
