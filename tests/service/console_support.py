"""What every console test needs: the gateway's real app on a real Redis, one user of each
role, and a logged-in client per user (a real login through the form, cookies and all).

    async def test_x(console):
        maria = await console.login("maria")           # a manager
        response = await maria.post("/console/api/...", json={...})   # CSRF header added
        response = await maria.post("/console/api/...", json={...}, csrf=None)  # without it
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from service.gateway import create_app
from service.settings import Settings

PASSWORD = "correct horse battery staple"
PREFIX = "consoletest"
# username -> role; two of each role that has four-eyes or claim races to test.
PEOPLE = {"alice": "agent", "bob": "agent", "sam": "supervisor", "maria": "manager",
          "max": "manager", "ada": "admin"}
ROLE_USER = {"agent": "alice", "supervisor": "sam", "manager": "maria", "admin": "ada"}

_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')
_LOGIN = re.compile(r'name="csrf" value="([^"]+)"')


def console_settings(redis_url: str, **env: str) -> Settings:
    return Settings.from_env({
        "REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": PREFIX,
        "TWILIO_ACCOUNT_SID": "AC" + "7" * 32, "TWILIO_AUTH_TOKEN": "console-test",
        "NUDGE_PSEUDONYM_KEY": "console-test", "NUDGE_SECURE_COOKIES": "0",
        "NUDGE_ENGINE_TOKEN": "t", "NUDGE_ACTIONS_TOKEN": "t", **env})


@dataclass
class LoggedIn:
    username: str
    role: str
    client: TestClient
    csrf: str = ""

    async def get(self, path: str, **kwargs: Any):
        kwargs.setdefault("allow_redirects", False)
        return await self.client.get(path, **kwargs)

    async def post(self, path: str, *, csrf: str | None | bool = True, **kwargs: Any):
        """POST with the session's CSRF token as a header (csrf=True), a given token (str),
        or none at all (csrf=None)."""
        headers = dict(kwargs.pop("headers", {}))
        if csrf is True:
            headers["X-CSRF-Token"] = self.csrf
        elif isinstance(csrf, str):
            headers["X-CSRF-Token"] = csrf
        kwargs.setdefault("allow_redirects", False)
        return await self.client.post(path, headers=headers, **kwargs)


@dataclass
class Console:
    server: TestServer
    make_client: Any
    settings: Settings
    redis: Any = None
    people: dict[str, str] = field(default_factory=lambda: dict(PEOPLE))

    @property
    def app(self):
        return self.server.app

    async def client(self) -> TestClient:
        return await self.make_client(self.server)

    async def login(self, username: str, password: str = PASSWORD) -> LoggedIn:
        client = await self.client()
        response = await submit_login(client, username, password)
        assert response.status == 302, (response.status, await response.text())
        page = await client.get("/console/account")
        match = _META.search(await page.text())
        assert match and match.group(1), "no CSRF token on the page after login"
        return LoggedIn(username, self.people[username], client, match.group(1))

    async def as_role(self, role: str) -> LoggedIn:
        return await self.login(ROLE_USER[role])


async def submit_login(client: TestClient, username: str, password: str, **extra: str):
    """The login form as a browser submits it: fetch it (pre-login cookie + token), post it."""
    form = await client.get("/console/login")
    token = _LOGIN.search(await form.text()).group(1)
    return await client.post("/console/login", allow_redirects=False,
                             data={"csrf": token, "username": username, "password": password, **extra})


async def add_people(app, people: dict[str, str] = PEOPLE) -> None:
    from service import appkeys as K
    from service.users import Users
    users = Users(app[K.REDIS], app[K.KEYS])
    for username, role in people.items():
        await users.add(username, role, PASSWORD)


@pytest_asyncio.fixture
async def console(aiohttp_server, aiohttp_client, redis_url, tmp_path) -> Console:
    """The gateway with the console, the demo portfolio imported, one person per role (and a
    second agent and manager), contact windows open all day (tests run at any hour)."""
    from service import appkeys as K
    from service.importer import import_file
    from tests.conftest import ROOT, always_open_policies

    policies = always_open_policies(tmp_path / "policies")
    settings = console_settings(redis_url, NUDGE_POLICIES_DIR=str(policies))
    server = await aiohttp_server(create_app(settings))
    await add_people(server.app)
    await import_file(ROOT / "data" / "demo_portfolio.csv", server.app[K.DEBTORS])
    return Console(server, aiohttp_client, settings, server.app[K.REDIS])
