"""Browser tests: a real gateway (and any helper apps) served on free loopback ports from a
background thread, driven by Playwright with Debian's chromium.

Run them alone with ``pytest -m browser``; they skip when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from service.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"


class Servers:
    """aiohttp apps served from one event loop in a thread, each on its own port."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-servers",
                                        daemon=True)
        self._thread.start()

    def serve(self, app: web.Application, port: int | None = None) -> str:
        """Start `app`; its base URL."""
        port = port or free_port()

        async def start() -> None:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self._runners.append(runner)

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        return f"http://127.0.0.1:{port}"

    def run(self, coroutine, timeout: float = 30):
        """Run a coroutine on the servers' loop (e.g. to read Redis through the app's pool)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in reversed(self._runners):
                await runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    running = Servers()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def chromium():
    """A headless chromium (Debian's), via Playwright. Module-scoped: Playwright's sync API runs
    an event loop in this thread while it is open, and pytest-asyncio's tests after this module
    need the thread without one."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup.sh) "
                    "to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (requirements.lock)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def artifacts() -> Path:
    """test-artifacts/ at the repository root (git-ignored): screenshots and the like."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
