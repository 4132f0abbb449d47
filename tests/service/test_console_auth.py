"""The console's doors: login, sessions, CSRF, throttling, roles — through the real gateway app
on a real Redis, with cookies as a browser keeps them."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from service import appkeys as K
from service.audit import AuditLog
from service.console import auth
from service.gateway import create_app
from service.users import Users
from tests.service.console_support import PASSWORD, PEOPLE, ROLE_USER, add_people, console_settings, submit_login

pytestmark = pytest.mark.asyncio


async def audit_actions(console) -> list[tuple[str, str]]:
    log = AuditLog(console.redis, console.app[K.KEYS], console.settings.pseudonym_key)
    return [(e["actor"], e["action"]) for e in await log.entries()]


async def page_csrf(client) -> str:
    import re
    html = await (await client.get("/console/account")).text()
    return re.search(r'<meta name="csrf-token" content="([^"]*)"', html).group(1)


def session_cookie(client, name="nudge_console"):
    for cookie in client.session.cookie_jar:
        if cookie.key == name:
            return cookie.value
    return None


async def test_login_starts_a_fresh_session_with_a_strict_http_only_cookie(console):
    client = await console.client()
    # a session id planted before login (session fixation) is never adopted
    client.session.cookie_jar.update_cookies({"nudge_console": "planted-by-someone-else"})
    response = await submit_login(client, "alice", PASSWORD)
    assert response.status == 302 and response.headers["Location"] == "/console/inbox"
    set_cookie = [h for h in response.headers.getall("Set-Cookie") if h.startswith("nudge_console=")][0]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    first = set_cookie.split(";")[0].split("=", 1)[1]
    assert first and first != "planted-by-someone-else"
    client.session.cookie_jar.clear(lambda cookie: cookie.value == "planted-by-someone-else")
    # the next login is a new id again, and the old session is gone from the server
    await client.post("/console/logout", headers={"X-CSRF-Token": await page_csrf(client)})
    await submit_login(client, "alice", PASSWORD)
    second = session_cookie(client)
    assert second and first != second
    assert not await console.redis.exists(console.app[K.KEYS].console_session(auth.digest(first)))
    assert ("alice", "login.success") in await audit_actions(console)


async def test_secure_deployments_get_a_secure_host_prefixed_cookie(aiohttp_client, redis_url):
    app = create_app(console_settings(redis_url, NUDGE_SECURE_COOKIES="1"))
    client = await aiohttp_client(app)
    await add_people(app, {"alice": "agent"})
    # the test client speaks http, so it keeps no Secure cookie: carry the login cookie by hand
    form = await client.get("/console/login")
    login_cookie = form.headers["Set-Cookie"]
    assert login_cookie.startswith("nudge_login=") and "Secure" in login_cookie
    token = login_cookie.split(";")[0].split("=", 1)[1]
    response = await client.post("/console/login", allow_redirects=False,
                                 headers={"Cookie": f"nudge_login={token}"},
                                 data={"csrf": token, "username": "alice", "password": PASSWORD})
    assert response.status == 302
    set_cookie = [h for h in response.headers.getall("Set-Cookie") if "nudge_console=" in h][0]
    assert set_cookie.startswith("__Host-nudge_console=")
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie


async def test_wrong_password_is_refused_counted_and_then_throttled(console):
    client = await console.client()
    for _ in range(5):
        response = await submit_login(client, "alice", "wrong password here")
        assert response.status == 401
        assert "Unknown user or wrong password" in await response.text()
    # the sixth try is refused without looking at the password, even the right one
    response = await submit_login(client, "alice", PASSWORD)
    assert response.status == 429
    assert "Too many failed attempts" in await response.text()
    actions = await audit_actions(console)
    assert actions.count(("alice", "login.failed")) == 5
    assert ("alice", "login.throttled") in actions
    # another person from the same address is not locked out by alice's failures (yet)
    assert (await submit_login(client, "bob", PASSWORD)).status == 302


async def test_one_address_guessing_many_usernames_is_throttled(aiohttp_client, redis_url):
    app = create_app(console_settings(redis_url, NUDGE_LOGIN_MAX_FAILURES_PER_ADDRESS="3"))
    client = await aiohttp_client(app)
    await add_people(app)
    for name in ("x1", "x2", "x3"):
        assert (await submit_login(client, name, "nope nope nope")).status == 401
    assert (await submit_login(client, "alice", PASSWORD)).status == 429


async def test_unknown_user_and_wrong_password_look_the_same(console):
    client = await console.client()
    unknown = await submit_login(client, "nobody", PASSWORD)
    wrong = await submit_login(client, "alice", "not the password")
    assert unknown.status == wrong.status == 401
    assert "Unknown user or wrong password" in await unknown.text()
    assert "Unknown user or wrong password" in await wrong.text()


async def test_the_login_form_needs_its_token(console):
    client = await console.client()
    await client.get("/console/login")
    response = await client.post("/console/login", allow_redirects=False,
                                 data={"username": "alice", "password": PASSWORD})
    assert response.status == 403
    assert session_cookie(client) is None


async def test_logout_ends_the_session_on_the_server(console):
    alice = await console.login("alice")
    old = session_cookie(alice.client)
    response = await alice.post("/console/logout")
    assert response.status == 302
    # replaying the old cookie (say, a copy of it) gets nothing
    other = await console.client()
    other.session.cookie_jar.update_cookies({"nudge_console": old})
    response = await other.get("/console/api/inbox")
    assert response.status == 401
    assert "expired" in (await response.json())["error"]


async def test_logout_needs_the_csrf_token(console):
    alice = await console.login("alice")
    assert (await alice.post("/console/logout", csrf=None)).status == 403
    assert (await alice.get("/console/api/inbox")).status == 200


async def test_an_idle_session_expires(aiohttp_client, redis_url):
    app = create_app(console_settings(redis_url, NUDGE_CONSOLE_IDLE_MINUTES="0.02"))  # 1.2 s
    client = await aiohttp_client(app)
    await add_people(app, {"alice": "agent"})
    assert (await submit_login(client, "alice", PASSWORD)).status == 302
    assert (await client.get("/console/api/inbox")).status == 200
    await asyncio.sleep(1.6)
    response = await client.get("/console/inbox", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"].startswith("/console/login?next=")
    assert "inbox" in response.headers["Location"] and "expired=1" in response.headers["Location"]
    page = await client.get(response.headers["Location"])
    assert "Your session has expired" in await page.text()


async def test_a_session_ends_at_its_absolute_limit_even_when_busy(console):
    alice = await console.login("alice")
    key = console.app[K.KEYS].console_session(auth.digest(session_cookie(alice.client)))
    await console.redis.hset(key, "created", time.time() - 12 * 3600 - 5)
    response = await alice.get("/console/api/inbox")
    assert response.status == 401
    assert not await console.redis.exists(key)


async def test_a_disabled_person_is_out_at_their_next_request(console):
    alice = await console.login("alice")
    await Users(console.redis, console.app[K.KEYS]).disable("alice")
    assert (await alice.get("/console/api/inbox")).status == 401
    assert (await submit_login(await console.client(), "alice", PASSWORD)).status == 401


async def test_after_login_only_our_own_pages_are_a_destination(console):
    for target, expected in (("/console/templates", "/console/templates"),
                             ("//evil.example/console/", "/console/inbox"),
                             ("https://evil.example/", "/console/inbox"),
                             ("/console/\\evil", "/console/inbox")):
        response = await submit_login(await console.client(), "alice", PASSWORD, next=target)
        assert response.headers["Location"] == expected, target


async def test_every_console_response_carries_the_security_headers(console):
    client = await console.client()
    for path in ("/console/login", "/console/inbox", "/console/static/console.css"):
        response = await client.get(path, allow_redirects=False)
        assert "script-src 'self'" in response.headers["Content-Security-Policy"], path
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_home_sends_each_role_to_its_page(console):
    for role, page in auth.HOME.items():
        person = await console.as_role(role)
        response = await person.get("/console/")
        assert response.headers["Location"] == page
        # and the navigation shows only what the role may open
        html = await (await person.get(page, allow_redirects=True)).text()
        for _label, path, permission in auth.NAV:
            assert (f'href="{path}"' in html) == (role in auth.PERMISSIONS[permission]), (role, path)


# --- every route, every role ---------------------------------------------------------------
PUBLIC = {"/console", "/console/", "/console/login", "/console/logout"}
SAMPLE = {"conversation_id": "D-EN-001", "number": "1", "username": "bob", "state": "hardship"}


def console_routes(app: web.Application):
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix") or ""
        if not path.startswith("/console") or route.method == "HEAD":
            continue
        if path.startswith("/console/static"):
            continue
        yield route.method, path, getattr(route.handler, "permission", None)


def concrete(path: str) -> str:
    # a chart's name, or a template file's
    path = path.replace("/charts/{name}", "/charts/funnel").replace("{name}", "en/reminder_first.soft.j2")
    for name, value in SAMPLE.items():
        path = path.replace("{" + name + "}", value)
    return path


async def test_every_console_route_is_guarded_by_a_permission(console):
    unguarded = [(m, p) for m, p, permission in console_routes(console.app)
                 if permission is None and p not in PUBLIC]
    assert unguarded == []


async def test_each_role_against_each_action(console):
    people = {role: await console.as_role(role) for role in ROLE_USER}
    checked = 0
    for method, path, permission in console_routes(console.app):
        if permission is None:
            continue
        url = concrete(path)
        for role, person in people.items():
            if method == "GET":
                response = await person.get(url)
            else:
                response = await person.post(url, json={})
            status = response.status
            response.close()
            if role in auth.PERMISSIONS[permission]:
                assert status not in (401, 403), (role, method, url, status)
            else:
                assert status == 403, (role, method, url, status)
            checked += 1
    assert checked >= 20
    refusals = [a for a in await audit_actions(console) if a[1] == "access.refused"]
    assert refusals, "refused actions are audited"


async def test_no_state_change_without_the_csrf_token(console):
    people = {role: await console.as_role(role) for role in ROLE_USER}
    for method, path, permission in console_routes(console.app):
        if method == "GET" or permission is None:
            continue
        role = sorted(auth.PERMISSIONS[permission])[0]
        for token in (None, "forged-token"):
            response = await people[role].post(concrete(path), json={}, csrf=token)
            assert response.status == 403, (path, token)
            assert "security token" in (await response.json())["error"]


async def test_without_a_session_pages_redirect_and_apis_answer_401(console):
    client = await console.client()
    for method, path, permission in console_routes(console.app):
        if permission is None:
            continue
        response = await client.request(method, concrete(path), allow_redirects=False, json={})
        if method == "GET" and not auth.wants_json(response.request_info.url and
                                                   type("R", (), {"path": concrete(path)})()):
            assert response.status == 302, path
            assert response.headers["Location"].startswith("/console/login?next=")
        else:
            assert response.status == 401, (method, path)
        response.close()


async def test_everyone_named_in_the_fixture_has_a_real_role():
    assert set(PEOPLE.values()) == set(ROLE_USER)
