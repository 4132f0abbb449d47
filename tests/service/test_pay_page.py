"""The payment page (service/pay_page.py) through the real gateway app on a real Redis."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import replace
from datetime import date
from http.cookies import SimpleCookie
from pathlib import Path

import itsdangerous.timed
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import yaml

from bot.core.arrangement_policy import load_policy_book
from service import pay_page
from service.arrangements import ArrangementBook
from service.business_events import BusinessEvents
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.gateway import create_app
from service.identity import IdentityChecks
from service.importer import import_file
from service.keys import Keys
from service.pay_links import PayLinks
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo_portfolio.csv"
SECRET = "pay-page-test-secret"
PREFIX = "paypage"
KEYS = Keys(PREFIX)
EN = "D-EN-001"      # Oliver, Northwind Mobile (early): GBP 248.50, born 24-09-2001, M1 1AE
NL = "D-NL-001"      # Polderlicht Energie: EUR 612.35
DE = "D-DE-001"      # Elbtal Kredit: EUR 1375.00
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def policies_with(tmp_path: Path, **payment_page: object) -> Path:
    """A copy of the real policies with the arrangement rules these tests count on pinned
    (the product's own tuning of them may change): both the date of birth and the postcode
    asked everywhere, Northwind Mobile's short plans, and the payment page's settings."""
    directory = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", directory, dirs_exist_ok=True)
    path = directory / "arrangements.yml"
    raw = yaml.safe_load(path.read_text())
    defaults = raw["defaults"]
    defaults["verification"].update(methods=["date_of_birth", "postcode"], max_attempts=3)
    defaults["payment_page"].update(
        url_template="https://pay.nudge.example/p/{reference}?amount={amount}&currency={currency}",
        link_valid_days=14)
    defaults["payment_page"].update(payment_page)
    for portfolio in raw.get("portfolios", {}).values():
        portfolio.pop("verification", None)
        portfolio.pop("payment_page", None)
        for segment in (portfolio.get("segments") or {}).values():
            segment.pop("verification", None)
            segment.pop("payment_page", None)
    raw["portfolios"]["Northwind Mobile"] = {
        "plans": {"max_installments": 6, "min_instalment": "20.00"},
        "negotiation": {"ladder": [1, 2, 4, 6]},
        "segments": {"early": {"plans": {"max_installments": 3},
                               "negotiation": {"ladder": [1, 2, 3]}}}}
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return directory


def settings_for(redis_url: str, tmp_path: Path, *, secure: bool = False, secret: str = SECRET,
                 policies: Path | None = None) -> Settings:
    policies = policies or policies_with(tmp_path)
    return Settings.from_env({
        "REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": PREFIX, "NUDGE_PAY_LINK_SECRET": secret,
        "NUDGE_SECURE_COOKIES": "true" if secure else "false",
        "NUDGE_STATE_DIR": str(tmp_path / "state"),
        "NUDGE_POLICIES_DIR": str(policies),
        "NUDGE_LOG_LEVEL": "INFO"})


class World:
    def __init__(self, client, redis, settings: Settings):
        self.client = client
        self.redis = redis
        self.settings = settings
        self.links = PayLinks(SECRET, settings.public_url)
        self.store = RedisDebtorStore(redis, KEYS)
        self.events = BusinessEvents(redis, KEYS)
        self.identity = IdentityChecks(redis, KEYS)
        self.book = ArrangementBook(redis, KEYS)
        self.conversations = ConversationStore(redis, KEYS)
        self.policies = load_policy_book(settings.policies_dir / "arrangements.yml")

    def path(self, debtor_id: str) -> str:
        return f"/pay/{self.links.token(debtor_id)}"

    async def event_types(self, debtor_id: str | None = None) -> list[str]:
        return [e["type"] for _, e in await self.events.read(count=1000)
                if debtor_id is None or e["debtor_id"] == debtor_id]

    async def events_of(self, kind: str) -> list[dict]:
        return [e for _, e in await self.events.read(count=1000) if e["type"] == kind]

    async def transcript_names(self, debtor_id: str) -> list[str]:
        return [e.get("name") for _, e in await self.conversations.transcript(debtor_id)]

    async def open(self, path: str):
        response = await self.client.get(path)
        return response, await response.text()

    async def post(self, path: str, data: dict, *, csrf: str | None):
        if csrf is not None:
            data = {"csrf": csrf, **data}
        response = await self.client.post(path, data=data, allow_redirects=False)
        return response, await response.text()

    async def verify(self, debtor_id: str, dob: tuple[str, str, str], postcode: str) -> str:
        """Answer both questions; the body of the page after the redirect."""
        path = self.path(debtor_id)
        _, page = await self.open(path)
        day, month, year = dob
        response, page = await self.post(f"{path}/verify", {
            "method": "date_of_birth", "day": day, "month": month, "year": year},
            csrf=csrf_of(page))
        assert response.status == 200 and 'value="postcode"' in page
        response, _ = await self.post(f"{path}/verify", {"method": "postcode", "answer": postcode},
                                      csrf=csrf_of(page))
        assert response.status == 303 and response.headers["Location"] == path
        final, page = await self.open(path)
        assert final.status == 200
        return page


def csrf_of(page: str) -> str:
    match = CSRF_RE.search(page)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def cookie_of(world: World) -> str | None:
    for cookie in world.client.session.cookie_jar:
        if cookie.key == pay_page.COOKIE:
            return cookie.value
    return None


async def _world(aiohttp_client, redis_url, settings: Settings) -> World:
    redis = aioredis.from_url(redis_url)
    await import_file(DEMO, RedisDebtorStore(redis, KEYS))
    client = await aiohttp_client(create_app(settings))
    return World(client, redis, settings)


@pytest_asyncio.fixture
async def world(aiohttp_client, redis_url, tmp_path):
    w = await _world(aiohttp_client, redis_url, settings_for(redis_url, tmp_path))
    yield w
    await w.redis.aclose()


def assert_secure_headers(response) -> None:
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


def old_token(secret: str, debtor_id: str, days_ago: float) -> str:
    """A genuine token made `days_ago` days ago (itsdangerous reads the clock when signing)."""
    class Then:
        @staticmethod
        def time() -> float:
            return time.time() - days_ago * 86400
    real = itsdangerous.timed.time
    itsdangerous.timed.time = Then  # type: ignore[assignment]
    try:
        return PayLinks(secret, "http://x").token(debtor_id)
    finally:
        itsdangerous.timed.time = real


# --- links ------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_forged_or_damaged_link_is_not_valid(world):
    forged = PayLinks("somebody-elses-secret", "http://x").token(EN)
    genuine = world.links.token(EN)
    for token in (forged, genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB"), "nonsense"):
        response, page = await world.open(f"/pay/{token}")
        assert response.status == 404
        assert "This link is not valid" in page
        assert_secure_headers(response)
    assert await world.event_types() == []


@pytest.mark.asyncio
async def test_an_expired_link_says_so_and_how_to_get_a_new_one(world):
    # Northwind Mobile links are valid for the defaults' 14 days.
    response, page = await world.open(f"/pay/{old_token(SECRET, EN, 15)}")
    assert response.status == 410
    assert "This link has expired" in page and "Reply to our message" in page
    assert_secure_headers(response)
    # Older than any portfolio allows (the debtor is not even looked up): still "expired".
    response, page = await world.open(f"/pay/{old_token(SECRET, EN, 120)}")
    assert response.status == 410
    # The Dutch debtor hears it in Dutch.
    response, page = await world.open(f"/pay/{old_token(SECRET, NL, 15)}")
    assert response.status == 410 and "Deze link is verlopen" in page
    # 13 days old still opens.
    response, page = await world.open(f"/pay/{old_token(SECRET, EN, 13)}")
    assert response.status == 200 and 'name="csrf"' in page
    assert await world.event_types() == ["pay_link_opened"]


@pytest.mark.asyncio
async def test_link_valid_days_comes_from_the_portfolio(aiohttp_client, redis_url, tmp_path):
    policies = policies_with(tmp_path, link_valid_days=2)
    w = await _world(aiohttp_client, redis_url, settings_for(redis_url, tmp_path, policies=policies))
    try:
        assert (await w.open(f"/pay/{old_token(SECRET, EN, 3)}"))[0].status == 410
        assert (await w.open(f"/pay/{old_token(SECRET, EN, 1)}"))[0].status == 200
    finally:
        await w.redis.aclose()


@pytest.mark.asyncio
async def test_without_a_secret_the_page_is_unavailable(aiohttp_client, redis_url, tmp_path):
    settings = settings_for(redis_url, tmp_path, secret="")
    client = await aiohttp_client(create_app(settings))
    response = await client.get(f"/pay/{PayLinks(SECRET, 'http://x').token(EN)}")
    assert response.status == 503
    assert (await client.get("/healthz")).status == 200


# --- before verification ----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_before_verification_nothing_about_the_debt_is_shown(world):
    debtor = await world.store.get(EN)
    response, page = await world.open(world.path(EN))
    assert response.status == 200
    assert_secure_headers(response)
    assert "<script" not in page
    for secret_detail in (debtor.first_name, debtor.last_name, debtor.creditor, debtor.reference,
                          "248", debtor.postcode, "Northwind"):
        assert secret_detail not in page
    assert "What is your date of birth?" in page and "Question 1 of 2" in page
    opened = await world.events_of("pay_link_opened")
    assert len(opened) == 1 and opened[0]["creditor"] == "Northwind Mobile"
    assert opened[0]["data"]["locked"] is False and opened[0]["data"]["link_issued_at"]
    assert "pay_link_opened" in await world.transcript_names(EN)
    # A link scanner's HEAD is not an opening.
    assert (await world.client.head(world.path(EN))).status == 405
    assert len(await world.events_of("pay_link_opened")) == 1


@pytest.mark.asyncio
async def test_the_form_speaks_the_debtors_language(world):
    _, page = await world.open(world.path(NL))
    assert "Wat is uw geboortedatum?" in page and 'lang="nl"' in page
    _, page = await world.open(world.path(DE))
    assert "Wie lautet Ihr Geburtsdatum?" in page and 'lang="de"' in page


@pytest.mark.asyncio
async def test_session_cookie_flags(world, aiohttp_client, redis_url, tmp_path):
    response, _ = await world.open(world.path(EN))
    cookie = SimpleCookie(response.headers["Set-Cookie"])[pay_page.COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/pay"
    assert not cookie["secure"]  # NUDGE_SECURE_COOKIES=false (the local http sandbox)
    secure = await aiohttp_client(create_app(settings_for(redis_url, tmp_path, secure=True)))
    response = await secure.get(world.path(EN))
    cookie = SimpleCookie(response.headers["Set-Cookie"])[pay_page.COOKIE]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
    # The cookie holds a signed random id, nothing about the debtor.
    assert EN not in cookie.value
    # A tampered cookie is ignored: a fresh session starts.
    world.client.session.cookie_jar.clear()
    world.client.session.cookie_jar.update_cookies({pay_page.COOKIE: "forged.value"})
    response, _ = await world.open(world.path(EN))
    assert pay_page.COOKIE in SimpleCookie(response.headers["Set-Cookie"])


# --- verification -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_wrong_answers_count_with_the_chat_and_lock_both(world):
    debtor = await world.store.get(EN)
    policy = world.policies.for_debtor(debtor.creditor, debtor.segment).verification
    # One wrong answer in the chat first: the page has only two tries left, not three.
    chat = await world.identity.answer(debtor, "chat", policy, "01-01-1990", time.time())
    assert chat.outcome == "wrong"
    path = world.path(EN)
    _, page = await world.open(path)
    response, page = await world.post(f"{path}/verify", {
        "method": "date_of_birth", "day": "1", "month": "1", "year": "1990"}, csrf=csrf_of(page))
    assert response.status == 422
    assert "That does not match our records. You have 1 more try." in page
    # A blank or impossible date is a typo, not a guess: it costs nothing.
    response, page = await world.post(f"{path}/verify", {
        "method": "date_of_birth", "day": "31", "month": "2", "year": "1990"}, csrf=csrf_of(page))
    assert "Please enter a real date" in page
    response, page = await world.post(f"{path}/verify", {
        "method": "date_of_birth", "day": "", "month": "", "year": ""}, csrf=csrf_of(page))
    assert "Please fill in your answer." in page
    assert (await world.identity.next_question(EN, "chat", policy, time.time())).attempts_left == 1
    response, page = await world.post(f"{path}/verify", {
        "method": "date_of_birth", "day": "2", "month": "2", "year": "1992"}, csrf=csrf_of(page))
    assert response.status == 200 and "This page is locked" in page
    assert "A colleague will contact you" in page
    assert_secure_headers(response)
    # The chat is locked too, and a person has the conversation.
    assert await world.identity.locked_until(EN, time.time())
    assert (await world.identity.next_question(EN, "chat", policy, time.time())).outcome == "locked"
    state = await world.conversations.get(EN)
    assert state.owner != "bot" and state.reason == "verification"
    locked = await world.events_of("verification_locked")
    assert len(locked) == 1 and locked[0]["data"]["where"] == "payment_page"
    assert locked[0]["creditor"] == "Northwind Mobile"
    assert "verification_locked" in await world.transcript_names(EN)
    # Even the right answer does nothing now, and reopening shows the lock.
    response, page = await world.open(path)
    assert "This page is locked" in page and 'name="csrf"' not in page
    assert await world.events_of("pay_link_verified") == []


@pytest.mark.asyncio
async def test_a_lock_from_the_chat_locks_the_page(world):
    debtor = await world.store.get(EN)
    policy = world.policies.for_debtor(debtor.creditor, debtor.segment).verification
    for _ in range(policy.max_attempts):
        await world.identity.answer(debtor, "chat", policy, "nope", time.time())
    _, page = await world.open(world.path(EN))
    assert "This page is locked" in page
    assert (await world.events_of("pay_link_opened"))[0]["data"]["locked"] is True


@pytest.mark.asyncio
async def test_csrf_token_is_required_and_bound_to_the_session(world):
    path = world.path(EN)
    _, page = await world.open(path)
    answer = {"method": "date_of_birth", "day": "24", "month": "9", "year": "2001"}
    response, page403 = await world.post(f"{path}/verify", answer, csrf=None)
    assert response.status == 403 and "This form has expired" in page403
    assert_secure_headers(response)
    response, _ = await world.post(f"{path}/verify", answer, csrf="x" * 43)
    assert response.status == 403
    # A token made for another session is no good either.
    other = pay_page.csrf_token(SECRET, "another-session")
    response, _ = await world.post(f"{path}/verify", answer, csrf=other)
    assert response.status == 403
    for action in ("choose", "go"):
        response, _ = await world.post(f"{path}/{action}", {"option": "full"}, csrf=None)
        assert response.status == 403
    # Nothing was answered, nothing counted.
    question = await world.identity.next_question(
        EN, "chat", world.policies.for_debtor("Northwind Mobile", "early").verification,
        time.time())
    assert question.attempts_left == 3 and question.step == 1
    # Without any session cookie a POST is refused as well.
    world.client.session.cookie_jar.clear()
    response, _ = await world.post(f"{path}/verify", answer, csrf=csrf_of(page))
    assert response.status == 403


@pytest.mark.asyncio
async def test_verification_renews_the_session(world):
    path = world.path(EN)
    _, page = await world.open(path)
    before = cookie_of(world)
    page = await world.verify(EN, ("24", "09", "2001"), "m1 1ae")
    # Two unverified visits (one above, one in verify()) were openings; the verified view after
    # the redirect is not another one.
    assert len(await world.events_of("pay_link_opened")) == 2
    after = cookie_of(world)
    assert before and after and before != after
    assert "£248.50" in page
    # The session id from before verification is worth nothing now.
    world.client.session.cookie_jar.clear()
    world.client.session.cookie_jar.update_cookies({pay_page.COOKIE: before})
    _, page = await world.open(path)
    assert "What is your date of birth?" in page and "£248.50" not in page
    verified = await world.events_of("pay_link_verified")
    assert len(verified) == 1 and verified[0]["data"]["methods"] == ["date_of_birth", "postcode"]
    assert "pay_link_verified" in await world.transcript_names(EN)
    # The chat is not verified by the page: each door verifies for itself.
    assert not await world.identity.is_verified(EN, "chat", time.time())
    # The form shown again to the old session was an opening.
    assert len(await world.events_of("pay_link_opened")) == 3


@pytest.mark.asyncio
async def test_unverified_sessions_cannot_choose_or_pay(world):
    path = world.path(EN)
    _, page = await world.open(path)
    for action in ("choose", "go"):
        response, _ = await world.post(f"{path}/{action}", {"option": "full"}, csrf=csrf_of(page))
        assert response.status == 303 and response.headers["Location"] == path
    assert await world.event_types() == ["pay_link_opened"]


@pytest.mark.asyncio
async def test_the_portfolios_methods_are_asked(aiohttp_client, redis_url, tmp_path):
    policies = policies_with(tmp_path)
    path = policies / "arrangements.yml"
    raw = yaml.safe_load(path.read_text())
    raw["defaults"]["verification"]["methods"] = ["reference"]
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    w = await _world(aiohttp_client, redis_url, settings_for(redis_url, tmp_path, policies=policies))
    try:
        link = w.path(EN)
        _, page = await w.open(link)
        assert "What is your reference number?" in page and "Question 1 of" not in page
        response, _ = await w.post(f"{link}/verify", {"method": "reference",
                                                      "answer": "nwm 2026 62403"},
                                   csrf=csrf_of(page))
        assert response.status == 303
        _, page = await w.open(link)
        assert "£248.50" in page
    finally:
        await w.redis.aclose()


@pytest.mark.asyncio
async def test_a_stale_form_costs_no_attempt(world):
    path = world.path(EN)
    _, page = await world.open(path)
    # The form answers the postcode, but the date of birth is asked now (another tab).
    response, page = await world.post(f"{path}/verify", {"method": "postcode", "answer": "X"},
                                      csrf=csrf_of(page))
    assert response.status == 200 and "What is your date of birth?" in page
    assert "does not match" not in page


# --- the verified view ------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_options_then_a_chosen_plan_becomes_the_schedule(world):
    page = await world.verify(EN, ("24", "9", "2001"), "M1 1AE")
    assert "£248.50" in page and "Northwind Mobile" in page and "NWM-2026-62403" in page
    # Northwind Mobile, early segment: ladder [1, 2, 3]; a minimum of £20 allows both plans.
    assert "2 × £124.25" in page and "3 × £82.83" in page and "the last payment is £82.84" in page
    assert "monthly, first payment on" in page and "Pay £248.50 now" in page
    assert page.count('type="radio"') == 2
    path = world.path(EN)
    response, _ = await world.post(f"{path}/choose", {"option": "3-monthly"},
                                       csrf=csrf_of(page))
    assert response.status == 303 and response.headers["Location"] == path
    arrangement = await world.book.current(EN)
    assert arrangement.state == "accepted" and arrangement.kind == "plan"
    assert [i.amount_minor for i in arrangement.instalments] == [8283, 8283, 8284]
    chosen = await world.events_of("pay_option_chosen")
    assert len(chosen) == 1 and chosen[0]["creditor"] == "Northwind Mobile"
    assert {k: chosen[0]["data"][k] for k in ("option", "installments", "instalment",
                                              "last_instalment", "total", "frequency")} == {
        "option": "plan", "installments": 3, "instalment": "82.83", "last_instalment": "82.84",
        "total": "248.50", "frequency": "monthly"}
    types = await world.event_types(EN)
    assert types.index("pay_option_chosen") < types.index("arrangement_proposed") \
        < types.index("arrangement_accepted")
    assert "pay_option_chosen" in await world.transcript_names(EN)
    # the worker is asked to send the written confirmation with the schedule
    job = await world.redis.exists(f"arq:job:confirm:{arrangement.id}")
    assert job, "no arrangement_confirmation job queued"
    _, page = await world.open(path)
    assert "Your payment plan" in page and page.count("status-due") == 3
    assert "Pay £82.83" in page and 'type="radio"' not in page
    first = arrangement.instalments[0].due
    assert pay_page.format_day(first, "en", "medium") in page
    # A second choice (a reload, another tab) changes nothing.
    response, _ = await world.post(f"{path}/choose", {"option": "2-monthly"}, csrf=csrf_of(page))
    assert response.status == 303
    assert (await world.book.current(EN)).id == arrangement.id
    assert len(await world.events_of("pay_option_chosen")) == 1


@pytest.mark.asyncio
async def test_an_unknown_option_is_refused(world):
    page = await world.verify(EN, ("24", "9", "2001"), "M1 1AE")
    response, page = await world.post(f"{world.path(EN)}/choose", {"option": "60-weekly"},
                                      csrf=csrf_of(page))
    assert response.status == 422 and "Please choose one of the plans." in page
    assert await world.book.current(EN) is None
    assert await world.events_of("pay_option_chosen") == []


@pytest.mark.asyncio
async def test_schedule_shows_paid_and_missed_instalments(world):
    debtor = await world.store.get(EN)
    today = pay_page.local_today(debtor, time.time())
    offer_dates = [date.fromordinal(today.toordinal() - 40), date.fromordinal(today.toordinal() - 10),
                   date.fromordinal(today.toordinal() + 20)]
    from bot.core.negotiation import Offer
    offer = Offer("plan", 24850, (8283, 8283, 8284), tuple(offer_dates), "monthly")
    await world.book.propose(debtor, offer, offer_dates[0], grace_days=30, reminder_days_before=2)
    await world.book.accept(debtor, offer_dates[0])
    await world.book.apply_payment(debtor, "pay-1", 8283, offer_dates[0], source="test")
    page = await world.verify(EN, ("24", "9", "2001"), "M1 1AE")
    assert "status-paid" in page and "status-missed" in page and "status-due" in page
    assert "£165.67" in page   # the balance after the payment
    assert "Pay £82.83" in page and "Payment number 2" in page


@pytest.mark.asyncio
async def test_a_promise_shows_as_its_schedule(world):
    debtor = await world.store.get(EN)
    today = pay_page.local_today(debtor, time.time())
    when = date.fromordinal(today.toordinal() + 5)
    await world.book.make_promise(debtor, debtor.balance_minor, when, today,
                                  grace_days=3, reminder_days_before=2)
    page = await world.verify(EN, ("24", "9", "2001"), "M1 1AE")
    assert "Your promise to pay" in page and "Pay £248.50" in page


@pytest.mark.asyncio
async def test_money_and_dates_in_the_debtors_locale(world):
    page = await world.verify(NL, ("10", "3", "1991"), "1012ab")
    assert "€ 612,35" in page.replace("\xa0", " ") and "Hoe wilt u betalen?" in page
    assert "per maand, eerste betaling op" in page
    world.client.session.cookie_jar.clear()
    page = await world.verify(DE, ("16", "7", "1998"), "10115")
    assert "1.375,00 €" in page.replace("\xa0", " ") and "Wie möchten Sie bezahlen?" in page
    assert "monatlich, erste Zahlung am" in page


# --- paying -----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_pay_redirects_to_the_creditors_page(world):
    page = await world.verify(EN, ("24", "9", "2001"), "M1 1AE")
    path = world.path(EN)
    response, _ = await world.post(f"{path}/go", {"option": "full"}, csrf=csrf_of(page))
    assert response.status == 303
    assert response.headers["Location"] == \
        "https://pay.nudge.example/p/NWM-2026-62403?amount=248.50&currency=GBP"
    assert_secure_headers(response)
    clicked = await world.events_of("pay_clicked")
    assert clicked[-1]["data"] == {"option": "full", "amount": "248.50", "currency": "GBP",
                                   "arrangement_id": None}
    assert clicked[-1]["creditor"] == "Northwind Mobile"
    # With a plan: the next instalment.
    await world.post(f"{path}/choose", {"option": "2-monthly"}, csrf=csrf_of(page))
    _, page = await world.open(path)
    response, _ = await world.post(f"{path}/go", {"option": "next"}, csrf=csrf_of(page))
    assert response.headers["Location"].endswith("?amount=124.25&currency=GBP")
    clicked = await world.events_of("pay_clicked")
    assert clicked[-1]["data"]["option"] == "next" and clicked[-1]["data"]["amount"] == "124.25"
    assert clicked[-1]["data"]["arrangement_id"] == (await world.book.current(EN)).id
    assert "pay_clicked" in await world.transcript_names(EN)
    # The page's CSP lets its forms lead to the creditor's site, nowhere else.
    response, _ = await world.open(path)
    assert "form-action 'self' https://pay.nudge.example;" in \
        response.headers["Content-Security-Policy"]
    # An unknown option goes nowhere.
    response, _ = await world.post(f"{path}/go", {"option": "9999"}, csrf=csrf_of(page))
    assert response.status == 303 and response.headers["Location"] == path


@pytest.mark.asyncio
async def test_every_value_in_the_payment_url_is_encoded(aiohttp_client, redis_url, tmp_path):
    policies = policies_with(
        tmp_path, url_template="https://pay.example/{debtor_id}/{reference}?a={amount}&c={currency}")
    w = await _world(aiohttp_client, redis_url, settings_for(redis_url, tmp_path, policies=policies))
    try:
        debtor = await w.store.get("D-EN-002")   # Hollis & Vane: the defaults' policy
        await w.store.upsert(replace(debtor, reference="HV/12&x=1 ?"))
        page = await w.verify("D-EN-002", ("3", "7", "1979"), "LS1 4DY")
        response, _ = await w.post(f"{w.path('D-EN-002')}/go", {"option": "full"},
                                   csrf=csrf_of(page))
        assert response.headers["Location"] == \
            "https://pay.example/D-EN-002/HV%2F12%26x%3D1%20%3F?a=35.00&c=GBP"
    finally:
        await w.redis.aclose()


@pytest.mark.asyncio
async def test_the_token_and_answers_are_never_logged(world, capsys, caplog):
    caplog.set_level("DEBUG")
    token = world.links.token(EN)
    page = await world.verify(EN, ("24", "9", "2001"), "M1 1AE")
    await world.post(f"/pay/{token}/go", {"option": "full"}, csrf=csrf_of(page))
    captured = capsys.readouterr()
    # The test server writes an access log; the gateway runs with access_log=None.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    logged = captured.out + captured.err + ours
    assert "pay_page.pay_link_verified" in logged or "pay_link_verified" in logged
    for secret in (token, "24-09-2001", "M1 1AE", csrf_of(page)):
        assert secret not in logged


@pytest.mark.asyncio
async def test_stylesheet_is_served(world):
    response = await world.client.get("/pay-assets/pay.css")
    assert response.status == 200 and response.content_type == "text/css"
    assert "body" in await response.text()
