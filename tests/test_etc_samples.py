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


# -- The cluster samples ("Every core and many machines") --------------------
#
# etc/kamailio/kamailio.cfg + dispatcher.list (the SIP proxy),
# etc/asterisk/extensions_cluster.conf (every Asterisk behind it),
# etc/systemd/xlbridge@.service (one instance per node) and
# etc/prometheus/xlbridge.yml (scraping the machine monitors).


def _code_lines(text: str, comment: str) -> list[str]:
    """
    The lines of ``text`` without comments (from ``comment`` on) and blank
    lines, stripped.
    """
    out = []
    for line in text.splitlines():
        line = line.split(comment, 1)[0].strip()
        if line:
            out.append(line)
    return out


def asterisk_pattern(pattern: str) -> "re.Pattern[str]":
    """
    An Asterisk extension pattern (``_61XXX``, ``_71X.``) as a regular
    expression; a name without ``_`` matches only itself.
    """
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern))
    classes = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}
    out, rest = "", pattern[1:]
    while rest:
        if rest[0] == "[":
            end = rest.index("]")
            out += rest[:end + 1]
            rest = rest[end + 1:]
            continue
        out += classes.get(rest[0].upper(), re.escape(rest[0]))
        rest = rest[1:]
    return re.compile(out)


def dialplan_extensions(text: str) -> dict[str, dict[str, str]]:
    """
    ``{context: {pattern: application line of priority 2 or the first
    Stasis()}}``: enough to see where each number of a context goes.
    """
    out: dict[str, dict[str, str]] = {}
    context = None
    pattern = None
    for line in _code_lines(text, ";"):
        header = re.match(r"^\[([^\]]+)\]", line)
        if header:
            context = header.group(1)
            out.setdefault(context, {})
            continue
        exten = re.match(r"^exten\s*=>\s*([^,]+),\s*\d+\s*,\s*(.*)$", line)
        same = re.match(r"^same\s*=>\s*n\s*,\s*(.*)$", line)
        if exten and context is not None:
            pattern = exten.group(1).strip()
            out[context][pattern] = exten.group(2)
        elif same and context is not None and pattern is not None:
            if not out[context][pattern].startswith("Stasis("):
                out[context][pattern] = same.group(1)
    return out


def expand_exten(app: str, exten: str) -> str:
    """
    ``app`` with ``${EXTEN}`` and ``${EXTEN:N}`` replaced for the dialled
    number ``exten``.
    """
    app = re.sub(r"\$\{EXTEN:(\d+)\}", lambda m: exten[int(m.group(1)):], app)
    return app.replace("${EXTEN}", exten)


def stasis_args(app: str) -> dict[str, str]:
    """
    ``Stasis(xlbridge,room=5,lang=en)`` -> ``{"room": "5", "lang": "en"}``,
    as xlbridge reads them; the application name under ``""``.
    """
    from xlbridge.ari.rooms import parse_args

    m = re.match(r"^Stasis\(([^,)]+),(.*)\)$", app)
    assert m is not None, app
    opts = parse_args([m.group(2)])
    opts[""] = m.group(1)
    return opts


def kamailio_defines(text: str) -> dict[str, str]:
    """
    The ``#!substdef "!NAME!value!g"`` substitutions of a Kamailio config.
    """
    return dict(re.findall(r'^#!substdef\s+"!(\w+)!([^!]*)!g"', text, re.M))


def pjsip_sample(dialplan: str) -> dict[str, dict[str, list[str]]]:
    """
    The commented pjsip.conf sections at the top of
    extensions_cluster.conf, as ``{"name/type": {key: [values]}}``.
    """
    lines = [line[1:].strip() for line in dialplan.splitlines() if line.startswith(";   ")]
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    name = None
    for line in lines:
        header = re.match(r"^\[([^\]]+)\]$", line)
        if header:
            name = header.group(1)
            current = {}
            continue
        key, sep, value = line.partition("=")
        if name is None or not sep:
            continue
        current.setdefault(key.strip(), []).append(value.strip())
        if key.strip() == "type":
            sections[f"{name}/{value.strip()}"] = current
    return sections


