"""
Tests for xlbridge.config_values: each parser of a single setting value on
its own, its accepted forms and every error (a ConfigError naming the
option).

tests/test_config.py covers the basic extension list, language and payload
type forms and load_config's merge; these tests aim at the edges of each
parser.  The number, choice, boolean and level parsers are mostly reached
through the ``xlbridge.config.SETTINGS`` table, as load_config reaches them.
"""

from __future__ import annotations

import ast
import math
import os
import pathlib
from typing import Any, Callable

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.codecs import CODEC_NAMES
from xlbridge.config import ENGINES, SETTINGS
from xlbridge.config_values import (
    checked_number,
    choice_parser,
    config_path,
    duplicates,
    level_or_off_parser,
    number_parser,
    parse_bool,
    parse_ip_address,
    parse_langs,
    parse_listen_endpoint,
    parse_output_file,
    parse_payload_types,
    parse_port_range,
    parse_ports,
    parse_text,
    read_secret_file,
)
from xlbridge.errors import ConfigError


class ConfigErrorCase(SynchronousTestCase):
    def assertConfigError(self, option: str, words: str, f: Callable[..., Any], *args: Any) -> ConfigError:
        """
        ``f(*args)`` raises a ConfigError for ``option`` whose message
        contains ``words`` and starts with ``--option:``.
        """
        e = self.assertRaises(ConfigError, f, *args)
        self.assertEqual(e.option, option)
        self.assertTrue(str(e).startswith(f"--{option}: "), str(e))
        self.assertIn(words, str(e))
        return e


class ParsePortsTests(ConfigErrorCase):
    def test_blank_items_and_spaces_are_ignored(self) -> None:
        self.assertEqual(parse_ports(" 7777 , ,8888 ,"), [("7777", 7777), ("8888", 8888)])

    def test_forms_mix_in_order(self) -> None:
        self.assertEqual(
            parse_ports("100=5000, 7-8, 200"),
            [("100", 5000), ("7", 7), ("8", 8), ("200", 200)],
        )

    def test_single_extension_range(self) -> None:
        self.assertEqual(parse_ports("5-5,6"), [("5", 5), ("6", 6)])

    def test_port_zero_may_repeat(self) -> None:
        """Port 0 (any free port) is not a shared port."""
        self.assertEqual(parse_ports("1=0,2=0"), [("1", 0), ("2", 0)])

    def test_bounds_of_a_port(self) -> None:
        self.assertEqual(parse_ports("1=0,2=65535"), [("1", 0), ("2", 65535)])
        self.assertConfigError("ports", "port 65536 is outside 0..65535", parse_ports, "1=65536,2=1")
        self.assertConfigError("ports", "'x' is not a port number", parse_ports, "1=x,2=3")
        self.assertConfigError("ports", "not a port number", parse_ports, "1-x")

    def test_extension_of_a_mapping_must_be_a_number(self) -> None:
        self.assertConfigError("ports", "extension '' in '=5000'", parse_ports, "=5000,1")

    def test_duplicate_in_a_long_list(self) -> None:
        """Lists of 64 extensions or more are checked for duplicates too."""
        self.assertConfigError("ports", "extension 50 is listed twice", parse_ports, "1-100,50,101")

    def test_duplicate_through_a_mapping(self) -> None:
        self.assertConfigError("ports", "extension 1 is listed twice", parse_ports, "1=100,1=200")

    def test_range_and_mapping_sharing_a_port(self) -> None:
        self.assertConfigError("ports", "two extensions share one UDP port", parse_ports, "10-11,12=10,13")

    def test_odd_count_says_how_many(self) -> None:
        self.assertConfigError("ports", "3 extensions given", parse_ports, "1-3")

    def test_option_named_in_errors(self) -> None:
        """The option given is the one named, and AudioSocket ports are TCP."""
        self.assertConfigError("audiosocket", "no extensions", parse_ports, " , ", "audiosocket")
        self.assertConfigError(
            "audiosocket", "share one TCP port", parse_ports, "1=9000,2=9000", "audiosocket"
        )
        self.assertConfigError("ari-x", "must be even", parse_ports, "1", "ari-x")


