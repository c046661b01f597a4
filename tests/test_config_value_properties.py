"""
Property tests of the settings parsers (issue 15, bad input): every
setting, from the TOML file (any TOML type) or the command line (any
text), is either accepted or refused with a :class:`ConfigError` naming
it: never another exception (which twistd would print as a traceback).

The fuzzer (``python -m reliability.fuzz --surface config``) found three
settings that let another exception out (``langs``, ``ari-password-file``,
``payload-types``), all fixed; the tests below pin each.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.config import FILE_ONLY, SETTINGS, load_config
from xlbridge.errors import ConfigError
from xlbridge.tap import Options

#: Settings known to raise something else for some values (none left).
KNOWN_DEFECTS: tuple[str, ...] = ()

#: What TOML can hold.
TOML_VALUES = st.recursive(
    st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.datetimes(min_value=datetime.datetime(1, 1, 2)) | st.times(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
#: Text that looks like values of these settings, and text that does not.
TEXT = st.text(max_size=40) | st.sampled_from([
    "none", "off", "yes", "no", "-1", "0", "65536", "1e309", "nan", "7777,8888", "1-2", "20000-10000",
    "7000=5050:slin16", "slin16=118", "slin16=200", "tcp:0", "unix:/x", "http://", "sound:", "en,es,fr",
])


class _PasswordFile:
    path = ""

    @classmethod
    def get(cls, case: SynchronousTestCase) -> str:
        if not cls.path or not os.path.exists(cls.path):
            cls.path = case.mktemp()
            with open(cls.path, "w") as f:
                f.write("secret\n")
            os.chmod(cls.path, 0o600)
        return cls.path


def _with_ari(case: SynchronousTestCase, option: str, values: dict[str, Any]) -> dict[str, Any]:
    """ARI options need --ari (and its user and password) to be looked at."""
    section = SETTINGS[option][0]
    if section == "ari" and option != "ari":
        values = {"ari": "http://127.0.0.1:1", "ari-user": "u", "ari-password-file": _PasswordFile.get(case),
                  **values}
    if option != "monitor":
        values.setdefault("monitor", "none")
    return values


class SettingsProperties(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(st.sampled_from([o for o in SETTINGS if o not in KNOWN_DEFECTS]), TOML_VALUES)
    def test_file_values_accepted_or_config_error(self, option: str, value: Any) -> None:
        try:
            load_config(_with_ari(self, option, {option: value}), environ={})
        except ConfigError as e:
            self.assertTrue(str(e))

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([o for o in SETTINGS if o not in FILE_ONLY and o not in KNOWN_DEFECTS]), TEXT)
    def test_command_line_accepted_or_usage_error(self, option: str, text: str) -> None:
        argv = [f"--{option}", text]
        for k, v in _with_ari(self, option, {}).items():
            argv += [f"--{k}", v]
        try:
            Options().parseOptions(argv[2:] + argv[:2])  # the option under test last: nothing overrides it
        except usage.UsageError as e:
            self.assertTrue(str(e))

    def assertConfigError(self, option: str, value: Any) -> None:
        with self.assertRaises(ConfigError):
            load_config(_with_ari(self, option, {option: value}), environ={})

    def test_langs_not_text(self) -> None:
        """``[bridge] langs = 1.5`` raised AttributeError ('float' has no 'split')."""
        self.assertConfigError("langs", 1.5)

    def test_payload_types_not_a_table(self) -> None:
        """``[media] payload_types = 5`` (or ``[1, 2]``) raised TypeError from ``dict()``."""
        self.assertConfigError("payload-types", 5)
        self.assertConfigError("payload-types", [1, 2])

    def test_password_file_with_nul(self) -> None:
        """A path with a NUL byte raised ValueError from open()."""
        self.assertConfigError("ari-password-file", "x\x00y")

