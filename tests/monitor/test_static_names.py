"""
``/static/<name>`` with hostile names (issue 15, bad input): never more
than the shipped files, never an exception (a NUL in the name made
``open()`` raise ValueError: a 500 and a traceback per request).
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from xlbridge.monitor.static_files import STATIC_DIR, StaticResource, _read_static

SHIPPED = {name: open(os.path.join(STATIC_DIR, name), "rb").read() for name in os.listdir(STATIC_DIR)
           if not name.startswith(".")}


class StaticNameTests(SynchronousTestCase):
    def render(self, *postpath: bytes) -> tuple[int, bytes]:
        request = DummyRequest(list(postpath))
        body = StaticResource().render_GET(request)  # type: ignore[arg-type]
        return request.responseCode or 200, body

    def test_nul_in_the_name_is_404(self) -> None:
        self.assertEqual(self.render(b"\x00app.js")[0], 404)
        self.assertEqual(self.render(b"app.js\x00.html")[0], 404)

    def test_traversal_is_404(self) -> None:
        for parts in ([b"..", b"service.py"], [b"../service.py"], [b"..\\service.py"], [b"/etc/passwd"],
                      [b".hidden.js"], [b"app.js", b".."]):
            self.assertEqual(self.render(*parts)[0], 404, parts)

    def test_shipped_file_served(self) -> None:
        self.assertEqual(self.render(b"app.js"), (200, SHIPPED["app.js"]))

    @settings(max_examples=400, deadline=None)
    @given(st.text(max_size=40) | st.sampled_from(["app.js", "style.css", "index.html", "../app.js", "app.js\x00"]))
    def test_any_name_never_raises_and_only_shipped_files(self, name: str) -> None:
        body = _read_static(name)
        if body is not None:
            self.assertIn(name, SHIPPED)
            self.assertEqual(body, SHIPPED[name])