class ParseLangsTests(ConfigErrorCase):
    def test_list_form(self) -> None:
        """A TOML array: items are stripped and lower-cased like the string form."""
        self.assertEqual(parse_langs(["EN", " es ", ""]), ["en", "es"])

    def test_region_codes_and_blank_items(self) -> None:
        self.assertEqual(parse_langs("pt-BR,, zh-Hans ,"), ["pt-br", "zh-hans"])
        self.assertEqual(parse_langs("auto,es"), ["auto", "es"])

    def test_length_limit(self) -> None:
        self.assertEqual(parse_langs("a" * 16), ["a" * 16])
        self.assertConfigError("langs", "is not a language code", parse_langs, "en," + "a" * 17)

    def test_errors_name_option_and_value(self) -> None:
        self.assertConfigError("langs", "no languages given", parse_langs, " , ")
        self.assertConfigError("langs", "no languages given", parse_langs, [])
        self.assertConfigError("langs", "'e5' is not a language code like en or es", parse_langs, "en,e5")
        self.assertConfigError("langs", "'en_us'", parse_langs, "en_US")
        self.assertConfigError("ari-langs", "'1'", parse_langs, [1], "ari-langs")


class ParsePayloadTypesTests(ConfigErrorCase):
    def test_table_form(self) -> None:
        self.assertEqual(parse_payload_types({"slin16": 96, "ulaw": "0"}), {"slin16": 96, "ulaw": 0})

    def test_empty(self) -> None:
        self.assertEqual(parse_payload_types(""), {})
        self.assertEqual(parse_payload_types(" , "), {})
        self.assertEqual(parse_payload_types({}), {})

    def test_bounds(self) -> None:
        self.assertEqual(parse_payload_types("slin16=0,g722=127"), {"slin16": 0, "g722": 127})
        self.assertConfigError(
            "payload-types", "payload type 128 for slin16 is outside 0..127", parse_payload_types, "slin16=128"
        )
        self.assertConfigError("payload-types", "payload type -1", parse_payload_types, {"g722": -1})

    def test_every_codec_name_is_known(self) -> None:
        spec = ",".join(f"{name}={96 + i}" for i, name in enumerate(CODEC_NAMES))
        self.assertEqual(parse_payload_types(spec), {name: 96 + i for i, name in enumerate(CODEC_NAMES)})

    def test_errors(self) -> None:
        e = self.assertConfigError("payload-types", "unknown codec 'opus'", parse_payload_types, "opus=96")
        for name in CODEC_NAMES:
            self.assertIn(name, str(e))
        self.assertConfigError(
            "payload-types", "payload type '' for slin16 is not a number", parse_payload_types, "slin16"
        )
        self.assertConfigError(
            "payload-types", "payload type 'x' for ulaw is not a number", parse_payload_types, "ulaw = x"
        )
        self.assertConfigError("payload-types", "None for ulaw is not a number", parse_payload_types, {"ulaw": None})
        self.assertConfigError("media-pt", "unknown codec", parse_payload_types, "SLIN16=96", "media-pt")


class ParsePortRangeTests(ConfigErrorCase):
    def test_ranges(self) -> None:
        self.assertEqual(parse_port_range("rtp-ports", "20000-29999"), (20000, 29999))
        self.assertEqual(parse_port_range("rtp-ports", " 1 - 2 "), (1, 2))
        self.assertEqual(parse_port_range("rtp-ports", "5-5"), (5, 5))
        self.assertEqual(parse_port_range("rtp-ports", "1-65535"), (1, 65535))

    def test_errors(self) -> None:
        self.assertConfigError("rtp-ports", "'20000' is not a range like 20000-29999", parse_port_range, "rtp-ports", "20000")
        self.assertConfigError("rtp-ports", "is not a range", parse_port_range, "rtp-ports", 20000)
        self.assertConfigError("rtp-ports", "runs backwards", parse_port_range, "rtp-ports", "10-5")
        self.assertConfigError("rtp-ports", "empty", parse_port_range, "rtp-ports", "0-10")
        self.assertConfigError("rtp-ports", "'a' is not a port number", parse_port_range, "rtp-ports", "a-10")
        self.assertConfigError("rtp-ports", "outside 0..65535", parse_port_range, "rtp-ports", "1-70000")
        self.assertConfigError("other", "not a range", parse_port_range, "other", "")


