"""
Multi-process mode (``--workers N``): :mod:`.supervisor` keeps N worker
processes running; :mod:`.childlog` is the log wire between them.
"""
