"""
Browser tests: the monitor page in headless Chromium (Playwright), against
a real bridge and monitor on the real reactor.  Skipped without
``/usr/bin/chromium`` or the ``playwright`` package.
"""