class CheckedNumberTests(ConfigErrorCase):
    def test_integers(self) -> None:
        for value in (1, 5, 10):
            n = checked_number("x.beam_size", value, int, 1, 10)
            self.assertEqual(n, value)
            self.assertIs(type(n), int)

    def test_floats_accept_integers(self) -> None:
        n = checked_number("x.temperature", 1, float, 0.0, 1.0)
        self.assertEqual(n, 1.0)
        self.assertIs(type(n), float)
        self.assertEqual(checked_number("x.temperature", 0.25, float, 0.0, 1.0), 0.25)

    def test_type_errors_name_the_key(self) -> None:
        for value, kind, words in [
            (5.0, int, "expected an integer, got 5.0"),
            ("5", int, "expected an integer, got '5'"),
            (True, int, "expected an integer, got True"),
            (False, float, "expected a number, got False"),
            ("0.5", float, "expected a number, got '0.5'"),
            (None, float, "expected a number, got None"),
        ]:
            e = self.assertConfigError("config", words, checked_number, "local_asr.whisper.beam_size", value, kind, 0, 10)
            self.assertIn("local_asr.whisper.beam_size: ", str(e))

    def test_range_errors_name_the_key(self) -> None:
        self.assertConfigError("config", "k: 11 is outside 1..10", checked_number, "k", 11, int, 1, 10)
        self.assertConfigError("config", "k: 0 is outside 1..10", checked_number, "k", 0, int, 1, 10)
        self.assertConfigError("config", "k: -0.5 is outside 0.0..1.0", checked_number, "k", -0.5, float, 0.0, 1.0)
        self.assertConfigError("config", "k: nan is outside", checked_number, "k", math.nan, float, 0.0, 1.0)


class ConfigPathTests(ConfigErrorCase):
    def test_home_is_expanded(self) -> None:
        old = os.environ.get("HOME")
        os.environ["HOME"] = "/home/someone"
        self.addCleanup(lambda: os.environ.__setitem__("HOME", old) if old is not None else os.environ.pop("HOME"))
        self.assertEqual(config_path("vosk.model", "~/models/vosk"), "/home/someone/models/vosk")

    def test_other_paths_unchanged(self) -> None:
        self.assertEqual(config_path("vosk.model", "/opt/models/vosk"), "/opt/models/vosk")
        self.assertEqual(config_path("vosk.model", "models/vosk"), "models/vosk")

    def test_not_a_path(self) -> None:
        for value in ("", "   ", 5, None, ["/a"]):
            e = self.assertConfigError("config", "vosk.model: expected a path, got", config_path, "vosk.model", value)
            self.assertIn(repr(value), str(e))


def parser(option: str) -> Callable[[str, Any], Any]:
    """The parser load_config uses for ``option``."""
    return SETTINGS[option][2]


class NumberTests(ConfigErrorCase):
    def test_integer_setting(self) -> None:
        depth = parser("reorder-depth")
        for text, value in [("0", 0), ("50", 50), (" 7 ", 7), (7, 7)]:
            n = depth("reorder-depth", text)
            self.assertEqual(n, value)
            self.assertIs(type(n), int)
        self.assertConfigError("reorder-depth", "51 is outside 0..50", depth, "reorder-depth", "51")
        self.assertConfigError("reorder-depth", "-1 is outside 0..50", depth, "reorder-depth", -1)
        self.assertConfigError("reorder-depth", "'2.5' is not a", depth, "reorder-depth", "2.5")
        self.assertConfigError("reorder-depth", "'deep' is not a", depth, "reorder-depth", "deep")
        self.assertConfigError("reorder-depth", "None is not a", depth, "reorder-depth", None)

    def test_whole_numbers_are_not_cut_or_taken_from_booleans(self) -> None:
        """TOML ``reorder_depth = 2.7`` or ``max_burst = true`` used to become 2 and 1."""
        depth = parser("reorder-depth")
        self.assertEqual(depth("reorder-depth", 3.0), 3)
        self.assertConfigError("reorder-depth", "2.7 is not a whole number", depth, "reorder-depth", 2.7)
        self.assertConfigError("reorder-depth", "True is not a whole number", depth, "reorder-depth", True)
        self.assertConfigError("reorder-depth", "'2.5' is not a whole number", depth, "reorder-depth", "2.5")
        latch = parser("latch-timeout")
        self.assertConfigError("latch-timeout", "False is not a number", latch, "latch-timeout", False)

    def test_float_setting(self) -> None:
        latch = parser("latch-timeout")
        n = latch("latch-timeout", "2")
        self.assertEqual(n, 2.0)
        self.assertIs(type(n), float)
        self.assertEqual(latch("latch-timeout", "0.1"), 0.1)
        self.assertEqual(latch("latch-timeout", 3600), 3600.0)
        self.assertConfigError("latch-timeout", "0.05 is outside 0.1..3600", latch, "latch-timeout", "0.05")
        self.assertConfigError("latch-timeout", "outside", latch, "latch-timeout", "3600.5")
        self.assertConfigError("latch-timeout", "'soon' is not a number", latch, "latch-timeout", "soon")

    def test_nan_and_infinity_are_out_of_range(self) -> None:
        gain = parser("gain")
        self.assertEqual(gain("gain", "-40"), -40.0)
        self.assertEqual(gain("gain", "20"), 20.0)
        self.assertConfigError("gain", "nan is outside -40..20", gain, "gain", "nan")
        self.assertConfigError("gain", "inf is outside", gain, "gain", "inf")
        self.assertConfigError("gain", "-inf is outside", gain, "gain", "-inf")


