"""A person on a phone uses the payment page from the link to the creditor's payment site.

A real gateway (service/gateway.py) on the test Redis with the demo portfolio, a stand-in for
the creditor's payment site on another port, and Debian's chromium driven by Playwright.
Screenshots go to test-artifacts/pay_page/.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import redis.asyncio as aioredis
import yaml
from aiohttp import web

from service.debtor_store import RedisDebtorStore
from service.gateway import create_app
from service.importer import import_file
from service.keys import Keys
from service.pay_links import PayLinks
from service.settings import Settings
from service.stack import free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo_portfolio.csv"
PREFIX = "browserpay"
SECRET = "browser-pay-link-secret"
DEBTOR = "D-EN-001"          # Oliver, Northwind Mobile (early): GBP 248.50
PHONE = {"width": 390, "height": 844}


def fake_payment_site() -> web.Application:
    """The creditor's payment page: it shows what it was asked to collect."""
    async def pay(request: web.Request) -> web.Response:
        query = request.query
        return web.Response(content_type="text/html", text=(
            "<!doctype html><title>Creditor payment</title><h1>Creditor payment</h1>"
            f"<p id='what'>{query.get('reference', '')} {query.get('amount', '')} "
            f"{query.get('currency', '')}</p>"))
    app = web.Application()
    app.router.add_get("/checkout", pay)
    return app


def policies_paying_at(directory: Path, url_template: str) -> Path:
    """The real policies, paying at `url_template`, with what this test counts on pinned: the
    date of birth and the postcode asked, Northwind Mobile's short plans for early arrears."""
    shutil.copytree(ROOT / "policies", directory)
    path = directory / "arrangements.yml"
    raw = yaml.safe_load(path.read_text())
    raw["defaults"]["verification"].update(methods=["date_of_birth", "postcode"], max_attempts=3)
    raw["defaults"]["payment_page"].update(url_template=url_template, link_valid_days=14)
    for portfolio in raw.get("portfolios", {}).values():
        portfolio.pop("verification", None)
        portfolio.pop("payment_page", None)
    raw["portfolios"]["Northwind Mobile"] = {
        "plans": {"max_installments": 3, "min_instalment": "20.00"},
        "negotiation": {"ladder": [1, 2, 3]}}
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return directory


