"""
Tests for xlbridge.bridge_view: the bridge provides every member of the
MonitorView and ControllerView protocols.

The members are enumerated from each Protocol's own namespace (its
annotations, properties and functions), so a member added to a view and
not to BridgeService fails here, as does a method whose parameters no
longer match.  The bridge is a real one on a memory reactor, built as
tests/test_bridge.py builds it.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Protocol

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.bridge import BridgeService
from xlbridge.bridge_view import ControllerView, MonitorView
from xlbridge.config import load_config
from xlbridge.events import Event
from xlbridge.testing import MemoryUDPReactor


class _Empty(Protocol):
    pass


#: What typing puts in every Protocol's namespace: not members.
MACHINERY = frozenset(vars(_Empty)) | {"__annotations__"}


def view_members(view: type) -> dict[str, str]:
    """
    ``name -> "attribute" | "method"`` for every member ``view`` itself
    declares (not those it inherits from another view).
    """
    own = vars(view)
    members = {name: "attribute" for name in own.get("__annotations__", {})}
    for name, value in own.items():
        if name in MACHINERY:
            continue
        if isinstance(value, property):
            members[name] = "attribute"
        elif inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod)):
            members[name] = "method"
    return members


def expected_type(hint: Any) -> type | None:
    """The runtime class a type hint asks for, if it names one (``list[X]`` -> list)."""
    origin = typing.get_origin(hint) or hint
    return origin if isinstance(origin, type) else None


def problems(bridge: object, view: type) -> list[str]:
    """Everything ``bridge`` lacks of ``view``, as readable lines (empty: none)."""
    out: list[str] = []
    own = vars(view)
    for name, kind in sorted(view_members(view).items()):
        if not hasattr(bridge, name):
            out.append(f"{view.__name__}.{name}: missing")
            continue
        value = getattr(bridge, name)
        if kind == "attribute":
            member = own.get(name)
            hint = (
                typing.get_type_hints(member.fget).get("return")
                if isinstance(member, property)
                else typing.get_type_hints(view).get(name)
            )
            cls = expected_type(hint)
            if cls is not None and not isinstance(value, cls):
                out.append(f"{view.__name__}.{name}: {type(value).__name__}, not {cls.__name__}")
            continue
        if not callable(value):
            out.append(f"{view.__name__}.{name}: not callable")
            continue
        out.extend(f"{view.__name__}.{name}: {p}" for p in signature_problems(own[name], value))
    return out


def signature_problems(declared: Any, provided: Any) -> list[str]:
    """
    ``provided`` (a bound method) can be called every way ``declared`` (the
    view's function, with ``self``) can: same parameter names, kinds,
    positions and defaults, and nothing more that is required.
    """
    out = []
    want = list(inspect.signature(declared).parameters.values())[1:]
    have = inspect.signature(provided).parameters
    for p in want:
        q = have.get(p.name)
        if q is None:
            out.append(f"no parameter {p.name!r}")
            continue
        if q.kind != p.kind:
            out.append(f"parameter {p.name!r} is {q.kind.description}, not {p.kind.description}")
        if p.default is not p.empty and q.default != p.default:
            out.append(f"parameter {p.name!r} defaults to {q.default!r}, not {p.default!r}")
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    want_pos = [p.name for p in want if p.kind in positional]
    have_pos = [q.name for q in have.values() if q.kind in positional]
    if have_pos[: len(want_pos)] != want_pos:
        out.append(f"positional parameters {have_pos}, not {want_pos}")
    names = {p.name for p in want}
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    for q in have.values():
        if q.name not in names and q.default is q.empty and q.kind not in variadic:
            out.append(f"extra required parameter {q.name!r}")
    return out


class BridgeViewTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()
        self.events: list[Event] = []
        cfg = load_config({"ports": "7777,8888", "reply-codec": "slin16"})
        self.bridge = BridgeService(cfg, self.reactor, observers=[self.events.append])
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        if self.bridge.running:
            self.bridge.stopService()

    def test_views_are_enumerated(self) -> None:
        """The enumeration finds what the views declare (so the checks below check something)."""
        monitor = view_members(MonitorView)
        self.assertLessEqual(
            {"egress": "attribute", "observers": "attribute", "retired_counters": "attribute",
             "active_calls": "method", "all_endpoints": "method", "status": "method"}.items(),
            monitor.items(),
        )
        controller = view_members(ControllerView)
        self.assertLessEqual(
            {"config": "attribute", "rtp_endpoint": "method", "attach_endpoint": "method",
             "detach_endpoint": "method", "open_room": "method", "close_room": "method"}.items(),
            controller.items(),
        )
        self.assertFalse({n for n in monitor | controller if n.startswith("__")})

    def test_bridge_provides_the_monitor_view(self) -> None:
        self.assertEqual(problems(self.bridge, MonitorView), [])

    def test_bridge_provides_the_controller_view(self) -> None:
        self.assertEqual(problems(self.bridge, ControllerView), [])

    def test_read_only_monitor_calls_answer(self) -> None:
        """The view's argument-less methods run on a live bridge and return what they declare."""
        for name, kind in view_members(MonitorView).items():
            if kind != "method" or len(inspect.signature(getattr(MonitorView, name)).parameters) != 1:
                continue
            cls = expected_type(typing.get_type_hints(getattr(MonitorView, name)).get("return"))
            result = getattr(self.bridge, name)()
            if cls is not None:
                self.assertIsInstance(result, cls, name)

    def test_a_member_missing_from_the_bridge_is_reported(self) -> None:
        """A view member the bridge lacks, or a method it takes differently, fails the check."""

        class Wider(MonitorView, Protocol):
            gone: int

            @property
            def vanished(self) -> int: ...

            def extra(self) -> None: ...

            def status(self, verbose: bool) -> dict[str, Any]: ...  # type: ignore[override]

            def close_room(self, room: Any, reason: str = "timeout") -> None: ...

        self.assertEqual(set(view_members(Wider)), {"gone", "vanished", "extra", "status", "close_room"})
        self.assertEqual(
            problems(self.bridge, Wider),
            [
                "Wider.close_room: parameter 'reason' defaults to 'hangup', not 'timeout'",
                "Wider.extra: missing",
                "Wider.gone: missing",
                "Wider.status: no parameter 'verbose'",
                "Wider.status: positional parameters [], not ['verbose']",
                "Wider.vanished: missing",
            ],
        )

    def test_wrong_attribute_type_is_reported(self) -> None:
        class Typed(Protocol):
            @property
            def observers(self) -> dict[str, int]: ...

        self.assertEqual(problems(self.bridge, Typed), ["Typed.observers: list, not dict"])
