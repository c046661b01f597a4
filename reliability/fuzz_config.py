"""
Config surface: every setting with wrong types and out-of-range values,
through the TOML file (``load_config(path=...)``) and the command line
(``xlbridge.tap.Options().parseOptions``), in-process; then one
``twistd xlbridge`` subprocess per setting with a bad value, to see the
user-facing result (exit 1, one ``xlbridge: ...`` line, no traceback).

A clear error is :class:`~xlbridge.errors.ConfigError` (file) or
``usage.UsageError`` (command line); anything else escaping is counted in
``escaped`` with an example.  A value accepted without error is counted as
``accepted`` (many random values are valid: that is not a failure).
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import tempfile
import time
from typing import Any

from reliability.fuzz_common import Tally


def _toml_literal(v: Any) -> str:
    """``v`` as a TOML value (strings escaped the TOML way)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in v) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_literal(x)}" for k, x in v.items()) + "}"
    if isinstance(v, _Raw):
        return v.text
    raise TypeError(type(v))


class _Raw:
    """A TOML literal written as is (dates, times)."""

    def __init__(self, text: str) -> None:
        self.text = text


def wrong_values(rng: random.Random) -> list[Any]:
    """Values of every TOML type, including out-of-range numbers and odd strings."""
    return [
        0, -1, 1, 65536, 2**31, -(2**63), 2**63 - 1, 0.0, -0.5, 1e-9, 1e308, float("nan"), float("inf"),
        float("-inf"), True, False, "", " ", "none", "off", "yes", "-1", "1e9", "nan", "inf", "0x10", "1_000",
        "\u00e9\u00e8", "\x00", "a" * 5000, "7777,8888", "7777=0,8888=99999", "1-99999", "20000-10000",
        "tcp:0:interface=127.0.0.1", "ssl:0", "unix:/nonexistent/x", "http://", "ftp://x", "sound:",
        "slin16=999", "g722=-1,slin16=118", "en", "en,es,fr", "xx,yy", "a=b=c", ":slin16", "7000=5050:slin99",
        [], [1, 2], ["7777", 8888], [[1]], {}, {"a": 1}, _Raw("1979-05-27T07:32:00Z"), _Raw("07:32:00"),
        rng.randint(-10**6, 10**6), rng.uniform(-1e6, 1e6), "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(20)),
    ]


def _ari_base(pwfile: str) -> dict[str, str]:
    return {"ari": "http://127.0.0.1:1", "ari-user": "u", "ari-password-file": pwfile}


