"""Reliability tooling for xlbridge (issue 15): fuzzers, the fault proxy and the fault runner."""
