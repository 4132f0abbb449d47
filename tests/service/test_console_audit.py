"""The audit log in the console, through the gateway's real app on a real Redis: admins only,
newest first, filters, paging by entry id, the CSV export, and every view audited itself.
Entries are written by the real AuditLog; people log in through the real form."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from service import appkeys as K
from service.audit import AuditLog
from tests.service.console_support import ROLE_USER

pytestmark = pytest.mark.asyncio

PAGE, CSV = "/console/audit", "/console/audit.csv"


def audit_log(console) -> AuditLog:
    return AuditLog(console.redis, console.app[K.KEYS], console.settings.pseudonym_key)


async def fill(console, n: int = 120) -> list[str]:
    """`n` entries, oldest first: cycling actors and actions, every third about a debtor."""
    log = audit_log(console)
    ids = []
    for i in range(n):
        actor = ("sam", "maria", "system")[i % 3]
        action = ("stop_state.set", "conversation.claim", "template.approve", "login.failed")[i % 4]
        debtor = "D-EN-001" if i % 3 == 0 else None
        ids.append(await log.record(actor, action, debtor_id=debtor, n=i))
    return ids


def entry_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="e-([0-9]+-[0-9]+)">', html)


def numbers(html: str) -> list[int]:
    return [int(n) for n in re.findall(r"n=([0-9]+)", html)]


# --- who may see it --------------------------------------------------------------------------
async def test_only_admins_read_or_export_the_audit_log(console):
    await fill(console, 5)
    for role in ROLE_USER:
        person = await console.as_role(role)
        for path in (PAGE, CSV):
            response = await person.get(path)
            assert response.status == (200 if role == "admin" else 403), (role, path)
            response.close()
    entries = await audit_log(console).entries()
    refused = [(e["actor"], e["detail"]["path"]) for e in entries if e["action"] == "access.refused"]
    assert sorted(refused) == sorted((ROLE_USER[r], p) for r in ("agent", "supervisor", "manager")
                                     for p in (PAGE, CSV))


async def test_without_a_session_or_with_an_expired_one(console):
    client = await console.client()
    response = await client.get(PAGE + "?actor=sam", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"].startswith("/console/login?next=")
    response = await client.get(CSV, allow_redirects=False)
    assert response.status == 401
    ada = await console.as_role("admin")
    for key in await console.redis.keys(console.app[K.KEYS].console_session("*")):
        await console.redis.delete(key)
    response = await ada.get(PAGE)
    assert response.status == 302 and "expired=1" in response.headers["Location"]
    response = await ada.get(CSV)
    assert response.status == 401 and "expired" in (await response.json())["error"]


async def test_the_audit_view_changes_nothing_and_a_post_needs_the_csrf_token(console):
    ada = await console.as_role("admin")
    response = await ada.post(PAGE, csrf=None)
    assert response.status == 403 and "security token" in (await response.json())["error"]
    assert (await ada.post(PAGE)).status == 405
    assert any(e["action"] == "csrf.refused" and e["actor"] == "ada"
               for e in await audit_log(console).entries())


# --- newest first, paging, filters -----------------------------------------------------------
async def test_newest_first_in_pages_by_entry_id(console):
    ada = await console.as_role("admin")                 # logged in before the 120
    ids = await fill(console, 120)
    html = await (await ada.get(PAGE)).text()
    shown = entry_ids(html)
    assert len(shown) == 50
    assert shown[0] > ids[-1]                            # this view itself, the newest entry
    assert "audit.view" in html.split("</tr>")[1]
    assert shown[1:] == ids[::-1][:49]                   # then newest first
    older = re.search(r'href="(/console/audit\?before=[^"]+)" rel="next"', html).group(1)
    assert older.endswith(ids[-49])
    page2 = await (await ada.get(older.replace("&amp;", "&"))).text()
    assert entry_ids(page2) == ids[::-1][49:99]
    assert "« Newest" in page2
    older = re.search(r'href="(/console/audit\?before=[^"]+)" rel="next"', page2).group(1)
    page3 = await (await ada.get(older)).text()
    # the last 21, then ada's login before them; and then the end: no "Older" link
    assert entry_ids(page3)[:21] == ids[::-1][99:] and len(entry_ids(page3)) == 22
    assert "login.success" in page3 and 'rel="next"' not in page3
    small = await (await ada.get(PAGE + "?limit=10")).text()
    assert len(entry_ids(small)) == 10 and "limit=10" in small


async def test_filters_by_actor_action_and_debtor(console):
    await fill(console, 120)
    ada = await console.as_role("admin")
    html = await (await ada.get(PAGE + "?actor=maria&limit=200")).text()
    assert numbers(html) == [i for i in range(119, -1, -1) if i % 3 == 1]
    # an action prefix finds its sub-actions: "login" is login.failed (and ada's login.success)
    html = await (await ada.get(PAGE + "?action=login&limit=200")).text()
    actions = re.findall(r"<code>([a-z_.]+)</code>", html)
    assert set(actions) == {"login.failed", "login.success"} and actions.count("login.failed") == 30
    html = await (await ada.get(PAGE + "?action=stop_state.set&actor=sam&limit=200")).text()
    assert numbers(html) == [i for i in range(119, -1, -1) if i % 4 == 0 and i % 3 == 0]
    html = await (await ada.get(PAGE + "?debtor=D-EN-001&limit=200")).text()
    # the debtor's entries, and the view that asked for them (in that debtor's trail)
    assert numbers(html) == [i for i in range(119, -1, -1) if i % 3 == 0]
    assert html.count("<td>D-EN-001</td>") == 41 and "audit.view" in html
    assert 'value="D-EN-001"' in html
    html = await (await ada.get(PAGE + "?actor=nobody")).text()
    assert entry_ids(html) == [] and "No entries match these filters" in html


async def test_bad_paging_parameters_are_refused(console):
    ada = await console.as_role("admin")
    for query in ("before=latest", "before=1-2-3", "limit=0", "limit=500", "limit=ten",
                  "actor=" + "x" * 101):
        response = await ada.get(f"{PAGE}?{query}")
        assert response.status == 400, query
        assert "<td" not in await response.text()


# --- the export ------------------------------------------------------------------------------
async def test_csv_export_with_the_same_filters(console):
    ada = await console.as_role("admin")
    ids = await fill(console, 120)
    response = await ada.get(CSV)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert re.match(r'attachment; filename="audit-\d{8}T\d{6}Z\.csv"',
                    response.headers["Content-Disposition"])
    assert response.headers["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert list(rows[0]) == ["id", "at", "actor", "action", "debtor_id", "subject", "detail"]
    assert rows[0]["action"] == "audit.export"                  # the export, audited first
    assert [r["id"] for r in rows[1:121]] == ids[::-1]
    assert rows[-1]["action"] == "login.success" and len(rows) == 122
    first = next(r for r in rows if r["id"] == ids[0])
    assert (first["actor"], first["action"], first["debtor_id"]) == ("sam", "stop_state.set", "D-EN-001")
    assert first["subject"].startswith("p-") and json.loads(first["detail"]) == {"n": 0}

    filtered = await (await ada.get(CSV + "?actor=maria&action=conversation")).text()
    rows = list(csv.DictReader(io.StringIO(filtered)))
    assert {(r["actor"], r["action"]) for r in rows} == {("maria", "conversation.claim")}
    assert len(rows) == 10                                      # i % 3 == 1 and i % 4 == 1


async def test_csv_cells_are_never_spreadsheet_formulas(console):
    await audit_log(console).record("=HYPERLINK(\"http://x\")", "-cmd", note="@SUM(A1)")
    ada = await console.as_role("admin")
    rows = list(csv.DictReader(io.StringIO(await (await ada.get(CSV)).text())))
    row = next(r for r in rows if "HYPERLINK" in r["actor"])
    assert row["actor"].startswith("'=") and row["action"] == "'-cmd"
    assert row["detail"] == '{"note": "@SUM(A1)"}'               # JSON: starts with {


# --- viewing is audited ----------------------------------------------------------------------
async def test_every_view_and_export_is_itself_audited_with_its_filters(console):
    await fill(console, 6)
    ada = await console.as_role("admin")
    await ada.get(PAGE + "?actor=sam&action=stop_state")
    await ada.get(PAGE + "?debtor=D-EN-001")
    await ada.get(CSV + "?action=login")
    entries = [e for e in await audit_log(console).entries() if e["actor"] == "ada"]
    views = [(e["action"], e.get("detail"), e.get("debtor_id")) for e in entries
             if e["action"].startswith("audit.")]
    assert views == [
        ("audit.view", {"filters": {"actor": "sam", "action": "stop_state"}}, None),
        ("audit.view", None, "D-EN-001"),                   # in the debtor's own trail
        ("audit.export", {"filters": {"action": "login"}}, None)]
    trail = await audit_log(console).entries(debtor_id="D-EN-001")
    assert trail[-1]["action"] == "audit.view" and trail[-1]["actor"] == "ada"


async def test_looking_up_an_erased_debtor_does_not_link_them_again(console):
    log = audit_log(console)
    await log.record("sam", "stop_state.set", debtor_id="D-GONE-1", state="dispute")
    await log.forget_subject("D-GONE-1")                # what an erasure does
    ada = await console.as_role("admin")
    html = await (await ada.get(PAGE + "?debtor=D-GONE-1")).text()
    pseudonym = log.pseudonym("D-GONE-1")
    assert "stop_state.set" in html and pseudonym in html and "<td>D-GONE-1</td>" not in html
    assert not await console.redis.hexists(log.lookup_key, pseudonym)
    view = (await log.entries())[-1]
    assert view["action"] == "audit.view" and "subject" not in view
    assert view["detail"] == {"filters": {"subject": pseudonym}}
    # a mistyped id makes no link either
    await ada.get(PAGE + "?debtor=D-TYPO")
    assert not await console.redis.hexists(log.lookup_key, log.pseudonym("D-TYPO"))
