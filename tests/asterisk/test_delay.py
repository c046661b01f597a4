"""
Absolute delay through xlbridge on a real Asterisk, measured from what
the callers said and heard (:func:`tests.asterisk.lab.round_trip`), for
the AudioSocket styles against RTP in the same process.

The setup of issue 14: leg 7000 is an ExternalMedia channel with
``encapsulation=audiosocket`` (kind 0x12), leg 7001 the ``AudioSocket()``
dialplan application on a Local channel (kind 0x10), each in a mixing
bridge with its caller; 7777/8888 are ExternalMedia RTP, the control.
The callers talk as soon as they are bridged.  When one side joined while
the other was already talking, what piled up for the latecomer used to be
heard ~200 ms late for the rest of the call (the relay buffer's bound):
these tests failed on that code with a round trip of 196 ms against RTP's
43-63 ms.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from tests.asterisk import lab
from tests.asterisk.test_real_asterisk import PROMPT_A, PROMPT_B, RealAsteriskTestCase
from xlbridge.ari.events import ARIEvents

reactor: Any = _reactor

AS_UUID = "3f2a6c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
#: The legs the test's own ARI application sets up, by Stasis argument.
LEGS = ("7000", "7001", "7777", "8888")
#: Each AudioSocket leg may be this much slower than an RTP leg, one way.
SLACK = 0.02


class AudioSocketDelayTests(RealAsteriskTestCase):
    """
    One-way delays on AudioSocket legs stay within :data:`SLACK` of RTP's.
    """

    timeout = 90

    @inlineCallbacks
    def app(self) -> Any:
        """
        An ARI application of the user's own (like the sample context
        ``xlbridge-externalmedia``) that puts each caller in a mixing
        bridge with its leg to xlbridge.
        """
        made: dict[str, str] = {}

        def on_event(event: dict[str, Any]) -> None:
            channel = event.get("channel") or {}
            cid = channel.get("id", "")
            # The legs enter the app too (an AudioSocket one with its UUID
            # as argument, the Local one with "leg"): only callers are set up.
            arg = (event.get("args") or [""])[0]
            if event.get("type") == "StasisStart" and arg in LEGS:
                made[cid] = arg
                self.app_steps(cid, arg).addErrback(self.errors.append)
            elif event.get("type") == "StasisEnd" and cid in made:
                lab.ari("DELETE", f"/channels/xlb-em-{cid}").addErrback(lambda f: None)
                lab.ari("DELETE", f"/bridges/xlb-{cid}").addErrback(lambda f: None)

        self.errors: list[Any] = []
        app = ARIEvents(reactor, lab.ARI, "myapp", *lab.auth(), on_event)
        app.startService()
        self.addCleanup(app.stopService)
        while not app.connected:
            yield deferLater(reactor, 0.1, lambda: None)

    @inlineCallbacks
    def app_steps(self, chan: str, ext: str) -> Any:
        yield lab.ari("POST", f"/channels/{chan}/answer")
        yield lab.ari("POST", "/bridges", {"type": "mixing", "bridgeId": f"xlb-{chan}"})
        leg = f"xlb-em-{chan}"
        if ext == "7001":
            # AudioSocket() on a Local channel, bridged with the caller.
            yield lab.ari("POST", "/channels", {
                "endpoint": "Local/7001@xlbridge-audiosocket-app/n", "app": "myapp", "appArgs": "leg",
                "channelId": leg, "formats": "slin16",
            })
        else:
            params = {"app": "myapp", "channelId": leg, "format": "slin16"}
            if ext == "7000":
                params.update(external_host="127.0.0.1:5050", encapsulation="audiosocket",
                              transport="tcp", data=AS_UUID)
            else:
                params.update(external_host=f"127.0.0.1:{ext}")
            yield lab.ari("POST", "/channels/externalMedia", params)
        for _ in range(50):
            chans = yield lab.ari("GET", "/channels")
            plan = {c["id"]: c.get("dialplan", {}) for c in chans}
            if plan.get(leg, {}).get("app_name") == "Stasis":
                break
            yield deferLater(reactor, 0.05, lambda: None)
        yield lab.ari("POST", f"/bridges/xlb-{chan}/addChannel", {"channel": f"{chan},{leg}"})

    @inlineCallbacks
    def measure(self, audiosocket: str, first: str, gap: float, talk: float) -> Any:
        """
        Callers a (7000) and b (7001), c (7777) and d (8888); ``first`` of
        a/b is called ``gap`` s before the other; each talks ``talk`` s
        after answering.  Returns the two pairs' round trips.
        """
        yield self.start("--ports", "7777,8888", "--audiosocket", audiosocket, "--engines", "relay",
                         ready="AudioSocketEndpoint starting on 5052")
        yield self.app()
        callers = {"a": (PROMPT_A, "7000"), "b": (PROMPT_B, "7001")}
        order = [first, "b" if first == "a" else "a"]
        for i, who in enumerate(order):
            if i:
                yield deferLater(reactor, gap, lambda: None)
            prompt, ext = callers[who]
            yield lab.caller(who, prompt, delay=talk, hold=6, app="myapp", app_args=ext)
        yield lab.caller("c", PROMPT_A, delay=talk, hold=6, app="myapp", app_args="7777")
        yield lab.caller("d", PROMPT_B, delay=talk, hold=6, app="myapp", app_args="8888")
        yield self.assert_nothing_left()
        self.assertEqual(self.errors, [])
        audiosocket_trip, _ = lab.round_trip("a", PROMPT_A, "b", PROMPT_B)
        rtp_trip, _ = lab.round_trip("c", PROMPT_A, "d", PROMPT_B)
        return audiosocket_trip, rtp_trip

    def assert_no_standing_delay(self, trips: tuple[float, float]) -> None:
        audiosocket_trip, rtp_trip = trips
        self.assertLess(
            audiosocket_trip, rtp_trip + 2 * SLACK,
            f"AudioSocket round trip {audiosocket_trip * 1000:.0f} ms, RTP {rtp_trip * 1000:.0f} ms",
        )

    @inlineCallbacks
    def test_application_joins_while_the_other_talks(self) -> Any:
        """
        7000's caller talks as soon as bridged; 7001 (the application)
        joins 0.6 s later, mid-sentence.  7000 states its rate (slin16):
        replies in its own kind from the first frame.
        """
        trips = yield self.measure("7000=5050:slin16,7001=5052", "a", 0.6, 0.3)
        self.assert_no_standing_delay(trips)

    @inlineCallbacks
    def test_externalmedia_joins_while_the_other_talks(self) -> Any:
        """
        The other way round, rate not stated: 7000's replies start at
        8 kHz and switch to slin16 when its audio comes, mid-sentence.
        """
        trips = yield self.measure("7000=5050,7001=5052", "b", 0.6, 0.3)
        self.assert_no_standing_delay(trips)

    @inlineCallbacks
    def test_talking_later(self) -> Any:
        """
        Both joined long before anyone talks (the case that was always
        fine): still within the slack of RTP.
        """
        trips = yield self.measure("7000=5050,7001=5052", "a", 0.1, 2.0)
        self.assert_no_standing_delay(trips)
