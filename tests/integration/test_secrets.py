"""
Key hygiene of a real ``twistd xlbridge --engines cloud --ari ...`` process
(issue 15, "Security: keys"): with distinctive fake keys, tokens and ARI
password, none of them (nor its first 8 characters, nor its base64, nor
the ARI Basic credentials) appears in

- twistd's log (stdout and stderr, tracebacks included),
- the ``--events`` file,
- the monitor: the page, ``/api/calls`` (live and recent, with the
  transcript), ``/metrics``, the health checks, the 401/403 answers, and
  what ``/ws`` sends a viewer and a listener,

under each fault: engines and Asterisk that accept the credentials (a
translated call), that refuse them (401/403), that are not there at all
(connection refused), and that fail (5xx).  The fakes run in a process of
their own (tests/integration/fakes_proc.py).

The view token is set (``XLBRIDGE_MONITOR_TOKEN``): a generated one is
logged on purpose, once (README, "The monitor"), so it is not a secret
the log must keep.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Optional

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.tonewords import encode_words
from tests.integration.procs import RTPCallers, XLBridgeProcess, free_port, free_ports, write_figures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Secrets by where they come from; the first 8 characters of each are
#: distinctive too (and grepped for).
KEYS = {
    "DEEPGRAM_API_KEY": "dgQ7x2Lk-SECRET-deepgram-5f1e9a",
    "DEEPL_AUTH_KEY": "dlW4n8Rt-SECRET-deepl-3c7b1d:fx",
    "ELEVENLABS_API_KEY": "elP6v1Zs-SECRET-eleven-8a2e4f",
    "XLBRIDGE_MONITOR_TOKEN": "tkV3m9Qa-SECRET-view-6d0b2c",
    "XLBRIDGE_MONITOR_LISTEN_TOKEN": "tkL5j2Hw-SECRET-listen-1f9e7a",
}
ARI_USER = "xlbridge"
ARI_PASSWORD = "arN8c4Ye-SECRET-ari-0b6d3f"

VIEW = KEYS["XLBRIDGE_MONITOR_TOKEN"]
LISTEN = KEYS["XLBRIDGE_MONITOR_LISTEN_TOKEN"]

#: Environment variables of the engines' endpoints.
URL_VARS = {"deepgram": "XLBRIDGE_DEEPGRAM_URL", "deepl": "XLBRIDGE_DEEPL_URL", "elevenlabs": "XLBRIDGE_ELEVENLABS_URL"}


def needles() -> dict[str, bytes]:
    """Every form of every secret that must not show anywhere, by name."""
    out: dict[str, bytes] = {}
    secrets = {**KEYS, "ari password": ARI_PASSWORD}
    for name, value in secrets.items():
        out[name] = value.encode()
        out[f"{name} (first 8)"] = value[:8].encode()
        out[f"{name} (base64)"] = base64.b64encode(value.encode()).rstrip(b"=")
    out["ARI Basic credentials"] = base64.b64encode(f"{ARI_USER}:{ARI_PASSWORD}".encode()).rstrip(b"=")
    return out


def ws_transcript(port: int, token: str, seconds: float, listen: Optional[str] = None) -> bytes:
    """
    Everything ``/ws?token=TOKEN`` sends in ``seconds`` (the 101 answer and
    the raw frames: server frames are not masked, and no compression is
    offered, so text shows as it is); with ``listen``, ask to listen to
    that extension first.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    got = b""
    s.settimeout(5)
    while b"\r\n\r\n" not in got:  # the 101 first: a frame sent with the upgrade request is lost
        data = s.recv(65536)
        if not data:
            break
        got += data
    if listen is not None:
        payload = json.dumps({"listen": {"extension": listen, "direction": "says"}}).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    deadline = time.monotonic() + seconds
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        got += data
    s.close()
    return got


#: Good fakes: they accept the test's credentials.
GOOD: dict[str, dict[str, Any]] = {
    "deepgram": {"kind": "deepgram", "api_key": KEYS["DEEPGRAM_API_KEY"]},
    "deepl": {"kind": "deepl", "auth_key": KEYS["DEEPL_AUTH_KEY"]},
    "elevenlabs": {"kind": "elevenlabs", "api_key": KEYS["ELEVENLABS_API_KEY"]},
    "ari": {"kind": "ari", "user": ARI_USER, "password": ARI_PASSWORD},
}

#: Fakes that refuse the test's credentials (they want others).
REFUSING: dict[str, dict[str, Any]] = {
    "deepgram": {"kind": "deepgram", "api_key": "another-deepgram-key"},
    "deepl": {"kind": "deepl", "auth_key": "another-deepl-key:fx"},
    "elevenlabs": {"kind": "elevenlabs", "api_key": "another-elevenlabs-key"},
    "ari": {"kind": "ari", "user": ARI_USER, "password": "another-password"},
}

