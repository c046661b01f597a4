"""
Driving the real Asterisk of ``scripts/asterisk-lab.sh`` from trial tests.

The lab's Asterisk runs in a chroot on this machine and shares loopback
with the tests.  A test starts xlbridge as users do (``twistd -n xlbridge
...`` in a subprocess), then makes callers with ARI originates of
``Local/caller@xl-lab/n``: the ``;2`` half plays a prompt and records what
it hears (tests/asterisk/conf/extensions.conf), the ``;1`` half goes where
the call under test goes (a sample context or ``Stasis(xlbridge,...)``).

Recordings are raw 16 kHz little-endian (``.sln16``), read from the chroot.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import G722
import numpy as np
import treq
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

reactor: Any = _reactor

ROOT = Path(os.environ.get("XLBRIDGE_LAB_ROOT", "/var/tmp/xlbridge-asterisk"))
OUT = ROOT / "lab" / "out"
PASSWORD_FILE = ROOT / "lab" / "ari-password"
ARI = "http://127.0.0.1:8088"
SOUNDS = ROOT / "usr" / "share" / "asterisk" / "sounds"
RATE = 16000


def lab_script(*args: str) -> None:
    """
    ``sh scripts/asterisk-lab.sh ARGS`` (stop, start...): raises on failure.
    """
    script = Path(__file__).resolve().parents[2] / "scripts" / "asterisk-lab.sh"
    subprocess.run(["sh", str(script), *args], check=True, capture_output=True, timeout=120)


def unavailable() -> Optional[str]:
    """
    Why the lab cannot be used, or ``None`` when its Asterisk answers.
    """
    if not PASSWORD_FILE.exists():
        return f"no Asterisk lab in {ROOT}: run 'sh scripts/asterisk-lab.sh start' as root"
    try:
        out = subprocess.run(
            ["chroot", str(ROOT), "asterisk", "-rx", "core show uptime"],
            capture_output=True, timeout=10, text=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot reach the lab's Asterisk: {e}"
    if out.returncode != 0 or "uptime" not in out.stdout.lower():
        return "the lab's Asterisk is not running: sh scripts/asterisk-lab.sh start"
    return None


#: The connection pool ARI requests use; a test sets a fresh one and closes
#: it on cleanup (trial wants no connection left behind).
POOL: Optional[HTTPConnectionPool] = None


def new_pool() -> HTTPConnectionPool:
    global POOL
    POOL = HTTPConnectionPool(reactor, persistent=True)
    return POOL


def hold_lab() -> Callable[[], None]:
    """
    Take the lab for this process (blocking until no other test process
    holds it); returns the function that lets it go.
    """
    f = open(ROOT / "lab" / "lock", "a")
    fcntl.flock(f, fcntl.LOCK_EX)

    def release() -> None:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()

    return release


def auth() -> tuple[str, str]:
    return ("xlbridge", PASSWORD_FILE.read_text().strip())


@inlineCallbacks
def ari(method: str, path: str, params: Optional[dict[str, str]] = None, body: Any = None) -> Any:
    """
    One ARI request; the decoded JSON (or ``None``), raising on >= 300.
    """
    kwargs: dict[str, Any] = {"auth": auth(), "params": params or {}, "pool": POOL}
    if body is not None:
        kwargs["data"] = json.dumps(body).encode()
        kwargs["headers"] = {"Content-Type": ["application/json"]}
    response = yield treq.request(method, ARI + "/ari" + path, **kwargs)
    text = yield response.text()
    if response.code >= 300:
        raise RuntimeError(f"ARI {method} {path} -> {response.code} {text}")
    returnValue(json.loads(text) if text.strip() else None)


def caller(
    name: str,
    play: str = "",
    hold: float = 6,
    delay: float = 1,
    *,
    app: Optional[str] = None,
    app_args: str = "",
    context: Optional[str] = None,
    extension: Optional[str] = None,
    first: str = "",
) -> Any:
    """
    Originate one simulated caller; it records what it hears to
    ``OUT/<name>.sln16``.  Its ``;1`` half enters ``app`` (Stasis) with
    ``app_args``, or runs ``extension@context``.  It says ``first`` at
    once, waits ``delay`` s, says ``play``, and hangs up ``hold`` s later.
    """
    params = {"endpoint": "Local/caller@xl-lab/n", "formats": "slin16"}
    if app is not None:
        params.update(app=app, appArgs=app_args)
    else:
        assert context is not None and extension is not None
        params.update(context=context, extension=extension, priority="1")
    variables = {
        "LAB_REC": f"/lab/out/{name}", "LAB_PLAY": play,
        "LAB_HOLD": str(hold), "LAB_DELAY": str(delay), "LAB_FIRST": first,
    }
    return ari("POST", "/channels", params, {"variables": variables})


@inlineCallbacks
def wait_idle(timeout: float = 30.0) -> Any:
    """
    Wait until Asterisk has no channels left; return the seconds waited.
    """
    waited = 0.0
    while True:
        channels = yield ari("GET", "/channels")
        if not channels:
            break
        if waited >= timeout:
            names = [c.get("name") for c in channels]
            raise AssertionError(f"channels still up after {timeout} s: {names}")
        yield deferLater(reactor, 0.25, lambda: None)
        waited += 0.25
    # MixMonitor closes its files as the channel goes.
    yield deferLater(reactor, 0.5, lambda: None)
    returnValue(waited)


def clean_out() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.iterdir():
        f.unlink()


def recording(name: str) -> np.ndarray:
    """
    What caller ``name`` heard: float samples at 16 kHz.
    """
    return np.fromfile(OUT / f"{name}.sln16", dtype="<i2").astype(np.float64)


def sound(name: str, lang: str = "en") -> np.ndarray:
    """
    An Asterisk core prompt (G.722 file) decoded to 16 kHz float samples.
    """
    folder = "en_US_f_Allison" if lang == "en" else "es_MX_f_Allison"
    raw = (SOUNDS / folder / f"{name}.g722").read_bytes()
    return np.asarray(G722.G722(RATE, 64000).decode(raw), dtype=np.float64)


def _correlate(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """
    ``np.correlate(x, k, "valid")`` by FFT (seconds of audio, many pieces).
    """
    size = 1 << int(np.ceil(np.log2(len(x) + len(k))))
    full = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(k[::-1], size), size)
    return full[len(k) - 1 : len(x)]


def segment_matches(heard: np.ndarray, ref: np.ndarray, window: float = 0.25) -> list[tuple[float, float]]:
    """
    Each voiced ``window``-second piece of ``ref`` looked for in ``heard``:
    ``(normalised correlation, its delay in seconds)`` per piece.  A whole
    prompt heard intact gives ~1.0 everywhere at one delay; a splice (a
    few ms lost once, as when a leg's reply rate changes) shifts the later
    delays a little without lowering the correlations.
    """
    n = int(RATE * window)
    out = []
    for start in range(0, len(ref) - n + 1, n):
        piece = ref[start : start + n]
        if np.sqrt(np.mean(piece**2)) < 300 or len(heard) < n:
            continue  # silence between words matches anything
        corr = _correlate(heard, piece)
        power = np.concatenate(([0.0], np.cumsum(heard**2)))
        window = power[n:] - power[:-n]
        # Digital silence (or the running sum's rounding) matches nothing.
        nc = np.where(window > n * 100.0, corr / np.sqrt(np.maximum(window, 1.0) * np.sum(piece**2)), 0.0)
        at = int(np.argmax(nc))
        out.append((float(nc[at]), (at - start) / RATE))
    return out


def loudest_dbfs(x: np.ndarray, window: float = 0.5) -> float:
    """
    Level of the loudest ``window`` seconds, dBFS.
    """
    n = int(RATE * window)
    if len(x) < n:
        return -120.0
    power = np.convolve(x**2, np.ones(n) / n, "valid")
    return float(10 * np.log10(power.max() / 32768.0**2 + 1e-12))


class Bridge:
    """
    xlbridge under twistd, as an operator runs it; its log goes to
    ``<tmp>/xlbridge.log`` and its events to ``<tmp>/events.jsonl``.
    """

    #: the monitor's port and token, when a test asks for the monitor
    MONITOR_PORT = 3091
    TOKEN = "lab-monitor-token"

    def __init__(self, tmp: Path, args: list[str], monitor: bool = False) -> None:
        self.log_path = tmp / "xlbridge.log"
        self.events_path = tmp / "events.jsonl"
        twistd = str(Path(sys.executable).with_name("twistd"))
        where = f"tcp:{self.MONITOR_PORT}:interface=127.0.0.1" if monitor else "none"
        cmd = [twistd, "-n", "--pidfile=", "--logfile", str(self.log_path), "xlbridge",
               "--monitor", where, "--events", str(self.events_path), *args]
        env = {**os.environ, "XLBRIDGE_MONITOR_TOKEN": self.TOKEN}
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, cwd=str(tmp), env=env)

    @inlineCallbacks
    def monitor(self, path: str) -> Any:
        """
        GET ``path`` from the monitor, with the token; the body as text.
        """
        url = f"http://127.0.0.1:{self.MONITOR_PORT}{path}"
        response = yield treq.get(url, headers={"Authorization": [f"Bearer {self.TOKEN}"]}, pool=POOL)
        text = yield response.text()
        if response.code != 200:
            raise RuntimeError(f"GET {path} -> {response.code} {text[:300]}")
        returnValue(text)

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    @inlineCallbacks
    def wait_for(self, text: str, timeout: float = 30.0) -> Any:
        waited = 0.0
        while text not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"xlbridge exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            if waited > timeout:
                raise AssertionError(f"no {text!r} in xlbridge's log after {timeout} s:\n{self.log()[-3000:]}")
            yield deferLater(reactor, 0.1, lambda: None)
            waited += 0.1

    def events(self) -> list[dict[str, Any]]:
        try:
            lines = self.events_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    @inlineCallbacks
    def stop(self, sig: int = signal.SIGTERM) -> Any:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        waited = 0.0
        while self.process.poll() is None and waited < 15:
            yield deferLater(reactor, 0.1, lambda: None)
            waited += 0.1
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        returnValue(self.process.returncode)


def said(name: str) -> np.ndarray:
    """
    What caller ``name`` said (its Playback), on the same time line as
    :func:`recording`: float samples at 16 kHz.
    """
    return np.fromfile(OUT / f"{name}-said.sln16", dtype="<i2").astype(np.float64)


def position(x: np.ndarray, ref: np.ndarray, threshold: float = 0.6) -> Optional[float]:
    """
    Where ``ref`` starts in ``x``, in seconds, by the median of its voiced
    pieces' matches; ``None`` if fewer than three pieces match above
    ``threshold`` (two, for a prompt of three pieces such as vm-goodbye:
    one piece spliced by a busy recorder must not lose the whole
    measurement).  0.6, not 0.9: a prompt that crossed an 8 kHz leg
    (``AudioSocket()``) lost its upper band and correlates at 0.7-0.85 with
    the 16 kHz original, yet its best match is still where it was heard.
    """
    matches = segment_matches(x, ref)
    pieces = [d for c, d in matches if c > threshold]
    if len(pieces) < min(3, len(matches) - 1) or len(pieces) < 2:
        return None
    return float(np.median(pieces))


def round_trip(a: str, prompt_a: str, b: str, prompt_b: str) -> tuple[float, float]:
    """
    The two one-way delays of a call between callers ``a`` and ``b``,
    returned as ``(their sum, heard-minus-said of a)``.  Each caller's
    recordings share one time line, so ``heard_b(A) - said_a(A)`` +
    ``heard_a(B) - said_b(B)`` is the sum of the delays a->b and b->a
    (the unknown offset between the two callers' time lines cancels): the
    absolute delay callers live with, not just a correlation.
    """
    found = {}
    for who, what, kind in ((a, prompt_a, "said"), (b, prompt_a, "heard"), (b, prompt_b, "said"), (a, prompt_b, "heard")):
        audio = said(who) if kind == "said" else recording(who)
        at = position(audio, sound(what))
        if at is None:
            raise AssertionError(f"{who} {kind} no clean {what!r}")
        found[who, what, kind] = at
    ab = found[b, prompt_a, "heard"] - found[a, prompt_a, "said"]
    ba = found[a, prompt_b, "heard"] - found[b, prompt_b, "said"]
    return ab + ba, ab