class LevelOrOffTests(ConfigErrorCase):
    def test_off_words(self) -> None:
        for option in ("comfort-noise", "bed"):
            for value in ("off", " OFF ", "none", "no", "false", False):
                self.assertIsNone(parser(option)(option, value), (option, value))

    def test_levels(self) -> None:
        noise = parser("comfort-noise")
        self.assertEqual(noise("comfort-noise", "-60"), -60.0)
        self.assertEqual(noise("comfort-noise", -120), -120.0)
        self.assertEqual(noise("comfort-noise", "-20"), -20.0)
        self.assertConfigError("comfort-noise", "-10.0 is outside -120..-20", noise, "comfort-noise", "-10")
        self.assertConfigError("comfort-noise", "'loud' is not a number", noise, "comfort-noise", "loud")

    def test_zero_db_bed_is_a_level_not_off(self) -> None:
        bed = parser("bed")
        self.assertEqual(bed("bed", 0), 0.0)
        self.assertEqual(bed("bed", "0"), 0.0)
        self.assertEqual(bed("bed", "-60"), -60.0)
        self.assertConfigError("bed", "outside -60..0", bed, "bed", "3")


class ChoiceTests(ConfigErrorCase):
    def test_every_choice_accepted_normalised(self) -> None:
        engines = parser("engines")
        for name in ENGINES:
            self.assertEqual(engines("engines", name), name)
            self.assertEqual(engines("engines", f"  {name.upper()} "), name)

    def test_codec_choices_are_the_codec_names(self) -> None:
        for option in ("codec", "reply-codec"):
            for name in CODEC_NAMES:
                self.assertEqual(parser(option)(option, name), name)

    def test_error_lists_the_choices(self) -> None:
        self.assertConfigError(
            "engines", "'magic' is not one of auto, cloud, local, relay", parser("engines"), "engines", "magic"
        )
        self.assertConfigError("ari-media", "'sip' is not one of rtp, audiosocket, websocket", parser("ari-media"), "ari-media", "sip")
        self.assertConfigError("engines", "'' is not one of", parser("engines"), "engines", "")


class BoolTests(ConfigErrorCase):
    def test_yes_and_no_words(self) -> None:
        flag = parser("monitor-metrics-open")
        for value in (True, "yes", "TRUE", " on ", "1", 1):
            self.assertIs(flag("monitor-metrics-open", value), True, value)
        for value in (False, "no", "False", " OFF", "0", 0):
            self.assertIs(flag("monitor-metrics-open", value), False, value)

    def test_anything_else_is_an_error(self) -> None:
        for value in ("maybe", "", "2", 2, None):
            self.assertConfigError(
                "sync-directions", f"{value!r} is not yes or no", parser("sync-directions"), "sync-directions", value
            )


class TextTests(SynchronousTestCase):
    def test_text_is_stripped(self) -> None:
        self.assertEqual(parser("interface")("interface", "  0.0.0.0 \n"), "0.0.0.0")
        self.assertEqual(parser("events")("events", 5), "5")


class PublicParsersTests(ConfigErrorCase):
    def test_factories(self) -> None:
        self.assertEqual(number_parser(int, 1, 3)("x", "2"), 2)
        self.assertConfigError("x", "4 is outside 1..3", number_parser(int, 1, 3), "x", 4)
        self.assertEqual(choice_parser(("a", "b"))("x", " B "), "b")
        self.assertConfigError("x", "'c' is not one of a, b", choice_parser(("a", "b")), "x", "c")
        self.assertIsNone(level_or_off_parser(-10, 0)("x", "off"))
        self.assertEqual(level_or_off_parser(-10, 0)("x", "-3"), -3.0)
        self.assertIs(parse_bool("x", "on"), True)
        self.assertEqual(parse_text("x", " a "), "a")
        self.assertEqual(duplicates(["a", "b", "a", "c", "b"]), {"a", "b"})
        self.assertEqual(duplicates([]), set())