#: Fakes that accept the credentials and then fail every request (500).
FAILING: dict[str, dict[str, Any]] = {
    "deepgram": {**GOOD["deepgram"], "reject": [1000, 500]},
    "deepl": {**GOOD["deepl"], "fail_5xx": 1000, "status_5xx": 500},
    "elevenlabs": {**GOOD["elevenlabs"], "fail": [500, 1000]},
    "ari": {**GOOD["ari"], "ws_failures": [500] * 100},
}

#: Stages in pipeline order: a stage's fault is only met when those before
#: it work (a failed recogniser sends no text on), so each stage's fault
#: gets a process of its own, with the stages before it working.
STAGES = ("deepgram", "deepl", "elevenlabs")

#: Log line each stage's fault leaves (the fault was met, so the grep
#: covered its error path).
DOWN = {"deepgram": b"asr engine down", "deepl": b"mt engine down", "elevenlabs": b"tts engine down"}


class Run:
    """
    One xlbridge process against ``urls`` with a call (7777 says "hello
    world" over and over, 8888 listens), and everything it showed.
    """

    def __init__(self, test: "SecretsTests", name: str, urls: dict[str, str]) -> None:
        env = {k: v for k, v in os.environ.items() if k not in KEYS and k not in URL_VARS.values()}
        env.update(KEYS)
        env.update({URL_VARS[engine]: urls[engine] for engine in URL_VARS})
        self.name = name
        self.rtp = free_ports(2)
        self.events = os.path.join(test.dir, f"{name}.events.jsonl")
        self.proc = XLBridgeProcess(
            ["--ports", f"7777={self.rtp[0]},8888={self.rtp[1]}", "--engines", "cloud", "--reply-codec", "slin16",
             "--events", self.events, "--ari", urls["ari"], "--ari-user", ARI_USER,
             "--ari-password-file", test.password_file],
            os.path.join(test.dir, f"{name}.log"), test.dir, free_port(socket.SOCK_STREAM), env,
        )
        test.addCleanup(self.proc.ensure_stopped)
        self.got: dict[str, bytes] = {}
        self.callers: Optional[RTPCallers] = None
        self.test = test

    def call(self) -> None:
        self.proc.wait_ready(path="/livez")  # not ready while Asterisk is away, by design
        silence = np.zeros(8000, dtype=np.int16)
        speech = np.concatenate([silence, encode_words("hello world"), silence])
        self.callers = RTPCallers(self.rtp, audio=[speech, None])
        self.callers.start()
        self.test.addCleanup(self.callers.stop)

    def look(self) -> None:
        """Everything the monitor shows, with and without tokens."""
        for label, path, token in (
            ("page", f"/?token={VIEW}", None),
            ("page (listen token)", f"/?token={LISTEN}", None),
            ("/api/calls live", "/api/calls", VIEW),
            ("/api/calls live (query token)", f"/api/calls?token={LISTEN}", None),
            ("/metrics", "/metrics", VIEW),
            ("/readyz", "/readyz", None),
            ("/livez", "/livez", None),
            ("/api/calls without token", "/api/calls", None),
            ("/api/calls wrong token", "/api/calls", VIEW[:-1]),
            ("/metrics without token", "/metrics", None),
        ):
            status, body = self.proc.get(path, token)
            self.test.assertNotEqual(status, 0, label)
            self.got[f"monitor {label}"] = body
        self.got["/ws viewer"] = ws_transcript(self.proc.monitor_port, VIEW, 1.0)
        self.got["/ws listener"] = ws_transcript(self.proc.monitor_port, LISTEN, 1.0, listen="7777")

    def wait_for(self, needle: bytes, timeout: float = 60.0) -> None:
        """
        Wait until the log or the events file shows ``needle`` (the fault
        was met, or the call translated): a loaded machine takes longer,
        a fixed sleep would test nothing there.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.events, "rb") as f:
                if needle in f.read() or needle in self.proc.log_text().encode():
                    return
            time.sleep(0.2)
        self.test.fail(f"{self.name}: no {needle!r} after {timeout} s:\n{self.proc.log_text()}")

    def hang_up(self) -> None:
        assert self.callers is not None
        self.callers.stop()

    def finish(self) -> dict[str, bytes]:
        """After the call: ``/api/calls`` (recent, with transcript), then SIGTERM; the log and events."""
        self.got["monitor /api/calls after the call"] = self.proc.get("/api/calls", VIEW)[1]
        self.proc.signal(signal.SIGTERM)
        self.got["twistd log"] = self.proc.log_text().encode()
        with open(self.events, "rb") as f:
            self.got["events file"] = f.read()
        return self.got


class SecretsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.password_file = os.path.join(self.dir, "ari-password")
        with open(self.password_file, "w") as f:
            f.write(ARI_PASSWORD + "\n")
        os.chmod(self.password_file, 0o600)

    def fakes(self, spec: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Start the fakes process; their URLs by name."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.fakes_proc", json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True,
        )

        def stop() -> None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        self.addCleanup(stop)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        self.assertTrue(line, "the fakes did not start")
        urls: dict[str, str] = json.loads(line)
        return urls

    def runs(self, setups: dict[str, dict[str, str]], until: dict[str, bytes]) -> dict[str, dict[str, bytes]]:
        """
        One xlbridge per entry of ``setups`` (name: URL per engine and
        ARI), at the same time (a loaded machine waits once, not N times),
        each with a call until its log or events show ``until[name]``;
        what each showed.
        """
        runs = [Run(self, name, urls) for name, urls in setups.items()]
        for run in runs:
            run.call()
        for run in runs:
            run.wait_for(until[run.name])
            run.look()
        time.sleep(0.5)
        for run in runs:
            run.hang_up()
        time.sleep(0.3)
        return {run.name: run.finish() for run in runs}

    def faulty(self, kind: str, fault: dict[str, dict[str, Any]]) -> dict[str, dict[str, bytes]]:
        """
        Three processes: the recogniser faulty; the recogniser working and
        translation faulty; both working and synthesis faulty.  Asterisk
        (ARI) is faulty in all three.
        """
        spec = {f"good-{k}": v for k, v in GOOD.items() if k != "ari"}
        spec.update({f"bad-{k}": v for k, v in fault.items()})
        urls = self.fakes(spec)
        setups = {}
        for i, stage in enumerate(STAGES):
            setups[f"{kind}-{stage}"] = {
                **{s: urls[f"good-{s}"] for s in STAGES[:i]},
                **{s: urls[f"bad-{s}"] for s in STAGES[i:]},
                "ari": urls["bad-ari"],
            }
        return self.runs(setups, {name: DOWN[name.rsplit("-", 1)[1]] for name in setups})

    def assertNoSecret(self, name: str, got: dict[str, bytes]) -> None:
        found = [(where, what) for where, data in got.items() for what, needle in needles().items() if needle in data]
        self.assertEqual(found, [], f"{name}: secrets found")
        write_figures(f"secrets_{name}", {k: len(v) for k, v in got.items()})

    def assertFaultsMet(self, runs: dict[str, dict[str, bytes]], ari: bytes) -> None:
        for name, got in runs.items():
            stage = name.rsplit("-", 1)[1]
            self.assertIn(DOWN[stage], got["twistd log"], name)
            self.assertIn(b'"EngineStatusEvent"', got["events file"], name)
            self.assertIn(ari, got["twistd log"], name)
            self.assertNoSecret(name, got)

    def test_engines_and_asterisk_accept_the_credentials(self) -> None:
        urls = self.fakes(GOOD)
        got = self.runs({"accepted": urls}, {"accepted": b'"PlaybackEnded"'})["accepted"]
        # The grep covered a translated call: its words are in the file.
        self.assertIn(b'"TranslationEvent"', got["events file"])
        self.assertIn(b"hola mundo", got["events file"])
        self.assertIn(b'"type":"hello"', got["/ws viewer"])
        self.assertIn(b'"type":"listening"', got["/ws listener"])
        self.assertIn(b"xlbridge_packets_received_total", got["monitor /metrics"])
        self.assertIn(b"ARI events connected", got["twistd log"])
        self.assertNotIn(b"engine down", got["twistd log"])
        self.assertNoSecret("accepted", got)

    def test_credentials_refused(self) -> None:
        self.assertFaultsMet(self.faulty("refused", REFUSING), b"ARI refused user 'xlbridge': HTTP 401")

    def test_nobody_listening(self) -> None:
        dead = free_ports(4, socket.SOCK_STREAM)
        urls = self.fakes({f"good-{k}": v for k, v in GOOD.items() if k != "ari"})
        unreachable = {
            "deepgram": f"ws://127.0.0.1:{dead[0]}", "deepl": f"http://127.0.0.1:{dead[1]}",
            "elevenlabs": f"http://127.0.0.1:{dead[2]}", "ari": f"http://127.0.0.1:{dead[3]}",
        }
        setups = {}
        for i, stage in enumerate(STAGES):
            setups[f"unreachable-{stage}"] = {
                **{s: urls[f"good-{s}"] for s in STAGES[:i]},
                **{s: unreachable[s] for s in STAGES[i:]},
                "ari": unreachable["ari"],
            }
        until = {name: DOWN[name.rsplit("-", 1)[1]] for name in setups}
        self.assertFaultsMet(self.runs(setups, until), b"ARI events: cannot connect")

    def test_servers_failing(self) -> None:
        self.assertFaultsMet(self.faulty("failing", FAILING), b"HTTP 500")
