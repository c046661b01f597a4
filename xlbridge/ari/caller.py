"""
One ARI caller: what xlbridge created for it, and its lifecycle as a state
machine (automat's ``TypeMachineBuilder``, like Twisted's ``ClientService``).

::

      start, answered, bridge_created,
      media_created, media_in_stasis: the next step
          +-----+
          |     v                                     partner_ready
        setting-up ---- media_bound ----> waiting-for-partner ------> in-call
          |     |                                 |           <------   |
          |     | setup_failed                    |         partner_left |
          |     +----------------------+          | hangup, end,        |
          | hangup, end                |          | setup_failed        |
          v                            v          v                     |
        tearing-down ---------------> gone <----------------------------+
              the step in flight lands,              hangup, end, setup_failed
              setup_failed

Setting up (PROTOCOLS.md 5) is a chain of ARI requests, each started by
the machine when the previous one's answer comes in as an input: answer
the caller, create its bridge, bind its leg and create the ExternalMedia
channel, wait for that channel to enter Stasis, add both channels to the
bridge (``media_bound``: its audio now reaches its leg).  A failed request
(or a timeout) is ``setup_failed``: the caller is torn down and hung up.

A caller who hangs up during setup is torn down at once (everything
created so far is released), but one request is still in flight: in
``tearing-down`` whatever that request created when it lands is released
too, and no further step starts.  That is the only state where setup
answers do anything but continue the setup; in ``gone`` every input is
ignored (a late failure is only logged), so teardown is idempotent.

Once set up, the caller waits for its partner; when both callers of a room
are set up the controller pairs them in a :class:`~xlbridge.room.Room` and
tells each (``partner_ready``): in ``in-call`` its audio goes to that room.
When the partner leaves, the room is closed (``partner_left``) and the
caller waits again, or is hung up or prompted as configured.

The machine decides; the controller acts.  Every request and every piece of
bookkeeping is a method of the :class:`CallerOwner` the machine is given,
so this module holds no I/O, and its tests drive it with a recording owner.
Inputs return nothing (only the :meth:`CallerInputs.state` query does, so
no output may call it): an input that arrives while the machine is handling
another (a setup step that answers synchronously, a Stasis waiter released
during teardown) runs right after it, in order.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

import attrs
from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.room import Endpoint, Room

log = Logger()


class CallerInputs(Protocol):
    """
    What can happen to a caller.
    """

    def start(self) -> None:
        """
        The caller entered Stasis and its room: set it up.
        """

    def answered(self) -> None:
        """
        Asterisk answered the caller's channel.
        """

    def bridge_created(self, bridge: dict[str, Any]) -> None:
        """
        The caller's mixing bridge exists (an ARI Bridge object).
        """

    def media_created(self, channel: dict[str, Any]) -> None:
        """
        The caller's ExternalMedia channel exists (an ARI Channel object).
        """

    def media_in_stasis(self) -> None:
        """
        The ExternalMedia channel entered Stasis (it may join the bridge).
        """

    def media_bound(self) -> None:
        """
        Both channels are in the caller's bridge: its audio reaches its leg.
        """

    def partner_ready(self, room: Room, seat: int) -> None:
        """
        The partner is set up too: both are paired in ``room``, this caller
        as leg ``seat``.
        """

    def partner_left(self) -> None:
        """
        The room pairing this caller with its partner was closed.
        """

    def hangup(self, reason: str) -> None:
        """
        The caller's channel is gone (StasisEnd, ChannelDestroyed, or
        missing after a reconnection): tear everything down.
        """

    def end(self, reason: str) -> None:
        """
        xlbridge ends the caller (shutdown, its media channel died, its
        callee never answered): tear down as for :meth:`hangup`, and hang
        its channel up.
        """

    def setup_failed(self, failure: Failure) -> None:
        """
        A setup step failed: log it; unless the caller is already being
        torn down, tear down and hang up.
        """

    def state(self) -> str:
        """
        The current state's name (for logs and tests; not from an output).
        """


class CallerOwner(Protocol):
    """
    What a caller's lifecycle asks of the controller.  Request methods
    return the request's Deferred; the machine feeds the answer back as an
    input.
    """

    def answer(self, caller: "Caller") -> "Deferred[Any]":
        """
        Answer the caller's channel.
        """

    def create_bridge(self, caller: "Caller") -> "Deferred[Any]":
        """
        Create the caller's mixing bridge; fires with the Bridge object.
        """

    def create_media(self, caller: "Caller") -> "Deferred[Any]":
        """
        Bind the caller's leg and create the ExternalMedia channel sending
        to it; fires with the Channel object.
        """

    def wait_media(self, caller: "Caller", channel: dict[str, Any]) -> "Deferred[None]":
        """
        Note where the new ExternalMedia ``channel`` sends from; fires once
        it is in Stasis.
        """

    def add_to_bridge(self, caller: "Caller") -> "Deferred[Any]":
        """
        Add the caller's channel and its ExternalMedia channel to its bridge.
        """

    def set_up(self, caller: "Caller") -> None:
        """
        The caller is set up: pair it if its partner is too.
        """

    def leave(self, caller: "Caller", reason: str) -> None:
        """
        Take the caller out of its room (closing its call) and release what
        was created for it; hang up, keep or prompt its partner.
        """

    def release(self, caller: "Caller") -> None:
        """
        Release whatever was created for the caller (idempotent).
        """

    def hang_up(self, caller: "Caller") -> None:
        """
        Hang the caller's channel up.
        """


@attrs.define(eq=False)
class Caller:
    """
    One caller's channel and what xlbridge created for it.

    :ivar lifecycle: the caller's state machine (:class:`CallerInputs`).
    :ivar ready: set up (both channels in its bridge); stays true.
    :ivar pairing: the room pairing it with its partner while in a call.
    :ivar seat: its leg in :attr:`pairing` (0 or 1).
    """

    channel_id: str
    name: str
    room: str
    lang: str
    #: how its audio reaches us: ``"rtp"``, ``"audiosocket"`` or
    #: ``"websocket"`` (``--ari-media``, or its Stasis ``media=``)
    media: str = "rtp"
    bridge_id: Optional[str] = None
    media_id: Optional[str] = None
    port: Optional[int] = None
    endpoint: Optional[Endpoint] = None
    listening: Optional[IListeningPort] = None
    #: AudioSocket media: the UUID its connection announces
    media_uuid: Optional[str] = None
    #: WebSocket media: the id we gave its ExternalMedia channel (known,
    #: and its leg registered, before the channel exists)
    media_ws: Optional[str] = None
    ready: bool = False
    pairing: Optional[Room] = None
    seat: int = 0
    lifecycle: CallerInputs = attrs.field(init=False, repr=False)


@attrs.define(eq=False)
class _Core:
    caller: Caller
    owner: CallerOwner


def _step(request: Callable[[], "Deferred[Any]"], then: Callable[[Any], None], inputs: CallerInputs) -> None:
    # The answer is the next input; a failure (raised by the owner at once,
    # of the request, or of the next step's own outputs) is setup_failed.
    maybeDeferred(request).addCallback(then).addErrback(inputs.setup_failed)


def _build() -> Callable[[_Core], CallerInputs]:
    machine = TypeMachineBuilder(CallerInputs, _Core)
    setting_up = machine.state("setting-up")
    waiting = machine.state("waiting-for-partner")
    in_call = machine.state("in-call")
    tearing_down = machine.state("tearing-down")
    gone = machine.state("gone")
    states = {s.name: s for s in (setting_up, waiting, in_call, tearing_down, gone)}

    # -- setting up: each answer starts the next step ------------------------

    @pep614(setting_up.upon(CallerInputs.start).loop())
    def answer(inputs: CallerInputs, core: _Core) -> None:
        _step(lambda: core.owner.answer(core.caller), lambda _: inputs.answered(), inputs)

    @pep614(setting_up.upon(CallerInputs.answered).loop())
    def create_bridge(inputs: CallerInputs, core: _Core) -> None:
        _step(lambda: core.owner.create_bridge(core.caller), inputs.bridge_created, inputs)

    @pep614(setting_up.upon(CallerInputs.bridge_created).loop())
    def create_media(inputs: CallerInputs, core: _Core, bridge: dict[str, Any]) -> None:
        core.caller.bridge_id = str(bridge["id"])
        _step(lambda: core.owner.create_media(core.caller), inputs.media_created, inputs)

    @pep614(setting_up.upon(CallerInputs.media_created).loop())
    def wait_media(inputs: CallerInputs, core: _Core, channel: dict[str, Any]) -> None:
        core.caller.media_id = str(channel["id"])
        _step(lambda: core.owner.wait_media(core.caller, channel), lambda _: inputs.media_in_stasis(), inputs)

    @pep614(setting_up.upon(CallerInputs.media_in_stasis).loop())
    def add_to_bridge(inputs: CallerInputs, core: _Core) -> None:
        _step(lambda: core.owner.add_to_bridge(core.caller), lambda _: inputs.media_bound(), inputs)

    @pep614(setting_up.upon(CallerInputs.media_bound).to(waiting))
    def set_up(inputs: CallerInputs, core: _Core) -> None:
        core.caller.ready = True
        core.owner.set_up(core.caller)

    # -- leaving -------------------------------------------------------------

    @pep614(setting_up.upon(CallerInputs.hangup).to(tearing_down))
    @pep614(waiting.upon(CallerInputs.hangup).to(gone))
    @pep614(in_call.upon(CallerInputs.hangup).to(gone))
    def leave(inputs: CallerInputs, core: _Core, reason: str) -> None:
        core.caller.pairing = None
        core.owner.leave(core.caller, reason)

    @pep614(setting_up.upon(CallerInputs.end).to(tearing_down))
    @pep614(waiting.upon(CallerInputs.end).to(gone))
    @pep614(in_call.upon(CallerInputs.end).to(gone))
    def end(inputs: CallerInputs, core: _Core, reason: str) -> None:
        leave(inputs, core, reason)
        core.owner.hang_up(core.caller)

    @pep614(setting_up.upon(CallerInputs.setup_failed).to(gone))
    @pep614(waiting.upon(CallerInputs.setup_failed).to(gone))
    @pep614(in_call.upon(CallerInputs.setup_failed).to(gone))
    def fail(inputs: CallerInputs, core: _Core, failure: Failure) -> None:
        log_failure(inputs, core, failure)
        end(inputs, core, "setup failed")

    @pep614(tearing_down.upon(CallerInputs.setup_failed).to(gone))
    @pep614(gone.upon(CallerInputs.setup_failed).loop())
    def log_failure(inputs: CallerInputs, core: _Core, failure: Failure) -> None:
        log.error("{name}: setup failed: {err}", name=core.caller.name, err=failure.value)

    # -- tearing down: what the step in flight created goes too ---------------

    tearing_down.upon(CallerInputs.answered).to(gone).returns(None)  # nothing new

    @pep614(tearing_down.upon(CallerInputs.bridge_created).to(gone))
    def release_bridge(inputs: CallerInputs, core: _Core, bridge: dict[str, Any]) -> None:
        core.caller.bridge_id = str(bridge["id"])
        core.owner.release(core.caller)

    @pep614(tearing_down.upon(CallerInputs.media_created).to(gone))
    def release_media(inputs: CallerInputs, core: _Core, channel: dict[str, Any]) -> None:
        core.caller.media_id = str(channel["id"])
        core.owner.release(core.caller)

    @pep614(tearing_down.upon(CallerInputs.media_in_stasis).to(gone))
    @pep614(tearing_down.upon(CallerInputs.media_bound).to(gone))
    def release(inputs: CallerInputs, core: _Core) -> None:
        core.owner.release(core.caller)

    # -- pairing -------------------------------------------------------------

    @pep614(waiting.upon(CallerInputs.partner_ready).to(in_call))
    def join(inputs: CallerInputs, core: _Core, room: Room, seat: int) -> None:
        core.caller.pairing, core.caller.seat = room, seat

    @pep614(in_call.upon(CallerInputs.partner_left).to(waiting))
    def part(inputs: CallerInputs, core: _Core) -> None:
        core.caller.pairing = None

    # -- everything else changes nothing -------------------------------------

    # (A setup answer outside setting-up and tearing-down cannot happen:
    # one request is in flight at a time, and its landing leaves both.)
    setup = (
        CallerInputs.start, CallerInputs.answered, CallerInputs.bridge_created, CallerInputs.media_created,
        CallerInputs.media_in_stasis, CallerInputs.media_bound,
    )
    pairing = (CallerInputs.partner_ready, CallerInputs.partner_left)
    leaving = (CallerInputs.hangup, CallerInputs.end)
    ignored: dict[Any, tuple[Any, ...]] = {
        setting_up: pairing,
        waiting: (*setup, CallerInputs.partner_left),
        in_call: (*setup, CallerInputs.partner_ready),
        tearing_down: (CallerInputs.start, *pairing, *leaving),
        gone: (*setup, *pairing, *leaving),
    }
    for state, inputs in ignored.items():
        for i in inputs:
            state.upon(i).loop().returns(None)
    for name, state in states.items():
        state.upon(CallerInputs.state).loop().returns(name)
    return machine.build()


_machine = _build()


def new_caller(
    channel_id: str, name: str, room: str, lang: str, owner: CallerOwner, media: str = "rtp"
) -> Caller:
    """
    A caller in state ``setting-up``; feed it :meth:`CallerInputs.start`.
    """
    caller = Caller(channel_id, name, room, lang, media)
    caller.lifecycle = _machine(_Core(caller, owner))
    return caller