class NoPrivateImportsTests(SynchronousTestCase):
    def test_no_module_imports_a_private_name_of_another(self) -> None:
        """
        No xlbridge module imports a ``_private`` name from another: what
        is shared has a public name.
        """
        package = pathlib.Path(__file__).resolve().parents[1] / "xlbridge"
        found = []
        for path in sorted(package.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xlbridge"):
                    found += [f"{path.relative_to(package.parent)}: {node.module}.{a.name}"
                              for a in node.names if a.name.startswith("_")]
        self.assertEqual(found, [])


class IPAddressTests(ConfigErrorCase):
    def test_literals(self) -> None:
        for text in ("127.0.0.1", " 0.0.0.0 ", "::", "::1", "fe80::1%eth0", "192.0.2.10"):
            self.assertEqual(parse_ip_address("interface", text), text.strip())

    def test_names_and_garbage(self) -> None:
        for text in ("notanip", "localhost", "256.1.1.1", "1.2.3", "127.0.0.1:7777"):
            self.assertConfigError("interface", f"{text!r} is not an IP address", parse_ip_address, "interface", text)
        self.assertConfigError("interface", "empty bind address", parse_ip_address, "interface", " ")


class ListenEndpointTests(ConfigErrorCase):
    def test_accepted(self) -> None:
        for text in ("tcp:3001:interface=127.0.0.1", "tcp:0", "tcp:port=3001", "tcp6:3001:interface=\\:\\:1",
                     "unix:/run/xlbridge/monitor.sock", "tcp:65535"):
            self.assertEqual(parse_listen_endpoint("monitor", text), text)

    def test_none(self) -> None:
        for text in ("none", " None ", "NONE"):
            self.assertEqual(parse_listen_endpoint("monitor", text), "none")

    def test_refused(self) -> None:
        for text, words in [
            ("bogus", "'bogus' is not an endpoint like tcp:3001:interface=127.0.0.1, or none (Unknown endpoint type"),
            ("tcp:99999", "port 99999 is outside 0..65535"),
            ("tcp:port=99999", "port 99999 is outside"),
            ("tcp:-1", "port -1 is outside"),
            ("tcp:x", "'tcp:x' is not an endpoint"),
            ("tcp", "'tcp' is not an endpoint"),
            ("", "empty; give an endpoint like tcp:3001"),
            ("ssl:3443:privateKey=/nonexistent/key.pem", "'ssl:3443:privateKey=/nonexistent/key.pem' is not"),
        ]:
            e = self.assertConfigError("monitor", words, parse_listen_endpoint, "monitor", text)
            self.assertNotIn("\n", str(e))


class OutputFileTests(ConfigErrorCase):
    def test_new_file_in_an_existing_directory(self) -> None:
        folder = self.mktemp()
        os.mkdir(folder)
        path = os.path.join(folder, "e.jsonl")
        self.assertEqual(parse_output_file("events", f" {path} "), path)
        self.assertFalse(os.path.exists(path))

    def test_existing_file(self) -> None:
        path = self.mktemp()
        open(path, "w").close()
        self.assertEqual(parse_output_file("events", path), path)

    def test_empty_is_none(self) -> None:
        self.assertEqual(parse_output_file("events", ""), "")

    def test_refused(self) -> None:
        self.assertConfigError(
            "events", "cannot write /nonexistent/dir/x: directory /nonexistent/dir does not exist",
            parse_output_file, "events", "/nonexistent/dir/x",
        )
        folder = self.mktemp()
        os.mkdir(folder)
        self.assertConfigError("events", f"{folder} is a directory, not a file", parse_output_file, "events", folder)


class SecretFileTests(ConfigErrorCase):
    def write(self, text: str, mode: int) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_owner_only(self) -> None:
        self.assertEqual(read_secret_file("x", self.write(" pw \n", 0o600)), "pw")
        self.assertEqual(read_secret_file("x", self.write("pw", 0o400)), "pw")

    def test_group_or_others(self) -> None:
        path = self.write("pw", 0o644)
        self.assertConfigError("x", f"readable by its group and other users (mode 644); run: chmod 600 {path}",
                               read_secret_file, "x", path)
        self.assertConfigError("x", "readable by its group (mode 640)", read_secret_file, "x", self.write("pw", 0o640))

    def test_path_is_quoted_for_the_shell(self) -> None:
        folder = self.mktemp() + " dir"
        os.mkdir(folder)
        path = os.path.join(folder, "pw")
        with open(path, "w") as f:
            f.write("pw")
        os.chmod(path, 0o604)
        self.assertConfigError("x", f"chmod 600 '{path}'", read_secret_file, "x", path)

    def test_empty_missing_binary(self) -> None:
        self.assertConfigError("x", "is empty", read_secret_file, "x", self.write("\n", 0o600))
        self.assertConfigError("x", "cannot read /nonexistent", read_secret_file, "x", "/nonexistent")
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xff\xfe")
        os.chmod(path, 0o600)
        self.assertConfigError("x", "is not UTF-8 text", read_secret_file, "x", path)
