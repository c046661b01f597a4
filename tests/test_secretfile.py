"""
The start-up warning for a settings file that holds a secret and that other
users can read (xlbridge/secretfile.py), on real temporary files.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.secretfile import (
    SECRET_SETTINGS,
    config_file_warning,
    permission_warning,
    readable_by_others,
    secrets_in,
)

KEY = "dg-SECRET-0123456789abcdef"


class SecretFileTests(SynchronousTestCase):
    def write(self, text: str, mode: int) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_readable_by_others_is_the_other_read_bit_only(self) -> None:
        cases = {0o600: False, 0o400: False, 0o640: False, 0o660: False, 0o644: True, 0o604: True, 0o666: True}
        for mode, expected in cases.items():
            self.assertEqual(readable_by_others(self.write("", mode)), expected, oct(mode))

    def test_readable_by_others_follows_links_and_raises_for_missing(self) -> None:
        target = self.write("", 0o644)
        link = self.mktemp()
        os.symlink(os.path.abspath(target), link)
        self.assertTrue(readable_by_others(link))
        os.chmod(target, 0o600)
        self.assertFalse(readable_by_others(link))
        self.assertRaises(OSError, readable_by_others, self.mktemp())

    def test_warning_names_file_secret_mode_and_fix(self) -> None:
        path = self.write("", 0o644)
        message = permission_warning(path, True)
        self.assertEqual(
            message,
            f"{path} holds a key, token or password and is readable by other users (mode 644); "
            f"run: chmod 600 {path} (or chmod 640 {path} if xlbridge reads it through its group)",
        )
        named = permission_warning(path, True, ["deepgram.api_key", "monitor.token"])
        assert named is not None
        self.assertIn(" holds secrets (deepgram.api_key, monitor.token) and ", named)

    def test_no_warning_without_secret_or_when_private(self) -> None:
        self.assertIsNone(permission_warning(self.write("", 0o666), False))
        for mode in (0o600, 0o640, 0o400):
            self.assertIsNone(permission_warning(self.write("", mode), True), oct(mode))
        self.assertIsNone(permission_warning(self.mktemp(), True))  # missing: the loader says so

    def test_path_is_quoted_in_the_fix(self) -> None:
        path = os.path.join(self.mktemp() + " dir")
        os.mkdir(path)
        path = os.path.join(path, "x.toml")
        with open(path, "w") as f:
            f.write("")
        os.chmod(path, 0o604)
        message = permission_warning(path, True)
        assert message is not None
        self.assertIn(f"run: chmod 600 '{path}'", message)
        self.assertIn("(mode 604)", message)

    def test_secrets_in_a_parsed_file(self) -> None:
        data = {
            "monitor": {"token": "t", "listen_token": "  ", "endpoint": "tcp:3001"},
            "deepgram": {"api_key": KEY, "model": "nova-3"},
            "deepl": {"server_url": "https://api.deepl.com"},
            "elevenlabs": {"api_key": 12},  # not a string: the loader refuses it, nothing to name
            "bridge": {"token": "not a secret setting"},
        }
        self.assertEqual(secrets_in(data), ["monitor.token", "deepgram.api_key"])
        self.assertEqual(secrets_in({}), [])
        self.assertEqual(
            {f"{s}.{k}" for s, k in SECRET_SETTINGS},
            {"monitor.token", "monitor.listen_token", "deepgram.api_key", "deepl.auth_key", "elevenlabs.api_key"},
        )

    def test_config_file_warning_never_shows_the_value(self) -> None:
        path = self.write(f'[deepgram]\napi_key = "{KEY}"\n[deepl]\nauth_key = "x:fx"\n', 0o644)
        message = config_file_warning(path)
        assert message is not None
        self.assertIn("holds secrets (deepgram.api_key, deepl.auth_key)", message)
        self.assertNotIn(KEY, message)
        self.assertNotIn(KEY[:8], message)
        os.chmod(path, 0o640)
        self.assertIsNone(config_file_warning(path))

    def test_config_file_warning_quiet_for_no_secret_bad_or_missing_file(self) -> None:
        self.assertIsNone(config_file_warning(self.write('[bridge]\nports = "7777,8888"\n', 0o644)))
        self.assertIsNone(config_file_warning(self.write("not toml [", 0o644)))
        self.assertIsNone(config_file_warning(self.mktemp()))
