"""Fixtures for the service tests: the console's logged-in clients (console_support.py)."""

from tests.service.console_support import console  # noqa: F401  (a fixture)