async def _seed(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        await import_file(DEMO, RedisDebtorStore(client, Keys(PREFIX)))
    finally:
        await client.aclose()


def business_events(redis_url: str) -> list[dict]:
    client = redis.Redis.from_url(redis_url)
    try:
        rows = client.xrange(Keys(PREFIX).business_events)
    finally:
        client.close()
    return [json.loads(fields[b"data"]) for _, fields in rows]


@pytest.fixture
def site(servers, redis_url, tmp_path):
    """(gateway URL, payment-site URL): both served, the debtors imported."""
    servers.run(_seed(redis_url))  # (playwright runs a loop in this thread)
    pay_site = servers.serve(fake_payment_site())
    policies = policies_paying_at(
        tmp_path / "policies",
        pay_site + "/checkout?reference={reference}&amount={amount}&currency={currency}")
    port = free_port()
    settings = Settings.from_env({
        "REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": PREFIX, "NUDGE_PAY_LINK_SECRET": SECRET,
        "NUDGE_SECURE_COOKIES": "false", "NUDGE_GATEWAY_PORT": str(port),
        "NUDGE_PUBLIC_URL": f"http://127.0.0.1:{port}", "NUDGE_POLICIES_DIR": str(policies),
        "NUDGE_STATE_DIR": str(tmp_path / "state"), "NUDGE_SIMULATOR": "0",
        "NUDGE_LOG_LEVEL": "WARNING"})
    gateway = servers.serve(create_app(settings), port)
    return gateway, pay_site


def test_a_person_verifies_chooses_a_plan_and_pays(chromium, site, artifacts, redis_url):
    gateway, pay_site = site
    shots = artifacts / "pay_page"
    shots.mkdir(exist_ok=True)
    link = PayLinks(SECRET, gateway).url(DEBTOR)
    context = chromium.new_context(viewport=PHONE, locale="en-GB")
    page = context.new_page()
    problems: list[str] = []
    # Content-Security-Policy violations, script errors, requests the browser refused. (Not
    # "Failed to load resource": the 422 of a wrong answer and a 404 for /favicon.ico.)
    page.on("console", lambda m: problems.append(m.text)
            if m.type in ("error", "warning") and "Failed to load resource" not in m.text
            else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"{r.url}: {r.failure}"))
    try:
        response = page.goto(link)
        assert response.status == 200
        assert response.headers["x-frame-options"] == "DENY"
        assert page.get_by_role("heading", name="First, let us check it is you").is_visible()
        assert "248" not in page.content() and "Oliver" not in page.content()
        # The stylesheet loaded (the CSP allows it and nothing else).
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == \
            "rgb(243, 245, 248)"
        page.screenshot(path=str(shots / "01_verify.png"), full_page=True)

        # A wrong date of birth first...
        page.get_by_label("Day").fill("1")
        page.get_by_label("Month").fill("2")
        page.get_by_label("Year").fill("2000")
        page.get_by_role("button", name="Continue").click()
        alert = page.get_by_role("alert")
        assert "That does not match our records. You have 2 more tries." in alert.inner_text()
        page.screenshot(path=str(shots / "02_wrong_answer.png"), full_page=True)

        # ...then the right one, and the postcode.
        page.get_by_label("Day").fill("24")
        page.get_by_label("Month").fill("9")
        page.get_by_label("Year").fill("2001")
        page.get_by_role("button", name="Continue").click()
        page.get_by_label("What is your postcode?").fill("m1 1ae")
        page.get_by_role("button", name="Continue").click()

        # The balance and the options.
        assert page.locator("#balance").inner_text() == "£248.50"
        assert page.locator("#creditor").inner_text() == "Northwind Mobile"
        assert page.locator("#reference").inner_text() == "NWM-2026-62403"
        assert page.get_by_role("button", name="Pay £248.50 now").is_visible()
        radios = page.get_by_role("radio")
        assert radios.count() == 2
        assert page.get_by_text("2 × £124.25").is_visible()
        assert page.get_by_text("3 × £82.83").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(shots / "03_options.png"), full_page=True)

        # Three monthly payments.
        page.get_by_text("3 × £82.83").click()
        page.get_by_role("button", name="Choose this plan").click()
        assert page.get_by_role("heading", name="Your payment plan").is_visible()
        rows = page.locator("table.schedule tbody tr")
        assert rows.count() == 3
        assert [rows.nth(i).locator("td").nth(2).inner_text() for i in range(3)] == \
            ["£82.83", "£82.83", "£82.84"]
        assert page.locator(".status-due").count() == 3
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(shots / "04_schedule.png"), full_page=True)

        # Pay the first instalment: the creditor's payment site opens with the amount.
        with page.expect_navigation(url=f"{pay_site}/checkout**"):
            page.get_by_role("button", name="Pay £82.83").click()
        landed = urlsplit(page.url)
        assert f"{landed.scheme}://{landed.netloc}" == pay_site
        assert parse_qs(landed.query) == {"reference": ["NWM-2026-62403"], "amount": ["82.83"],
                                          "currency": ["GBP"]}
        assert page.locator("#what").inner_text() == "NWM-2026-62403 82.83 GBP"
        page.screenshot(path=str(shots / "05_payment_site.png"), full_page=True)
    finally:
        context.close()

    # No Content-Security-Policy violations or script errors along the way.
    assert not problems, problems
    events = [e for e in business_events(redis_url) if e["debtor_id"] == DEBTOR]
    types = [e["type"] for e in events]
    for expected in ("pay_link_opened", "pay_link_verified", "pay_option_chosen",
                     "arrangement_proposed", "arrangement_accepted", "pay_clicked"):
        assert expected in types, types
    assert types.index("pay_link_verified") < types.index("pay_option_chosen") \
        < types.index("pay_clicked")
    clicked = next(e for e in events if e["type"] == "pay_clicked")
    assert clicked["data"]["amount"] == "82.83" and clicked["data"]["option"] == "next"
    assert all(e["creditor"] == "Northwind Mobile" for e in events)


def test_the_page_in_dutch_on_a_phone(chromium, site, artifacts):
    gateway, _ = site
    shots = artifacts / "pay_page"
    shots.mkdir(exist_ok=True)
    context = chromium.new_context(viewport=PHONE, locale="nl-NL")
    page = context.new_page()
    try:
        page.goto(PayLinks(SECRET, gateway).url("D-NL-001"))
        page.get_by_label("Dag").fill("10")
        page.get_by_label("Maand").fill("3")
        page.get_by_label("Jaar").fill("1991")
        page.get_by_role("button", name="Verder").click()
        page.get_by_label("Wat is uw postcode?").fill("1012ab")
        page.get_by_role("button", name="Verder").click()
        assert page.locator("#balance").inner_text().replace("\xa0", " ") == "€ 612,35"
        assert page.get_by_role("heading", name="Hoe wilt u betalen?").is_visible()
        page.screenshot(path=str(shots / "06_options_nl.png"), full_page=True)
        response = page.goto(PayLinks("forged", gateway).url("D-NL-001"))
        assert response.status == 404
        page.screenshot(path=str(shots / "07_invalid_link.png"), full_page=True)
    finally:
        context.close()
