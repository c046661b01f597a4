"""
xlbridge's trial tests; their layout mirrors the ``xlbridge`` package.

Hypothesis runs without its per-example deadline: CI machines are shared and
a slow example is not a failure (the benchmarks measure speed).
"""

from hypothesis import settings

settings.register_profile("xlbridge", deadline=None)
settings.load_profile("xlbridge")
