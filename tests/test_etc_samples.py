"""
Tests for the deployment samples under etc/ and the README's copies of
them: the embedding snippet is etc/embed_example.py's code, the systemd
unit's command line parses as twistd would parse it, the logrotate rule
covers the transcript path the unit and the sample settings use, and the
sample SIP phones are the ones the sample dialplan dials.
"""

from __future__ import annotations

import os
import re
import shlex
import textwrap

from twisted.trial.unittest import SynchronousTestCase

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts: str) -> str:
    with open(os.path.join(HERE, *parts), encoding="utf-8") as f:
        return f.read()


def literal_block_after(text: str, heading: str) -> str:
    """
    The first literal block (``::`` then indented lines) of the section
    titled ``heading`` in reStructuredText ``text``, dedented.
    """
    underline = "=" * len(heading)
    start = text.index(f"\n{heading}\n{underline}\n")
    marker = text.index("::\n", start)
    lines = text[marker + 3:].split("\n")
    block: list[str] = []
    for line in lines:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip("\n") + "\n"


def between(text: str, begin: str, end: str) -> str:
    """
    The lines of ``text`` strictly between the line ``begin`` and the line
    ``end``.
    """
    lines = text.split("\n")
    i, j = lines.index(begin), lines.index(end)
    return "\n".join(lines[i + 1:j]).strip("\n") + "\n"


def unit_settings(text: str) -> dict[str, list[str]]:
    """
    ``KEY=value`` lines of a systemd unit file, by key (all sections; no
    line continuations are used in ours).
    """
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


class EmbedExampleTests(SynchronousTestCase):
    def test_readme_snippet_is_the_example_code(self) -> None:
        """
        The code README.rst shows under "Embedding" is, character for
        character, the marked part of etc/embed_example.py (which
        tests/test_tap.py runs).
        """
        snippet = literal_block_after(_read("README.rst"), "Embedding")
        code = between(_read("etc", "embed_example.py"), "# README snippet begins", "# README snippet ends")
        self.assertEqual(snippet, code)

    def test_helpers(self) -> None:
        text = "Intro.\n\nTitle\n=====\n\nSome code::\n\n    a = 1\n\n    b = 2\n\nAfter.\n"
        self.assertEqual(literal_block_after(text, "Title"), "a = 1\n\nb = 2\n")
        self.assertEqual(between("x\n# b\n1\n2\n# e\ny", "# b", "# e"), "1\n2\n")


class SystemdUnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.unit = unit_settings(_read("etc", "systemd", "xlbridge.service"))

    def test_exec_start_parses(self) -> None:
        """
        ``ExecStart`` is a twistd command line that twistd accepts: the
        xlbridge plugin, in the foreground, no pid file, with the settings
        file the layout names (here the sample it is copied from).
        """
        from twisted.scripts.twistd import ServerOptions

        [exec_start] = self.unit["ExecStart"]
        argv = shlex.split(exec_start)
        self.assertEqual(argv[0], "/opt/xlbridge/bin/twistd")
        args = argv[1:]
        i = args.index("--config")
        self.assertEqual(args[i + 1], "/etc/xlbridge/xlbridge.toml")
        args[i + 1] = os.path.join(HERE, "etc", "xlbridge.toml")
        options = ServerOptions()
        options.parseOptions(args)
        self.assertEqual(options.subCommand, "xlbridge")
        self.assertTrue(options["nodaemon"])
        self.assertEqual(options["pidfile"], "")
        self.assertIsNone(options["logfile"])  # stdout, i.e. the journal
        config = options.subOptions.config
        self.assertEqual([p.extensions for p in config.pairs], [("7777", "8888")])

    def test_service_user_and_files(self) -> None:
        self.assertEqual(self.unit["User"], ["xlbridge"])
        self.assertEqual(self.unit["Restart"], ["on-failure"])
        self.assertEqual(self.unit["EnvironmentFile"], ["-/etc/xlbridge/env"])
        self.assertEqual(self.unit["LogsDirectory"], ["xlbridge"])
        self.assertNotIn("MemoryDenyWriteExecute", self.unit)

    def test_logrotate_covers_the_transcripts(self) -> None:
        """
        The logrotate rule matches the transcript path the sample settings
        suggest, in the unit's log directory, and copies and truncates
        (xlbridge keeps the file open).
        """
        rule = _read("etc", "logrotate.d", "xlbridge")
        [pattern] = re.findall(r"^(/\S+) \{$", rule, re.M)
        self.assertEqual(pattern, f"/var/log/{self.unit['LogsDirectory'][0]}/*.jsonl")
        [events] = re.findall(r'^#? ?events = "(.*)"', _read("etc", "xlbridge.toml"), re.M)
        self.assertEqual(os.path.dirname(events), os.path.dirname(pattern))
        self.assertTrue(events.endswith(".jsonl"))
        self.assertRegex(rule, r"(?m)^\s+copytruncate$")
        self.assertRegex(rule, r"(?m)^\s+su xlbridge xlbridge$")


class AsteriskSampleTests(SynchronousTestCase):
    def test_dialled_phones_have_endpoints(self) -> None:
        """
        Every ``PJSIP/NAME`` the sample dialplan dials is an endpoint of the
        sample pjsip.conf, with an auth and an aor of the same name.
        """
        dialplan = _read("etc", "asterisk", "extensions.conf")
        code = "\n".join(line.split(";", 1)[0] for line in dialplan.splitlines())
        dialled = set(re.findall(r"PJSIP/(\w+)", code))
        self.assertEqual(dialled, {"8888"})
        sections: dict[str, set[str]] = {}
        name = None
        for line in _read("etc", "asterisk", "pjsip.conf").splitlines():
            line = line.split(";", 1)[0].strip()
            header = re.match(r"^\[([^\]]+)\](?:\(([^)]*)\))?$", line)
            if header:
                name = header.group(1)
                sections.setdefault(name, set())
                if header.group(2) and header.group(2) != "!":
                    sections[name].add(f"template:{header.group(2)}")
            elif name is not None and line.startswith("type"):
                sections[name].add(line.split("=", 1)[1].strip())
        templates = {"xlbridge-phone": "endpoint", "xlbridge-auth": "auth", "xlbridge-aor": "aor"}
        for phone in dialled | {"7777"}:
            kinds = {templates.get(k.split(":", 1)[1], k) if k.startswith("template:") else k
                     for k in sections[phone]}
            self.assertEqual(kinds, {"endpoint", "auth", "aor"}, phone)
