"""The results dashboard through the gateway's real app on a real Redis: who may see it, the
page, the charts as SVG, the JSON, the segment filter, the cache. The results are put in
through the real code (tests/service/results_data.py); people log in through the real form."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET

import pytest

from service import appkeys as K
from service.audit import AuditLog
from service.console import charts
from service.console.dashboard import DASHBOARD, queue_health
from service.conversations import ConversationStore
from tests.service.console_support import ROLE_USER
from tests.service.results_data import REPORT_AT, seed_results

pytestmark = pytest.mark.asyncio

SVG = "{http://www.w3.org/2000/svg}"
PAGE = "/console/dashboard"
API = "/console/api/dashboard"
PATHS = [PAGE, API, *[f"/console/dashboard/charts/{name}.svg" for name in charts.CHARTS]]
ALLOWED = {"supervisor", "manager", "admin"}


async def seeded(console):
    """The results in Redis, and the dashboard's clock at the report's moment."""
    made = await seed_results(console.redis, console.app[K.KEYS])
    console.app[DASHBOARD].clock = lambda: REPORT_AT
    return made


async def audit_actions(console) -> list[tuple[str, str]]:
    log = AuditLog(console.redis, console.app[K.KEYS], console.settings.pseudonym_key)
    return [(e["actor"], e["action"]) for e in await log.entries()]


# --- who may see it --------------------------------------------------------------------------
async def test_each_role_against_each_dashboard_route(console):
    await seeded(console)
    for role in ROLE_USER:
        person = await console.as_role(role)
        for path in PATHS:
            response = await person.get(path)
            expected = 200 if role in ALLOWED else 403
            assert response.status == expected, (role, path, response.status)
            response.close()
    refused = [a for a in await audit_actions(console) if a == ("alice", "access.refused")]
    assert len(refused) == len(PATHS)               # every refusal is audited


async def test_not_logged_in_pages_redirect_and_charts_and_json_answer_401(console):
    client = await console.client()
    response = await client.get(PAGE + "?segment=mid", allow_redirects=False)
    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith("/console/login?next=") and "dashboard" in location and "mid" in location
    for path in PATHS[1:]:
        response = await client.get(path, allow_redirects=False)
        assert response.status == 401, path
        assert (await response.json())["login"] == "/console/login"


async def test_an_expired_session_is_sent_to_log_in_again(console):
    sam = await console.as_role("supervisor")
    assert (await sam.get(PAGE)).status == 200
    for key in await console.redis.keys(console.app[K.KEYS].console_session("*")):
        await console.redis.delete(key)                 # the session idled out on the server
    response = await sam.get(PAGE)
    assert response.status == 302 and "expired=1" in response.headers["Location"]
    response = await sam.get("/console/dashboard/charts/funnel.svg")
    assert response.status == 401 and "expired" in (await response.json())["error"]


async def test_the_dashboard_changes_nothing_and_a_post_needs_the_csrf_token(console):
    maria = await console.as_role("manager")
    response = await maria.post(PAGE, csrf=None)
    assert response.status == 403
    assert "security token" in (await response.json())["error"]
    assert ("maria", "csrf.refused") in await audit_actions(console)
    assert (await maria.post(PAGE)).status == 405          # with the token: read-only all the same


# --- what it shows ---------------------------------------------------------------------------
async def test_the_page_has_every_chart_inline_and_the_numbers_in_tables(console):
    made = await seeded(console)
    maria = await console.as_role("manager")
    response = await maria.get(PAGE)
    assert response.status == 200
    html = await response.text()
    for name in charts.CHARTS:
        assert f'id="chart-{name}-title"' in html, name             # the inline SVG, labelled
        assert f'href="/console/dashboard/charts/{name}.svg"' in html
    assert "<script>" not in html and 'style="' not in html      # CSP: no inline script or style
    assert '<script src="/console/static/dashboard.js"></script>' in html
    assert 'href="/console/static/dashboard.css"' in html
    # the tables: early / loss_aversion converted 6 of 20, the holdout 2 of 8, the queue's five
    assert re.search(r'30\.0%</td><td class="num">1[0-9]\.[0-9]%–5[0-9]\.[0-9]%</td>\s*'
                     r'<td class="num">6 / 20', html)
    assert "holdout</span>" in html and "lift over holdout" in html
    for campaign_id in made.campaigns:
        assert f"<code>{campaign_id}</code>" in html
    assert "<dt>waiting for a person</dt><dd>5</dd>" in html
    assert "P0</span>" in html and "vulnerability" in html
    assert 'fill="#D55E00"' in html                          # loss_aversion's colour, everywhere
    for conversation_id in made.queue_ids:                    # volumes only: no one is named
        assert conversation_id not in html


async def test_each_chart_is_an_accessible_svg_with_its_labels(console):
    await seeded(console)
    sam = await console.as_role("supervisor")
    expected = {"funnel": ["early", "delivered", "success"],
                "conversion": ["holdout (soft)", "early"],
                "allocation": ["early", "mid"],
                "campaigns": ["Campaign progress"],
                "queue": ["P0 · vulnerability", "P2 · dispute"]}
    for name, labels in expected.items():
        response = await sam.get(f"/console/dashboard/charts/{name}.svg")
        assert response.status == 200
        assert response.content_type == "image/svg+xml"
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
        root = ET.fromstring(await response.read())
        assert root.tag == f"{SVG}svg" and root.get("role") == "img"
        assert root.find(f"{SVG}title").text and root.find(f"{SVG}desc").text
        words = [t.text for t in root.iter(f"{SVG}text")]
        for label in labels:
            assert label in words, (name, label)


async def test_the_json_is_the_report_and_the_queue(console):
    await seeded(console)
    ada = await console.as_role("admin")
    data = await (await ada.get(API)).json()
    assert [s["segment"] for s in data["report"]["segments"]] == ["early", "mid"]
    early = data["report"]["segments"][0]
    row = next(r for r in early["totals"] if r["tone"] == "loss_aversion")
    assert (row["conversion"]["count"], row["conversion"]["of"]) == (6, 20)
    assert len(data["report"]["campaigns"]) == 2
    queue = data["queue"]
    assert (queue["waiting"], queue["claimed"], queue["unclaimed"]) == (5, 2, 3)
    assert queue["by_reason"][0] == {"priority": 0, "reason": "vulnerability", "unclaimed": 1,
                                     "claimed": 0}
    assert "D-EN-001" not in str(queue)


async def test_the_segment_filter(console):
    await seeded(console)
    sam = await console.as_role("supervisor")
    data = await (await sam.get(API + "?segment=mid")).json()
    assert data["report"]["segment_filter"] == "mid"
    assert [s["segment"] for s in data["report"]["segments"]] == ["mid"]
    assert [c["segment"] for c in data["report"]["campaigns"]] == ["mid"]
    svg = await (await sam.get("/console/dashboard/charts/funnel.svg?segment=mid")).text()
    words = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert "mid" in words and "early" not in words
    html = await (await sam.get(PAGE + "?segment=mid")).text()
    assert '<option value="mid" selected>' in html
    assert 'href="/console/dashboard/charts/queue.svg?segment=mid"' in html
    for path in (PAGE, API, "/console/dashboard/charts/funnel.svg"):
        response = await sam.get(path + "?segment=%3Cvip%3E")
        assert response.status == 400, path
        assert "<vip>" not in await response.text() or path != PAGE
    assert (await sam.get("/console/dashboard/charts/pie.svg")).status == 404


async def test_an_empty_deployment_says_so_in_every_chart(console):
    maria = await console.as_role("manager")
    html = await (await maria.get(PAGE)).text()
    assert "No campaign messages yet" in html
    for text in ("No resolved campaign messages yet", "No allocation logged yet",
                 "No campaigns yet.", "No conversation is waiting for a person."):
        assert text in html


# --- the cache -------------------------------------------------------------------------------
async def test_results_are_kept_30_seconds_per_filter_then_regathered_behind_the_old(console):
    await seeded(console)
    dashboard = console.app[DASHBOARD]
    now = [REPORT_AT]
    dashboard.clock = lambda: now[0]
    first, second = await asyncio.gather(dashboard.results(None), dashboard.results(None))
    assert first is second                                  # one gathering for both
    assert (await dashboard.results("mid")) is not first    # another filter, its own entry
    await ConversationStore(console.redis, console.app[K.KEYS]).escalate("D-NL-002", "complain")
    now[0] += 29
    assert (await dashboard.results(None)) is first         # still fresh
    now[0] += 2
    assert (await dashboard.results(None)) is first         # stale: shown while regathered
    await dashboard.settled()
    later = await dashboard.results(None)
    assert later is not first and later.queue.waiting == first.queue.waiting + 1
    assert later.at == now[0] and not dashboard._pending


async def test_queue_health_from_the_agent_queue(console):
    made = await seeded(console)
    health = await queue_health(console.redis, console.app[K.KEYS], REPORT_AT)
    assert health.waiting == len(made.queue_ids) and health.claimed == len(made.claimed)
    assert health.by_reason()[0][:2] == (0, "vulnerability")          # urgent: priority 0
    assert all(item.waiting_seconds is not None for item in health.items)
