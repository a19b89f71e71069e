"""Helpers shared by the test suite: real stores on fresh databases, scenarios."""
