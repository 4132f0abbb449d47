"""Email one-click unsubscribe (RFC 8058) through the real gateway app on a real Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service.debtor_store import RedisDebtorStore
from service.gateway import create_app
from service.importer import import_file
from service.keys import Keys
from service.settings import Settings
from service.suppression import SuppressionStore
from service.unsubscribe import make_token, read_token

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo_portfolio.csv"
SECRET = "unsubscribe-test-key"


@pytest_asyncio.fixture
async def world(aiohttp_client, redis_url):
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": "unsub",
                                  "NUDGE_PSEUDONYM_KEY": SECRET})
    redis = aioredis.from_url(redis_url)
    store = RedisDebtorStore(redis, Keys("unsub"))
    await import_file(DEMO, store)
    client = await aiohttp_client(create_app(settings))
    yield client, SuppressionStore(redis, Keys("unsub"), SECRET), await store.get("D-EN-001")
    await redis.aclose()


def test_tokens_round_trip_and_forgeries_fail():
    token = make_token(SECRET, "D-EN-001")
    assert read_token(SECRET, token) == ("email", "D-EN-001")
    assert read_token("another-key", token) is None
    payload, _, signature = token.partition(".")
    other = make_token(SECRET, "D-EN-002").partition(".")[0]
    assert read_token(SECRET, f"{other}.{signature}") is None   # a signature moved to another debtor
    assert read_token(SECRET, payload) is None
    assert read_token(SECRET, "") is None


@pytest.mark.asyncio
async def test_get_and_head_change_nothing(world):
    client, suppressions, debtor = world
    path = f"/unsubscribe/{make_token(SECRET, debtor.id)}"
    for method in ("GET", "HEAD"):
        response = await client.request(method, path)
        assert response.status == 200
    assert "<form method=\"post\"" in await (await client.get(path)).text()
    assert not await suppressions.is_suppressed("email", debtor.email)


@pytest.mark.asyncio
async def test_one_click_post_unsubscribes_email_only(world):
    client, suppressions, debtor = world
    response = await client.post(f"/unsubscribe/{make_token(SECRET, debtor.id)}",
                                 data="List-Unsubscribe=One-Click",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 200
    assert await suppressions.reason("email", debtor.email) == "one_click"
    assert not await suppressions.is_suppressed("sms", debtor.phone)
    # Honoured on WhatsApp too (Twilio's opt-out handling does not cover it).
    assert await suppressions.is_suppressed("whatsapp", debtor.phone)
    again = await client.post(f"/unsubscribe/{make_token(SECRET, debtor.id)}",
                              data="List-Unsubscribe=One-Click")
    assert again.status == 200


@pytest.mark.asyncio
async def test_a_forged_link_is_refused_and_changes_nothing(world):
    client, suppressions, debtor = world
    forged = make_token("not-our-key", debtor.id)
    assert (await client.post(f"/unsubscribe/{forged}", data="List-Unsubscribe=One-Click")).status == 404
    assert (await client.get(f"/unsubscribe/{forged}")).status == 404
    assert not await suppressions.is_suppressed("email", debtor.email)