class ClusterUnitTests(SynchronousTestCase):
    """
    etc/systemd/xlbridge@.service: one xlbridge node per instance.
    """

    def setUp(self) -> None:
        self.text = _read("etc", "systemd", "xlbridge@.service")
        self.unit = unit_settings(self.text)

    def argv(self, instance: str, extra: str) -> list[str]:
        """
        ``ExecStart`` of ``xlbridge@<instance>`` with ``XLBRIDGE_ARGS`` set
        to ``extra``, split as systemd splits an unbraced ``$VAR`` word.
        """
        [exec_start] = self.unit["ExecStart"]
        words = shlex.split(exec_start.replace("%i", instance))
        i = words.index("$XLBRIDGE_ARGS")
        return words[:i] + extra.split() + words[i + 1:]

    def parse(self, argv: list[str]) -> "object":
        """
        Parse ``argv`` (after the executable) as twistd would, with the
        sample settings file and a throwaway ARI password file.
        """
        from twisted.scripts.twistd import ServerOptions

        args = list(argv[1:])
        i = args.index("--config")
        self.assertEqual(args[i + 1], "/etc/xlbridge/pbx1.toml")
        args[i + 1] = os.path.join(HERE, "etc", "xlbridge.toml")
        password = self.mktemp()
        with open(password, "w") as f:
            f.write("secret")
        os.chmod(password, 0o600)
        args += ["--ari", "http://127.0.0.1:8088", "--ari-user", "xlbridge", "--ari-password-file", password]
        options = ServerOptions()
        options.parseOptions(args)
        self.assertEqual(options.subCommand, "xlbridge")
        self.assertTrue(options["nodaemon"])
        self.assertEqual(options["pidfile"], "")
        return options.subOptions

    def test_exec_start_parses(self) -> None:
        """
        The instance name is the settings file and the node name; the
        machine uses every core it may (--workers auto).
        """
        argv = self.argv("pbx1", "")
        self.assertEqual(argv[0], "/opt/xlbridge/bin/twistd")
        sub = self.parse(argv)
        self.assertEqual(sub["workers"], "auto")  # type: ignore[index]
        self.assertEqual(sub["node"], "pbx1")  # type: ignore[index]
        plan = getattr(sub, "processes", None)
        if plan is not None:
            self.assertEqual(plan.node, "pbx1")
            self.assertTrue(plan.dispatch)

    def test_media_node_arguments(self) -> None:
        """
        XLBRIDGE_ARGS (from /etc/xlbridge/NODE.env) adds a media node's own
        options, as the unit's comment shows them.
        """
        [example] = re.findall(r"^#\s+XLBRIDGE_ARGS=(.+)$", self.text, re.M)
        self.assertIn("--ari-dispatch no", example)
        sub = self.parse(self.argv("pbx1", example))
        self.assertEqual(sub["ari-dispatch"], "no")  # type: ignore[index]
        plan = getattr(sub, "processes", None)
        if plan is not None:
            self.assertFalse(plan.dispatch)

    def test_files_per_instance(self) -> None:
        self.assertEqual(self.unit["EnvironmentFile"], ["-/etc/xlbridge/%i.env"])
        # Empty unless the env file (which overrides Environment=) sets it.
        self.assertEqual(sorted(self.unit["Environment"]), ["PYTHONUNBUFFERED=1", "XLBRIDGE_ARGS="])
        self.assertEqual(self.unit["LogsDirectory"], ["xlbridge"])

    def test_same_service_settings_as_the_single_unit(self) -> None:
        """
        Everything but the command line, the environment file and the
        description is the single-process unit's: user, restarts, stop,
        log directory and every hardening setting.
        """
        single = unit_settings(_read("etc", "systemd", "xlbridge.service"))
        own = {"ExecStart", "EnvironmentFile", "Environment", "Description"}
        self.assertEqual({k: v for k, v in self.unit.items() if k not in own},
                         {k: v for k, v in single.items() if k not in own})
        self.assertNotIn("MemoryDenyWriteExecute", self.unit)

    def test_systemd_analyze_verify(self) -> None:
        """
        ``systemd-analyze verify`` accepts an instance of the template
        (with an executable that exists here in place of /opt's twistd).
        """
        import shutil
        import subprocess
        import sys

        tool = shutil.which("systemd-analyze")
        if tool is None:
            self.skipTest("systemd-analyze is not installed")
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "xlbridge@pbx1.service")
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.text.replace("/opt/xlbridge/bin/twistd", sys.executable))
        run = subprocess.run([tool, "verify", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertNotIn("xlbridge@pbx1.service", run.stderr)


class KamailioSampleTests(SynchronousTestCase):
    """
    etc/kamailio/kamailio.cfg and dispatcher.list, against
    etc/asterisk/extensions_cluster.conf: the numbers the proxy sends to
    the Asterisks are the ones their dialplan serves, and both callers of a
    room are hashed alike.
    """

    def setUp(self) -> None:
        self.cfg = _read("etc", "kamailio", "kamailio.cfg")
        self.dialplan = _read("etc", "asterisk", "extensions_cluster.conf")
        self.contexts = dialplan_extensions(self.dialplan)

    def route(self, number: str) -> "tuple[str, str] | None":
        """
        Where the dialplan of [xlbridge-cluster] sends ``number``:
        (pattern, application with the number filled in), or None.
        """
        found = [(p, app) for p, app in self.contexts["xlbridge-cluster"].items()
                 if asterisk_pattern(p).fullmatch(number)]
        self.assertLessEqual(len(found), 1, found)
        return (found[0][0], expand_exten(found[0][1], number)) if found else None

    def test_config_checks(self) -> None:
        """
        ``kamailio -c`` accepts the sample (when Kamailio is installed:
        ``apt-get install kamailio``).
        """
        import shutil
        import subprocess

        tool = shutil.which("kamailio") or next(
            (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if os.access(p, os.X_OK)), None)
        if tool is None:
            self.skipTest("kamailio is not installed")
        rundir = self.mktemp()
        os.makedirs(rundir)
        run = subprocess.run([tool, "-c", "-f", os.path.join(HERE, "etc", "kamailio", "kamailio.cfg"), "-Y", rundir],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("config file ok", run.stdout + run.stderr)

    def test_room_numbers_hash_on_the_room(self) -> None:
        """
        The numbers kamailio.cfg hashes as rooms are the dialplan's room
        extensions, and the part it hashes is exactly the room= the
        dialplan passes: 61005 and 62005 are one room in two languages.
        """
        [room_re] = set(re.findall(r'if \(\$rU =~ "(\^6[^"]+)"\)', self.cfg))
        [offset] = re.findall(r"\$avp\(dsroom\) = \$\(rU\{s\.substr,(\d+),0\}\);", self.cfg)
        self.assertIn('modparam("dispatcher", "hash_pvar", "$avp(dsroom)")', self.cfg)
        for room in ("005", "123", "999"):
            langs = set()
            for prefix in ("61", "62"):
                number = prefix + room
                self.assertTrue(re.search(room_re, number), number)
                hashed = number[int(offset):]
                self.assertEqual(hashed, room)
                routed = self.route(number)
                assert routed is not None, number
                args = stasis_args(routed[1])
                self.assertEqual(args[""], "xlbridge")
                self.assertEqual(args["room"], hashed)
                langs.add(args["lang"])
            self.assertEqual(langs, {"en", "es"})
        for number in ("6100", "610050", "63005"):
            self.assertFalse(re.search(room_re, number), number)
            self.assertIsNone(self.route(number), number)

    def test_dial_numbers(self) -> None:
        """
        Every number kamailio.cfg sends to an Asterisk has an extension
        there; dial numbers have xlbridge call back through the proxy's
        endpoint, which the commented pjsip.conf defines with the proxy's
        address.
        """
        to_asterisk = re.findall(r'if \(\$rU =~ "([^"]+)" \|\| \$rU =~ "([^"]+)"\)', self.cfg)
        self.assertEqual(len(to_asterisk), 1)
        dial_re = to_asterisk[0][1]
        pjsip = pjsip_sample(self.dialplan)
        proxy = kamailio_defines(self.cfg)["PROXY_IP"]
        for number, lang, peer in (("71100", "en", "es"), ("72100", "es", "en")):
            self.assertTrue(re.search(dial_re, number))
            routed = self.route(number)
            assert routed is not None, number
            args = stasis_args(routed[1])
            self.assertEqual((args["lang"], args["peer_lang"]), (lang, peer))
            tech, _, rest = args["dial"].partition("/")
            user, _, endpoint = rest.partition("@")
            self.assertEqual((tech, user), ("PJSIP", "100"))
            self.assertIn(f"{endpoint}/endpoint", pjsip)
        self.assertEqual(pjsip["kamailio/endpoint"]["context"], ["xlbridge-cluster"])
        self.assertIn("xlbridge-cluster", self.contexts)
        self.assertEqual(pjsip["kamailio/aor"]["contact"], [f"sip:{proxy}:5060"])
        self.assertEqual(pjsip["kamailio/identify"]["match"], [proxy])
        self.assertIn("listen=udp:PROXY_IP:5060", self.cfg)

    def test_dispatcher_list(self) -> None:
        """
        dispatcher.list holds set 1 (the set the config selects from and
        recognises Asterisks by), each entry probed.
        """
        self.assertIn('modparam("dispatcher", "list_file", "/etc/kamailio/dispatcher.list")', self.cfg)
        self.assertEqual(set(re.findall(r'ds_(?:select_dst|is_from_list)\("(\d+)"', self.cfg)), {"1"})
        entries = [line.split() for line in _code_lines(_read("etc", "kamailio", "dispatcher.list"), "#")]
        self.assertEqual(len(entries), 2)
        for setid, uri, flags, priority, attrs in entries:
            self.assertEqual(setid, "1")
            self.assertRegex(uri, r"^sip:\d+\.\d+\.\d+\.\d+:5060$")
            self.assertTrue(int(flags) & 8)
            self.assertRegex(attrs, r"^duid=\w+$")


class PrometheusSampleTests(SynchronousTestCase):
    """
    etc/prometheus/xlbridge.yml scrapes the machine monitors.
    """

    def setUp(self) -> None:
        try:
            import yaml
        except ImportError:
            self.skipTest("PyYAML is not installed")
        self.yaml = yaml
        self.text = _read("etc", "prometheus", "xlbridge.yml")
        self.config = yaml.safe_load(self.text)

    def test_scrape_with_token(self) -> None:
        """
        The token job sends the view token from a file, to each node's
        monitor port (the sample settings' monitor port), and names the
        node from the target's host name as Prometheus would (an anchored
        regular expression).
        """
        [job] = [j for j in self.config["scrape_configs"] if j["job_name"] == "xlbridge"]
        self.assertEqual(job["metrics_path"], "/metrics")
        self.assertEqual(job["authorization"]["type"], "Bearer")
        self.assertTrue(job["authorization"]["credentials_file"].startswith("/etc/prometheus/"))
        [endpoint] = re.findall(r'^endpoint = "(.*)"', _read("etc", "xlbridge.toml"), re.M)
        port = endpoint.split(":")[1]
        [static] = job["static_configs"]
        self.assertEqual(len(static["targets"]), 2)
        [relabel] = job["relabel_configs"]
        self.assertEqual(relabel["target_label"], "node")
        nodes = []
        for target in static["targets"]:
            self.assertTrue(target.endswith(f":{port}"), target)
            m = re.fullmatch(f"(?:{relabel['regex']})", target)
            assert m is not None, target
            nodes.append(m.expand(relabel["replacement"].replace("$1", r"\1")))
        self.assertEqual(nodes, ["pbx1", "media1"])

    def test_open_metrics_variant(self) -> None:
        """
        The commented job, uncommented, is a job without a token.
        """
        start = self.text.index("  # - job_name: xlbridge-local")
        block = "\n".join(re.sub(r"^(\s*)# ?", r"\1", line) for line in self.text[start:].splitlines())
        [job] = self.yaml.safe_load("scrape_configs:\n" + block)["scrape_configs"]
        self.assertEqual(job["job_name"], "xlbridge-local")
        self.assertNotIn("authorization", job)
        self.assertIn("--monitor-metrics-open yes", self.text)

    def test_promtool_accepts_it(self) -> None:
        import shutil
        import subprocess

        tool = shutil.which("promtool")
        if tool is None:
            self.skipTest("promtool is not installed")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        token = os.path.join(folder, "token")
        with open(token, "w") as f:
            f.write("t")
        path = os.path.join(folder, "prometheus.yml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.text.replace("/etc/prometheus/xlbridge-token", token))
        run = subprocess.run([tool, "check", "config", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)


class ClusterOptionsTests(SynchronousTestCase):
    """
    Every xlbridge option the cluster samples (and, once merged, the
    README's section on them) write is one ``twistd xlbridge`` knows.
    """

    def known(self) -> set[str]:
        from xlbridge.tap import Options

        return {name.rstrip("=") for name in Options().longOpt} | {"nodaemon", "pidfile", "config"}

    def used(self, text: str) -> set[str]:
        """
        ``--name`` words of the xlbridge command lines in ``text`` (lines
        from ``twistd`` on, with their ``\\`` continuations, and
        XLBRIDGE_ARGS values).
        """
        out: set[str] = set()
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if "twistd" in line or "XLBRIDGE_ARGS=" in line:
                chunk = line
                while chunk.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    chunk += lines[i]
                out |= set(re.findall(r"(?<![\w-])--([a-z][a-z-]*)", chunk))
            i += 1
        return out

    def test_samples(self) -> None:
        known = self.known()
        for parts in (("etc", "asterisk", "extensions_cluster.conf"), ("etc", "systemd", "xlbridge@.service")):
            used = self.used(_read(*parts))
            self.assertTrue(used, parts)
            self.assertEqual(used - known, set(), parts)

    def test_readme_section(self) -> None:
        """
        The README's "Every core and many machines" (skipped until it is
        there), and the unit's command line as it shows it.
        """
        readme = _read("README.rst")
        heading = "Every core and many machines"
        if f"\n{heading}\n{'=' * len(heading)}\n" not in readme:
            self.skipTest("README.rst has no section on the cluster samples yet")
        start = readme.index(f"\n{heading}\n") + 1
        after = re.search(r"\n[^\n]+\n=+\n", readme[start + 2 * len(heading) + 2:])
        section = readme[start:start + 2 * len(heading) + 2 + after.start()] if after else readme[start:]
        self.assertEqual(self.used(section) - self.known(), set())
        # And every option it names in passing (``--workers auto``), but
        # other tools' (systemctl enable --now).
        prose = "\n".join(line for line in section.splitlines()
                          if not re.search(r"systemctl|journalctl|useradd|promtool|apt-get", line))
        self.assertEqual(set(re.findall(r"(?<![\w-])--([a-z][a-z-]*)", prose)) - self.known(), set())
        [shown] = re.findall(r"^    (/opt/xlbridge/bin/twistd --nodaemon .*)$", section, re.M)
        [exec_start] = unit_settings(_read("etc", "systemd", "xlbridge@.service"))["ExecStart"]
        self.assertEqual(shown, exec_start.replace("%i", "NODE"))
