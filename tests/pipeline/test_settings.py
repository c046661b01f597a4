"""
Tests for xlbridge.pipeline.settings: the word similarity the echo guard
uses, TranslateSettings' defaults and how the command line / TOML options
become one (xlbridge.config.load_config), the choice constants, and
DirectionSync's per-direction latency arithmetic on its own (the pipeline's
use of it is in tests/pipeline/test_translate.py).
"""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.config import SETTINGS, load_config
from xlbridge.errors import ConfigError
from xlbridge.pipeline.settings import (
    ECHO_GUARDS,
    FALLBACKS,
    GRANULARITIES,
    DirectionSync,
    TranslateSettings,
    similarity,
)


class SimilarityTests(SynchronousTestCase):
    def test_case_and_punctuation_do_not_count(self) -> None:
        self.assertEqual(similarity("¿Dónde está el HOSPITAL?", "donde esta el hospital"), 0.5)
        self.assertEqual(similarity("¿Dónde está el HOSPITAL?", "¡dónde, está el hospital!"), 1.0)

    def test_word_level_ratio(self) -> None:
        # 2 * matching words / total words: 2*3 / (4+3).
        self.assertAlmostEqual(similarity("where is the hospital", "where is hospital"), 6 / 7)
        self.assertEqual(similarity("a b c d", "e f g h"), 0.0)

    def test_word_order_matters(self) -> None:
        self.assertLess(similarity("one two three four", "four three two one"), 0.5)

    def test_symmetric(self) -> None:
        a, b = "thank you very much", "thank you so much indeed"
        self.assertAlmostEqual(similarity(a, b), similarity(b, a))

    def test_no_words_is_zero(self) -> None:
        self.assertEqual(similarity("", ""), 0.0)
        self.assertEqual(similarity("hello", ""), 0.0)
        self.assertEqual(similarity("...", "?!"), 0.0)

    def test_unicode_words(self) -> None:
        self.assertEqual(similarity("Привет мир", "привет МИР"), 1.0)
        self.assertEqual(similarity("你好", "你好"), 1.0)


class TranslateSettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        s = TranslateSettings()
        self.assertEqual(
            attrs.asdict(s),
            {
                "granularity": "segment",
                "backlog_s": 10.0,
                "echo_guard": "text",
                "echo_window_s": 8.0,
                "echo_similarity": 0.6,
                "gate_tail_ms": 300,
                "fallback": "relay",
                "comfort_noise_dbfs": -60.0,
                "bed_db": None,
                "gain_db": 0.0,
                "context_segments": 3,
                "live_buffer_ms": 200,
                "sync_directions": False,
                "sync_max_ms": 1500.0,
                "early_play_ms": None,
            },
        )

    def test_defaults_are_valid_choices(self) -> None:
        s = TranslateSettings()
        self.assertIn(s.granularity, GRANULARITIES)
        self.assertIn(s.echo_guard, ECHO_GUARDS)
        self.assertIn(s.fallback, FALLBACKS)

    def test_frozen_value(self) -> None:
        s = TranslateSettings(gain_db=3.0)
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, s, "gain_db", 0.0)
        self.assertEqual(s, TranslateSettings(gain_db=3.0))
        self.assertEqual(hash(s), hash(TranslateSettings(gain_db=3.0)))
        self.assertNotEqual(s, TranslateSettings())
        self.assertEqual(attrs.evolve(s, gain_db=0.0), TranslateSettings())

    def test_config_without_options_has_the_defaults(self) -> None:
        self.assertEqual(load_config({}).translation, TranslateSettings())

    def test_from_command_line_options(self) -> None:
        t = load_config(
            {
                "granularity": "UTTERANCE",
                "backlog": "30",
                "echo-guard": "both",
                "fallback": "silence",
                "comfort-noise": "off",
                "bed": "-12",
                "gain": "-3.5",
                "sync-directions": "yes",
                "sync-max-ms": "800",
                "ports": None,  # not given
            }
        ).translation
        self.assertEqual(
            t,
            TranslateSettings(
                granularity="utterance",
                backlog_s=30.0,
                echo_guard="both",
                fallback="silence",
                comfort_noise_dbfs=None,
                bed_db=-12.0,
                gain_db=-3.5,
                sync_directions=True,
                sync_max_ms=800.0,
            ),
        )

    def test_from_toml_then_command_line(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                "[translation]\n"
                'granularity = "utterance"\nbacklog_s = 5\necho_guard = "gate"\nfallback = "silence"\n'
                "comfort_noise_dbfs = -70\nbed_db = -20\ngain_db = 2\nsync_directions = true\nsync_max_ms = 100\n"
            )
        t = load_config({"echo-guard": "off", "bed": None}, path).translation
        self.assertEqual(
            t,
            TranslateSettings(
                granularity="utterance",
                backlog_s=5.0,
                echo_guard="off",
                fallback="silence",
                comfort_noise_dbfs=-70.0,
                bed_db=-20.0,
                gain_db=2.0,
                sync_directions=True,
                sync_max_ms=100.0,
            ),
        )

    def test_bad_option_values_name_the_option(self) -> None:
        for option, value in [
            ("granularity", "word"),
            ("echo-guard", "loud"),
            ("fallback", "beep"),
            ("backlog", "0.5"),
            ("backlog", "601"),
            ("gain", "21"),
            ("bed", "1"),
            ("comfort-noise", "-10"),
            ("sync-directions", "sometimes"),
            ("sync-max-ms", "-1"),
            ("sync-max-ms", "10001"),
        ]:
            e = self.assertRaises(ConfigError, load_config, {option: value})
            self.assertEqual(e.option, option, (option, value))


