"""Admins keep the accounts: add, disable (their sessions end at once), enable."""

from __future__ import annotations

import re

import pytest

from tests.service.console_support import PASSWORD, submit_login

pytestmark = pytest.mark.asyncio


async def test_an_admin_adds_a_person_who_can_then_log_in(console):
    ada = await console.login("ada")
    response = await ada.post("/console/users", csrf=False,
                              data={"csrf": ada.csrf, "username": "zoe", "role": "agent",
                                    "password": "a long first password"})
    assert response.status == 200 and "zoe (agent) added" in await response.text()
    assert (await submit_login(await console.client(), "zoe", "a long first password")).status == 302


@pytest.mark.parametrize("username, role, password, error", [
    ("Zoe!", "agent", "a long first password", "username"),
    ("zoe", "boss", "a long first password", "role must be one of"),
    ("zoe", "agent", "short", "at least 12"),
    ("alice", "agent", "a long first password", "already exists"),
])
async def test_bad_accounts_are_refused_with_the_reason(console, username, role, password, error):
    ada = await console.login("ada")
    response = await ada.post("/console/users", csrf=False, data={
        "csrf": ada.csrf, "username": username, "role": role, "password": password})
    assert response.status == 400 and error in await response.text()


async def test_disabling_ends_every_session_of_that_person(console):
    alice, ada = await console.login("alice"), await console.login("ada")
    assert (await alice.get("/console/api/inbox")).status == 200
    response = await ada.post("/console/users/alice/disable")
    assert response.status == 200 and re.search(r"alice disabled; 1 session", await response.text())
    assert (await alice.get("/console/api/inbox")).status == 401
    assert (await submit_login(await console.client(), "alice", PASSWORD)).status == 401
    await ada.post("/console/users/alice/enable")
    assert (await submit_login(await console.client(), "alice", PASSWORD)).status == 302


async def test_an_admin_cannot_disable_themselves(console):
    ada = await console.login("ada")
    response = await ada.post("/console/users/ada/disable")
    assert response.status == 400 and "cannot disable yourself" in await response.text()


async def test_a_password_change_ends_the_other_sessions(console):
    here, there = await console.login("alice"), await console.login("alice")
    response = await here.post("/console/account/password", csrf=False, data={
        "csrf": here.csrf, "current": PASSWORD, "new": "an even longer password", "repeat": "an even longer password"})
    assert response.status == 200 and "Password changed" in await response.text()
    assert (await there.get("/console/api/inbox")).status == 401
    assert (await here.get("/console/api/inbox")).status == 200
    wrong = await here.post("/console/account/password", csrf=False, data={
        "csrf": re.search(r'name="csrf-token" content="([^"]+)"', await response.text()).group(1),
        "current": "not it at all", "new": "x" * 12, "repeat": "x" * 12})
    assert wrong.status == 400
