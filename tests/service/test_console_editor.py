"""The template editor through the gateway's real app on a real Redis: every route against
every role, CSRF, sessions, four eyes, previews, and an approved text used by the next render
without a restart. People log in through the real form (tests/service/console_support.py)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from service import appkeys as K
from service.audit import AuditLog
from service.console import auth
from service.templates import TemplateRenderer
from tests.service.console_support import ROLE_USER

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[2] / "message_templates"
NAME = "en/help_reply.j2"
API = f"/console/api/templates/{NAME}"
ROLES = tuple(ROLE_USER)
VIEW, EDIT, APPROVE = {"supervisor", "manager", "admin"}, {"manager"}, {"manager", "admin"}


def edited(marker: str = "Edited in the console.") -> str:
    return (ROOT / NAME).read_text().replace("This is the messaging service",
                                             f"{marker} This is the messaging service", 1)


# method, path, body, roles allowed: every editor route (the page and API paths are concrete)
ROUTES = [
    ("GET", "/console/templates", None, VIEW),
    ("GET", f"/console/templates/{NAME}", None, VIEW),
    ("GET", "/console/api/templates", None, VIEW),
    ("GET", API, None, VIEW),
    ("POST", f"{API}/preview", {"text": "x"}, VIEW),
    ("GET", f"{API}/versions/1", None, VIEW),
    ("GET", f"{API}/diff?a=0&b=1", None, VIEW),
    ("POST", f"{API}/versions", {"text": edited("Proposed by a test.")}, EDIT),
    ("POST", f"{API}/versions/1/reject", {}, APPROVE),
    ("POST", f"{API}/versions/2/approve", {}, APPROVE),
    ("POST", f"{API}/versions/2/rollback", {}, APPROVE),
]


async def audit_actions(console) -> list[tuple[str, str]]:
    log = AuditLog(console.redis, console.app[K.KEYS], console.settings.pseudonym_key)
    return [(e["actor"], e["action"]) for e in await log.entries()]


async def propose(person, text: str | None = None, note: str = "") -> dict:
    response = await person.post(f"{API}/versions", json={"text": text or edited(), "note": note})
    assert response.status == 201, await response.text()
    return await response.json()


async def live_body(console) -> str:
    renderer = TemplateRenderer(console.settings.templates_dir, live_check_seconds=0)
    await renderer.refresh_live(console.redis, console.app[K.KEYS])
    return renderer.render("help_reply", channel="sms", language="en",
                           variables={"first_name": "Anna", "unsubscribe_url": "https://x/u"}).body


# --- who may do what ------------------------------------------------------------------------
async def test_every_editor_route_is_declared_with_its_permission(console):
    declared = {}
    for route in console.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path") or ""
        if "templates" in path and route.method != "HEAD":
            declared[(route.method, path)] = route.handler.permission
    assert declared == {
        ("GET", "/console/templates"): "templates.view",
        ("GET", "/console/templates/{name}"): "templates.view",
        ("GET", "/console/api/templates"): "templates.view",
        ("GET", "/console/api/templates/{name}"): "templates.view",
        ("POST", "/console/api/templates/{name}/preview"): "templates.view",
        ("POST", "/console/api/templates/{name}/versions"): "templates.edit",
        ("GET", "/console/api/templates/{name}/versions/{number}"): "templates.view",
        ("GET", "/console/api/templates/{name}/diff"): "templates.view",
        ("POST", "/console/api/templates/{name}/versions/{number}/approve"): "templates.approve",
        ("POST", "/console/api/templates/{name}/versions/{number}/reject"): "templates.approve",
        ("POST", "/console/api/templates/{name}/versions/{number}/rollback"): "templates.rollback",
    }
    for permission, roles in (("templates.view", VIEW), ("templates.edit", EDIT),
                              ("templates.approve", APPROVE), ("templates.rollback", APPROVE)):
        assert auth.PERMISSIONS[permission] == roles


async def test_each_role_against_each_action(console):
    people = {role: await console.as_role(role) for role in ROLES}
    await propose(await console.login("max"), edited("Version one."))   # v1 pending, by max
    await propose(await console.login("max"), edited("Version two."))   # v2 pending, by max
    checked = 0
    for method, path, body, allowed in ROUTES:
        for role in ROLES:
            person = people[role]
            response = await (person.get(path) if method == "GET" else person.post(path, json=body))
            status = response.status
            response.close()
            if role in allowed:
                assert status not in (401, 403), (role, method, path, status)
            else:
                assert status == 403, (role, method, path, status)
            checked += 1
    assert checked == len(ROUTES) * len(ROLES)
    refused = [actor for actor, action in await audit_actions(console) if action == "access.refused"]
    assert refused.count("alice") == len(ROUTES)           # the agent: refused everywhere, audited
    assert refused.count("sam") == 4                        # the supervisor: every change
    assert refused.count("ada") == 1                        # the admin: proposing


async def test_no_change_without_the_csrf_token(console):
    await propose(await console.login("max"))
    maria = await console.login("maria")
    for method, path, body, _allowed in ROUTES:
        if method != "POST":
            continue
        for token in (None, "forged-token", ""):
            response = await maria.post(path, json=body, csrf=token)
            assert response.status == 403, (path, token)
            assert "security token" in (await response.json())["error"]
    history = await (await maria.get(API)).json()
    assert [(v["number"], v["status"]) for v in history["versions"]] == [(0, "live"), (1, "pending")]
    assert ("maria", "csrf.refused") in await audit_actions(console)


async def test_without_a_session_pages_redirect_and_apis_answer_401(console):
    client = await console.client()
    for method, path, body, _allowed in ROUTES:
        response = await client.request(method, path, json=body, allow_redirects=False)
        if method == "GET" and not path.startswith("/console/api/"):
            assert response.status == 302, path
            assert response.headers["Location"].startswith("/console/login?next=")
        else:
            assert response.status == 401, (method, path)
        response.close()


async def test_an_expired_session_is_told_so(console):
    maria = await console.login("maria")
    keys = console.app[K.KEYS]
    async for key in console.redis.scan_iter(match=keys.console_session("*")):
        await console.redis.delete(key)
    page = await maria.get("/console/templates")
    assert page.status == 302 and "expired=1" in page.headers["Location"]
    response = await maria.post(f"{API}/versions", json={"text": edited()})
    assert response.status == 401
    assert "expired" in (await response.json())["error"]
    assert not await console.redis.exists(keys.template_versions(NAME))


# --- four eyes, live without restart, rollback ------------------------------------------------
async def test_four_eyes_and_the_next_render_uses_the_approved_text(console):
    maria, max_, ada = [await console.login(n) for n in ("maria", "max", "ada")]
    version = await propose(maria, note="friendlier")
    assert (version["number"], version["status"], version["author"]) == (1, "pending", "maria")

    own = await maria.post(f"{API}/versions/1/approve", json={})
    assert own.status == 403
    assert (await own.json())["error"] == "four eyes: you cannot approve your own edit"
    assert (await live_body(console)).startswith("This is the messaging service")

    approved = await max_.post(f"{API}/versions/1/approve", json={})
    assert approved.status == 200, await approved.text()
    assert (await approved.json())["decided_by"] == "max"
    # no restart: a renderer that was running all along reads the new text at its next render
    assert (await live_body(console)).startswith("Edited in the console.")

    again = await ada.post(f"{API}/versions/1/approve", json={})
    assert again.status == 409

    rolled = await ada.post(f"{API}/versions/0/rollback", json={"note": "back to the file"})
    assert rolled.status == 201
    assert (await rolled.json())["rollback_of"] == 0
    assert (await live_body(console)).startswith("This is the messaging service")
    assert (await ada.post(f"{API}/versions/0/rollback", json={})).status == 409

    back = await ada.post(f"{API}/versions/1/rollback", json={})
    assert back.status == 201
    assert (await live_body(console)).startswith("Edited in the console.")

    actions = [a for a in await audit_actions(console) if a[1].startswith("template.")]
    assert actions == [("maria", "template.propose"), ("maria", "template.approve_refused"),
                       ("max", "template.approve"), ("ada", "template.rollback"),
                       ("ada", "template.rollback")]


async def test_reject_withdraw_and_stale_drafts(console):
    maria, max_ = await console.login("maria"), await console.login("max")
    await propose(maria, edited("One."))
    await propose(max_, edited("Two."))
    await propose(maria, edited("Three."))
    rejected = await max_.post(f"{API}/versions/1/reject", json={"reason": "too chatty"})
    assert (await rejected.json())["status"] == "rejected"
    withdrawn = await max_.post(f"{API}/versions/2/reject", json={})
    assert (await withdrawn.json())["decided_by"] == "max"
    assert (await max_.post(f"{API}/versions/1/approve", json={})).status == 409
    await max_.post(f"{API}/versions/3/approve", json={})
    await propose(maria, edited("Four."))                     # v4, on v3
    assert (await maria.post(f"{API}/versions/3/rollback", json={})).status == 409  # live already
    stale_base = await propose(max_, edited("Five."))         # v5, on v3
    await (await console.login("ada")).post(f"{API}/versions/4/approve", json={})
    stale = await maria.post(f"{API}/versions/{stale_base['number']}/approve", json={})
    assert stale.status == 409
    assert "propose it again" in (await stale.json())["error"]
    detail = await (await maria.get(API)).json()
    assert {v["number"]: (v["status"], v["stale"]) for v in detail["versions"]} == {
        0: ("file", False), 1: ("rejected", False), 2: ("rejected", False), 3: ("superseded", False),
        4: ("live", False), 5: ("pending", True)}
    assert detail["versions"][5]["actions"] == {"approve": False, "reject": True, "rollback": False}


async def test_a_draft_with_errors_is_refused_with_every_issue(console):
    maria = await console.login("maria")
    response = await maria.post(f"{API}/versions", json={
        "text": "Pay now or the police will come.\n{{ amount_due }}\n"})
    assert response.status == 422
    body = await response.json()
    codes = {issue["code"] for issue in body["issues"]}
    assert {"threat_phrase", "undefined_variable", "missing_optout"} <= codes
    assert all(issue["text"] for issue in body["issues"])
    assert not await console.redis.exists(console.app[K.KEYS].template_versions(NAME))
    for bad in ({"text": 5}, {"note": "x"}, {"text": "x" * 20001}, {"text": "ok", "note": "n" * 501}):
        assert (await maria.post(f"{API}/versions", json=bad)).status == 400, bad
    assert (await maria.post(f"{API}/versions", data="not json",
                             headers={"Content-Type": "application/json"})).status == 400
    unchanged = await maria.post(f"{API}/versions", json={"text": (ROOT / NAME).read_text()})
    assert unchanged.status == 422


async def test_sandbox_escapes_and_bombs_are_refused_not_run(console):
    maria = await console.login("maria")
    footer = '{% include "en/_footer.j2" %}\n'
    for text, words in (("{{ first_name.__class__.__mro__ }}\n" + footer, "private"),
                        ('{{ "{0.__class__}".format(first_name) }}\n' + footer, "str.format"),
                        ("{{ range(10**9)|list }}\n" + footer, "range()"),
                        ("{% for a in range(999) %}{% for b in range(999) %}{% endfor %}{% endfor %}\n"
                         + footer, "steps")):
        start = time.monotonic()
        response = await maria.post(f"{API}/versions", json={"text": text})
        assert response.status == 422, text
        assert words in json_text(await response.json()), text
        shown = await (await maria.post(f"{API}/preview", json={"text": text})).json()
        assert words in json_text(shown), text
        assert time.monotonic() - start < 10


def json_text(value) -> str:
    import json
    return json.dumps(value)


# --- previews ---------------------------------------------------------------------------------
async def test_preview_with_a_sample_debtor_per_segment_and_sms_facts(console):
    sam = await console.login("sam")   # a supervisor may look, not edit
    name = "en/balance.j2"
    text = (ROOT / name).read_text()
    for segment in ("early", "late_high"):
        response = await sam.post(f"/console/api/templates/{name}/preview", json={
            "text": text, "channel": "sms", "segment": segment, "jurisdiction": "UK"})
        assert response.status == 200, await response.text()
        data = await response.json()
        render, debtor = data["render"], data["debtor"]
        assert debtor["segment"] == segment
        assert render["error"] is None and render["issues"] == [] and data["static"] == []
        assert f"{debtor['amount']}" in render["body"].replace(",", "")
        assert debtor["creditor"].rstrip(".") in render["body"]
        assert (render["encoding"], render["characters"]) == ("GSM-7", len(render["body"]))
        assert render["segments"] >= 1
    late_high = data["debtor"]
    assert float(late_high["amount"]) >= 1000 and late_high["days_past_due"] > 90

    # a draft with a curly quote: UCS-2 is named (SMS replaces it), a threat is listed
    response = await sam.post(f"/console/api/templates/{NAME}/preview", json={
        "text": "Wir rufen sonst die Polizei. ✓\n{% include 'en/_footer.j2' %}\n", "channel": "sms"})
    data = await response.json()
    assert data["render"]["encoding"] == "UCS-2" and "✓" in data["render"]["non_gsm"]
    assert {i["code"] for i in data["static"]} == {"threat_phrase"}


async def test_a_partial_is_previewed_through_a_template_that_uses_it(console):
    maria = await console.login("maria")
    name = "en/_footer.j2"
    text = "Questions? Reply here.\n" + (ROOT / name).read_text()
    data = await (await maria.post(f"/console/api/templates/{name}/preview", json={
        "text": text, "channel": "email", "via": "en/balance.j2"})).json()
    assert data["via"] == "en/balance.j2"
    assert "Questions? Reply here." in data["render"]["body"]
    assert data["render"]["subject"]
    default = await (await maria.post(f"/console/api/templates/{name}/preview", json={
        "text": text})).json()
    assert default["via"] in default["users"]


async def test_preview_input_is_checked(console):
    sam = await console.login("sam")
    for body in ({"text": "x", "channel": "fax"}, {"text": "x", "segment": "vip"},
                 {"text": "x", "jurisdiction": "FR"}, {"channel": "sms"},
                 {"text": "x", "via": "de/balance.j2"}):
        response = await sam.post(f"{API}/preview", json=body)
        assert response.status == 400, body
    assert (await sam.post("/console/api/templates/en/nope.j2/preview", json={"text": "x"})).status == 404


# --- pages and reading APIs -------------------------------------------------------------------
async def test_browse_filters_and_shows_what_waits(console):
    await propose(await console.login("maria"))
    sam = await console.login("sam")
    page = await (await sam.get("/console/templates?language=en&pending=1")).text()
    assert f'href="/console/templates/{NAME}"' in page and "waiting" in page
    assert page.count('href="/console/templates/en/') == 1
    listed = await (await sam.get("/console/api/templates?key=reminder_second&tone=soft&channel=email")).json()
    assert [t["name"] for t in listed["templates"]] == [
        "de/reminder_second.soft.email.j2", "en/reminder_second.soft.email.j2",
        "nl/reminder_second.soft.email.j2"]
    partials = await (await sam.get("/console/api/templates?key=_partials&language=nl")).json()
    assert partials["templates"] and all(t["partial"] for t in partials["templates"])
    everything = await (await sam.get("/console/api/templates")).json()
    assert len(everything["templates"]) == len(list(ROOT.glob("*/*.j2")))


async def test_the_editor_page_per_role(console):
    maria = await console.login("maria")
    await propose(maria)
    page = await (await maria.get(f"/console/templates/{NAME}")).text()
    assert 'id="propose-form"' in page and "yours: another person approves" in page
    assert 'data-action="approve"' not in page                 # never on one's own edit
    max_page = await (await (await console.login("max")).get(f"/console/templates/{NAME}")).text()
    assert 'data-action="approve"' in max_page
    sam_page = await (await (await console.login("sam")).get(f"/console/templates/{NAME}")).text()
    assert 'id="propose-form"' not in sam_page and "readonly" in sam_page
    assert 'data-action="approve"' not in sam_page and 'data-action="rollback"' not in sam_page
    for html in (page, max_page, sam_page):   # the console's CSP allows no inline script
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
        assert '<script src="/console/static/editor.js"></script>' in html
    assert (await maria.get("/console/templates/en/nope.j2")).status == 404
    from_version = await (await maria.get(f"/console/templates/{NAME}?from=1")).text()
    assert "Edited in the console." in from_version and "starting from version 1" in from_version


async def test_whatsapp_content_sids_are_shown(console):
    sam = await console.login("sam")
    name = "en/reminder_second.soft.j2"
    page = await (await sam.get(f"/console/templates/{name}")).text()
    assert "HX2a7178a259e29fb1e375b777640bd95b" in page and "reminder_second.soft" in page
    detail = await (await sam.get(f"/console/api/templates/{name}")).json()
    assert detail["whatsapp"][0]["content_sid"] == "HX2a7178a259e29fb1e375b777640bd95b"
    email = await (await sam.get("/console/api/templates/en/reminder_second.soft.email.j2")).json()
    assert email["whatsapp"] == [] and email["serves"] == [["soft", "email"]]


async def test_history_version_and_diff(console):
    maria = await console.login("maria")
    await propose(maria, note="why not")
    version = await (await maria.get(f"{API}/versions/1")).json()
    assert version["text"] == edited() and version["note"] == "why not"
    diff = await (await maria.get(f"{API}/diff?a=0&b=1")).json()
    assert "+Edited in the console." in diff["diff"] and diff["diff"].startswith(f"--- {NAME} v0")
    assert (await maria.get(f"{API}/versions/9")).status == 404
    assert (await maria.get(f"{API}/diff?a=zero")).status == 400
    static = await maria.get("/console/static/editor.js")
    assert static.status == 200