class ChoiceConstantsTests(SynchronousTestCase):
    def test_values(self) -> None:
        self.assertEqual(GRANULARITIES, ("segment", "utterance"))
        self.assertEqual(ECHO_GUARDS, ("text", "gate", "both", "off"))
        self.assertEqual(FALLBACKS, ("relay", "silence"))

    def test_they_are_the_options_choices(self) -> None:
        """Each option accepts exactly its constant's values."""
        for option, choices in [
            ("granularity", GRANULARITIES),
            ("echo-guard", ECHO_GUARDS),
            ("fallback", FALLBACKS),
        ]:
            parse = SETTINGS[option][2]
            for value in choices:
                self.assertEqual(parse(option, value), value)
            e = self.assertRaises(ConfigError, parse, option, "nonsense")
            self.assertIn(", ".join(choices), str(e))


class DirectionSyncTests(SynchronousTestCase):
    def test_first_observation_is_taken_as_is(self) -> None:
        sync = DirectionSync(max_ms=1000)
        sync.observe("7777", 600.0)
        self.assertEqual(sync.latency_ms, {"7777": 600.0})
        self.assertEqual(sync.max_ms, 1000)

    def test_running_mean(self) -> None:
        """Later observations move the estimate by ALPHA of the difference."""
        sync = DirectionSync(max_ms=1000)
        sync.observe("7777", 600.0)
        sync.observe("7777", 1000.0)
        self.assertAlmostEqual(sync.latency_ms["7777"], 600.0 + DirectionSync.ALPHA * 400.0)
        sync.observe("7777", 0.0)
        expected = 720.0 - DirectionSync.ALPHA * 720.0
        self.assertAlmostEqual(sync.latency_ms["7777"], expected)

    def test_added_delay_is_not_natural_latency(self) -> None:
        sync = DirectionSync(max_ms=1000)
        sync.observe("8888", 700.0, added_ms=500.0)
        self.assertEqual(sync.latency_ms["8888"], 200.0)
        other = DirectionSync(max_ms=1000)
        other.observe("8888", 100.0, added_ms=500.0)
        self.assertEqual(other.latency_ms["8888"], 0.0)

    def test_no_target_without_both_directions(self) -> None:
        sync = DirectionSync(max_ms=1000)
        self.assertIsNone(sync.target_ms("7777"))
        sync.observe("7777", 600.0)
        self.assertIsNone(sync.target_ms("7777"))
        self.assertIsNone(sync.target_ms("8888"))  # no own latency yet

    def test_faster_direction_matches_the_slower(self) -> None:
        sync = DirectionSync(max_ms=1000)
        sync.observe("7777", 600.0)
        sync.observe("8888", 100.0)
        self.assertEqual(sync.target_ms("8888"), 600.0)
        self.assertIsNone(sync.target_ms("7777"))  # the slower one is not held

    def test_equal_latencies_need_no_target(self) -> None:
        sync = DirectionSync(max_ms=1000)
        sync.observe("7777", 300.0)
        sync.observe("8888", 300.0)
        self.assertIsNone(sync.target_ms("7777"))
        self.assertIsNone(sync.target_ms("8888"))

    def test_target_is_capped_by_max_ms(self) -> None:
        sync = DirectionSync(max_ms=250)
        sync.observe("7777", 3000.0)
        sync.observe("8888", 100.0)
        self.assertEqual(sync.target_ms("8888"), 350.0)

    def test_slowest_of_several_others(self) -> None:
        sync = DirectionSync(max_ms=10000)
        for speaker, ms in [("a", 100.0), ("b", 400.0), ("c", 900.0)]:
            sync.observe(speaker, ms)
        self.assertEqual(sync.target_ms("a"), 900.0)
        self.assertEqual(sync.target_ms("b"), 900.0)
        self.assertIsNone(sync.target_ms("c"))