def run(tally: Tally, count: int, seed: int, subprocess_runs: bool = True) -> dict[str, Any]:
    """
    ``count`` in-process checks (file and command line, alternating), then
    one subprocess per setting.  Returns the escaped-exception examples.
    """
    from twisted.python import usage

    from xlbridge.config import FILE_ONLY, SETTINGS, load_config
    from xlbridge.errors import ConfigError
    from xlbridge.tap import Options

    t0 = time.monotonic()
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="xlb-fuzz-config-")
    pwfile = os.path.join(tmp, "pw")
    with open(pwfile, "w") as f:
        f.write("secret\n")
    os.chmod(pwfile, 0o600)
    path = os.path.join(tmp, "x.toml")
    escaped: dict[str, list[str]] = {}
    accepted: dict[str, int] = {}
    opts = list(SETTINGS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLBRIDGE_")}

    def record(kind: str, opt: str, value: Any, e: BaseException) -> None:
        key = f"{kind} {opt}: {type(e).__name__}"
        ex = escaped.setdefault(key, [])
        if len(ex) < 3:
            ex.append(f"{value!r:.120} -> {e!s:.200}")
        tally.note("escaped")

    i = 0
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        while i < count:
            opt = opts[i % len(opts)]
            section, key, _ = SETTINGS[opt]
            values = wrong_values(rng)
            value = values[rng.randrange(len(values))]
            extra = _ari_base(pwfile) if section == "ari" and opt != "ari" else {}
            # file and command line alternate per round over the options (not
            # per input: with an even number of options each would get one mode)
            if (i // len(opts)) % 2 == 0:  # TOML file
                lines: dict[str, list[str]] = {}
                for o, v in {**extra, opt: value}.items():
                    s, k, _ = SETTINGS[o]
                    lines.setdefault(s, []).append(f"{k} = {_toml_literal(v)}")
                with open(path, "w", encoding="utf-8") as f:
                    for s, body in lines.items():
                        f.write(f"[{s}]\n" + "\n".join(body) + "\n")
                tally.add("toml")
                try:
                    load_config({"monitor": "none"} if opt != "monitor" else {}, path, environ={})
                    accepted[opt] = accepted.get(opt, 0) + 1
                except ConfigError:
                    pass
                except Exception as e:  # noqa: BLE001 - the point is to catch anything
                    record("toml", opt, value, e)
            else:  # command line: strings only
                if opt in FILE_ONLY:
                    argv = [f"--{opt}", "x"]  # not a flag: a usage error
                else:
                    text = value if isinstance(value, str) else _toml_literal(value)
                    argv = [f"--{opt}", text]
                    for o, v in extra.items():
                        argv += [f"--{o}", v]
                tally.add("cli")
                try:
                    Options().parseOptions(argv)
                    accepted[opt] = accepted.get(opt, 0) + 1
                except usage.UsageError:
                    pass
                except SystemExit:
                    pass
                except Exception as e:  # noqa: BLE001
                    record("cli", opt, argv, e)
            i += 1
        # odd files: not TOML, unknown sections/keys, binary
        for text in ["[bridge\nports=1", "x = 1", "[nope]\na=1", "[bridge]\nnope = 1", "\x00\xff", "[ari]\n" * 3,
                     "[bridge]\nports = 1\nports = 2", "bridge = 5", "[[bridge]]\nports=1", "[deepgram]\nmodel = []"]:
            with open(path, "wb") as fb:
                fb.write(text.encode("utf-8", "surrogateescape"))
            tally.add("toml_broken_file")
            try:
                load_config({"monitor": "none"}, path, environ={})
            except ConfigError:
                pass
            except Exception as e:  # noqa: BLE001
                record("toml_file", "-", text, e)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    tally.notes["accepted_by_option"] = accepted
    sub: dict[str, Any] = {}
    if subprocess_runs:
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        for opt in opts:
            if opt in FILE_ONLY:
                continue
            section = SETTINGS[opt][0]
            bad = {"ports": "7777", "audiosocket": "1=99999", "websocket": "x=y", "langs": "en,es,fr",
                   "interface": "999.1.1.1", "monitor": "tcp:notaport", "events": "/nonexistent/dir/x.jsonl",
                   "payload-types": "slin16=200", "ari": "ftp://x", "rtp-ports": "5-1"}.get(opt, "-7e99")
            argv = [twistd, "-n", "--pidfile=", "xlbridge"]
            if section == "ari" and opt != "ari":
                argv += ["--ari", "http://127.0.0.1:1", "--ari-user", "u", "--ari-password-file", pwfile]
            # keep shared ports out of it, should a value be accepted
            if opt not in ("ports", "audiosocket", "websocket", "langs"):
                argv += ["--ports", "31990,31991"]
            if opt != "monitor":
                argv += ["--monitor", "none"]
            argv += [f"--{opt}", bad]  # last, so nothing above overrides it
            tally.add("subprocess")
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, cwd=tmp)
                rc: Any = p.returncode
                err = p.stderr + p.stdout
            except subprocess.TimeoutExpired as e:
                rc = "still running after 30 s (value accepted; killed)"
                err = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            said = [ln for ln in err.splitlines() if ln.startswith("xlbridge:") or "rror" in ln]
            ok = rc not in (0,) and isinstance(rc, int) and "Traceback" not in err
            sub[opt] = {"value": bad, "rc": rc, "traceback": "Traceback" in err,
                        "message": (said[-1:] or err.strip().splitlines()[-1:] or [""])[0][:300]}
            if not ok:
                tally.note("subprocess_not_clear")
    tally.seconds = time.monotonic() - t0
    return {"escaped": escaped, "subprocess": sub}
